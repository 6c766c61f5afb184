"""Long-lived client secrets named by a SuperNode's node config, loaded and saved around every message.

``fedsecure-paillier``
    The client's Paillier credentials file (``client-<id>.paillier.json``).
``fedsecure-identity``
    The client's identity file for SecAgg's active-adversary variant (``client-<id>.identity.json``).
``fedsecure-key-holder``
    This node is the separate Paillier decryptor: its ``key-holder.json``.

Credentials are bound to a client id: the node must pin it (``fedsecure-client-id``), and the file must be that
client's.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from ..._errors import ConfigurationError, LocalProtocolError
from ...crypto import SigningKey
from ...protocols import ClientIdentity, PaillierCredentials, PaillierKeyHolder
from ._answers import answer_ledger_path, private_directory
from ._identity import load_identity, save_identity
from ._paillier import (
    load_key_holder,
    load_key_holder_signer,
    load_paillier_credentials,
    save_key_holder,
    save_paillier_credentials,
)

__all__ = ["credentials_from_node_config", "save_credentials_to_node_config", "key_holder_from_node_config",
           "save_key_holder_to_node_config", "lock_node_files", "key_holder_signer_from_node_config"]

_FILE_KEYS = ("fedsecure-paillier", "fedsecure-identity", "fedsecure-key-holder")


@contextlib.contextmanager
def lock_node_files(context: Any, *, timeout: float = 60.0) -> Iterator[None]:
    """Hold an exclusive lock on every credential file the node config names, for one whole message.

    Flower's simulation engine may run two messages for one node concurrently, and its deployment engine may
    start the next message's ClientApp before the previous one's state is saved. Each loads a file, checks it
    (a configuration not joined, a round not decrypted), records the new claim and writes it back; without the
    lock both could pass the check, and a server could have one round decrypted twice. ``fcntl.flock`` on a
    sidecar ``.lock`` file (created 0600, so only the owner can hold it), so the credential file itself can be
    replaced atomically. A lock not obtained within ``timeout`` seconds is a refusal, not a hang.
    """
    import fcntl
    import time

    paths = sorted(str(context.node_config[key]) + ".lock" for key in _FILE_KEYS if context.node_config.get(key))
    # The node's answer ledger is always locked, credential files or not (see ``_answers``).
    ledger = answer_ledger_path(context)
    private_directory(ledger.parent)
    paths.append(str(ledger) + ".lock")
    with contextlib.ExitStack() as stack:
        for path in paths:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            stack.callback(os.close, descriptor)
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise LocalProtocolError(f"{path} stayed locked for {timeout:.0f} s") from None
                    time.sleep(0.05)
        yield


def _pinned(context: Any, client: int, what: str) -> None:
    pinned = context.node_config.get("fedsecure-client-id")
    if pinned is None or int(pinned) != client:
        raise ConfigurationError(f"the {what} file is client {client}'s; set fedsecure-client-id={client}",
                                 parameter="fedsecure-client-id")


def credentials_from_node_config(context: Any) -> PaillierCredentials | ClientIdentity | None:
    """The credentials the node config names (None without any)."""
    config = context.node_config
    if config.get("fedsecure-paillier"):
        client, credentials = load_paillier_credentials(str(config["fedsecure-paillier"]))
        _pinned(context, client, "Paillier credentials")
        return credentials
    if config.get("fedsecure-identity"):
        client, identity = load_identity(str(config["fedsecure-identity"]))
        _pinned(context, client, "identity")
        return identity
    return None


def save_credentials_to_node_config(context: Any, credentials: PaillierCredentials | ClientIdentity) -> None:
    """Write the credentials back to the file they came from (what they have joined or decrypted)."""
    config = context.node_config
    client = int(config["fedsecure-client-id"])
    if isinstance(credentials, PaillierCredentials) and config.get("fedsecure-paillier"):
        save_paillier_credentials(str(config["fedsecure-paillier"]), client, credentials)
    elif isinstance(credentials, ClientIdentity) and config.get("fedsecure-identity"):
        save_identity(str(config["fedsecure-identity"]), client, credentials)


def key_holder_from_node_config(context: Any) -> PaillierKeyHolder | None:
    path = context.node_config.get("fedsecure-key-holder")
    return load_key_holder(str(path)) if path else None


def key_holder_signer_from_node_config(context: Any) -> SigningKey:
    return load_key_holder_signer(str(context.node_config["fedsecure-key-holder"]))


def save_key_holder_to_node_config(context: Any, holder: PaillierKeyHolder) -> None:
    path = context.node_config.get("fedsecure-key-holder")
    if path:
        save_key_holder(str(path), holder)
