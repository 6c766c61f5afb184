"""A node's record of the protocol steps it has answered, kept on its own device outside Flower's context.

A client session travels between messages in the node's ``context.state``. Flower's deployment engine runs one
message at a time per node, but it saves that state only after the reply has gone out, and a save that fails is
lost silently; its simulation engine runs messages for one node concurrently from the same state. Either way a
ClientApp could start from a stale session: one still waiting for the unmasking request it has in fact
answered. A server that sent the request again, with another survivor set, would then receive both kinds of
share of some client (or, in the active variant, a second consistency signature).

So each answer is recorded here first, under the node's exclusive lock (:func:`lock_node_files`), and a second
answer to the same step of the same configuration is refused. The file lives in ``fedsecure-state-dir``
(default: a directory of the user's own under the system's temporary directory), mode 0600.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ..._errors import PeerFault, PeerProtocolError
from ..._io import atomic_write_private

__all__ = ["AnswerLedger", "answer_ledger_path", "private_directory"]

#: The most recent answers kept: round ids keep growing, and each round adds at most a handful.
MAX_ANSWERS = 100_000


def answer_ledger_path(context: Any) -> Path:
    """Where this node keeps its answers: ``fedsecure-state-dir``, one file per node."""
    configured = context.node_config.get("fedsecure-state-dir")
    directory = Path(str(configured)) if configured else Path(tempfile.gettempdir()) / f"fedsecure-{os.getuid()}"
    return directory / f"answers-node-{int(getattr(context, 'node_id', 0))}.json"


def private_directory(directory: Path) -> None:
    """Create ``directory`` (0700) if needed, and refuse one that is a symlink, another user's, or open to others.

    The default lies under the shared temporary directory, where another local user could have made it first
    to delete the ledger (reopening every step) or hold its lock.
    """
    import stat

    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(directory)
    except OSError as error:
        raise PeerProtocolError(PeerFault.REFUSED_BY_POLICY, peer="server",  # type: ignore[arg-type]
                                detail=f"the node's state directory {directory}: {type(error).__name__}") from None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PeerProtocolError(PeerFault.REFUSED_BY_POLICY, peer="server",  # type: ignore[arg-type]
                                detail=f"the node's state directory {directory} is not a private directory of this "
                                "user (a symlink, another owner, or open to others): set fedsecure-state-dir")


class AnswerLedger:
    """The (configuration digest, client state) pairs a node has answered; check, then record, under one lock."""

    def __init__(self, path: Path) -> None:
        self._path = path

    @property
    def path(self) -> Path:
        return self._path

    def _load(self) -> list[str]:
        try:
            data = json.loads(self._path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as error:
            # A ledger that cannot be read is a refusal, never a silent reset (which would reopen every step).
            raise PeerProtocolError(PeerFault.REFUSED_BY_POLICY, peer="server",  # type: ignore[arg-type]
                                    detail=f"the node's answer ledger {self._path} is unreadable: "
                                    f"{type(error).__name__}") from None
        if not isinstance(data, list) or not all(isinstance(entry, str) for entry in data):
            raise PeerProtocolError(PeerFault.REFUSED_BY_POLICY, peer="server",  # type: ignore[arg-type]
                                    detail=f"the node's answer ledger {self._path} is malformed")
        return data

    def claim(self, digest: bytes, step: str) -> None:
        """Record the answer to ``step`` of the configuration ``digest``; refuse if it was already answered.

        The caller holds the node's lock for the whole message, so two ClientApp processes cannot both pass.
        """
        entry = f"{digest.hex()}:{step}"
        answered = self._load()
        if entry in answered:
            raise PeerProtocolError(PeerFault.DUPLICATE, peer="server",  # type: ignore[arg-type]
                                    detail=f"this node already answered step {step} of this round configuration")
        atomic_write_private(self._path, json.dumps((answered + [entry])[-MAX_ANSWERS:]))
