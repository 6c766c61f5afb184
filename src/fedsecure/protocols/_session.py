"""The protocol interface every aggregation protocol implements (sans-IO).

A transport builds one :class:`ServerSession` and one :class:`ClientSession`
per client, calls ``server.start()``, hands each message to its recipient's
``receive`` and hands replies back, and calls ``server.close_stage()`` at each
deadline. Sessions never touch sockets, clocks, threads or a global RNG.
"""

from __future__ import annotations

import abc
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NoReturn, TypeVar

import numpy as np

from .._errors import (
    DecodeError,
    FedSecureError,
    InvalidUpdateError,
    LocalProtocolError,
    PeerFault,
    PeerProtocolError,
    RoundAborted,
)
from ..encoding import EncodedUpdate, Ring
from ._codec import decode_message
from ._config import RoundConfig
from ._messages import ClientMessage, Message, RoundStart, ServerMessage
from ._stages import FIRST_STAGE, ClientState, Stage, client_transitions, server_stages

__all__ = ["ClientSession", "ServerSession", "AggregationResult", "DropRecord", "SERVER", "CLIENT_STATE_FORMAT"]

SERVER = "server"
#: The format tag of :meth:`ClientSession.export_state`; a blob with another tag is refused.
CLIENT_STATE_FORMAT = "fedsecure/client-state/v1"
_STATE_HEADER = struct.Struct("<I")
_Session = TypeVar("_Session", bound="ClientSession")


@dataclass(frozen=True, slots=True)
class DropRecord:
    """Why the server stopped listening to a client: at which stage, and for what reason."""

    stage: Stage
    reason: str
    fault: PeerFault | None = None


@dataclass(frozen=True, slots=True, eq=False)
class AggregationResult:
    """The outcome of a completed round.

    ``ring_sum`` is the ring sum of the encoded inputs of exactly the clients
    in ``survivors``; ``dropped`` says, for every client that stopped
    participating, at which stage and why (a survivor may also appear there if it
    vanished during unmasking, after its input was already counted).
    """

    ring_sum: np.ndarray
    ring: Ring
    survivors: frozenset[int]
    dropped: Mapping[int, DropRecord]


class ClientSession(abc.ABC):
    """One client's side of one round. ``receive`` returns the messages to send to the server."""

    def __init__(self, config: RoundConfig, client_id: int, update: EncodedUpdate) -> None:
        if not config.in_cohort(client_id):
            raise LocalProtocolError(f"client {client_id} is not in the round's cohort")
        if update.ring.bits != config.ring_bits or update.values.shape != (config.vector_length,):
            raise LocalProtocolError(
                f"the encoded update (length {update.values.size}, {update.ring.bits}-bit ring) does not match the "
                f"round (length {config.vector_length}, {config.ring_bits}-bit ring)"
            )
        if update.encoding_digest != config.encoding_digest:
            raise InvalidUpdateError("the update was encoded with another EncodingConfig than the round's")
        if not update.ring.contains(update.values):
            raise InvalidUpdateError("the encoded update has words outside its ring")
        self._config = config
        self._client_id = client_id
        self._update: EncodedUpdate | None = update
        self._state = ClientState.AWAIT_START
        self._transitions = client_transitions(config.protocol, active=config.active)

    @property
    def client_id(self) -> int:
        return self._client_id

    @property
    def config(self) -> RoundConfig:
        return self._config

    @property
    def state(self) -> ClientState:
        return self._state

    def receive(self, message: Message) -> list[ClientMessage]:
        """Process one server message; returns the replies. Any error aborts the session for good."""
        if self._state is ClientState.ABORTED:
            raise LocalProtocolError("this client session has aborted")
        allowed = self._transitions.get(self._state, {})
        rule = allowed.get(type(message))
        try:
            if rule is None:
                raise PeerProtocolError(PeerFault.OUT_OF_STAGE, peer=SERVER,  # type: ignore[arg-type]
                                        detail=f"{type(message).__name__} while {self._state.value}")
            if message.round_id != self._config.round_id:
                raise PeerProtocolError(PeerFault.WRONG_ROUND, peer=SERVER)  # type: ignore[arg-type]
            if getattr(message, "recipient", None) != self._client_id:
                raise PeerProtocolError(PeerFault.WRONG_RECIPIENT, peer=SERVER)  # type: ignore[arg-type]
            if isinstance(message, RoundStart) and message.config_digest != self._config.digest:
                raise PeerProtocolError(PeerFault.CONFIG_MISMATCH, peer=SERVER)  # type: ignore[arg-type]
            replies = self._handle(message)
        except BaseException:
            self._state = ClientState.ABORTED
            self._discard_secrets()
            raise
        self._state = rule[0]
        if self._state is ClientState.DONE:
            self._discard_secrets()
        return replies

    def abort(self) -> None:
        """Abandon the round (for example when the transport learns the server aborted).

        The session forgets its keys, seeds, shares and input, and refuses every later message.
        """
        if self._state is not ClientState.DONE:
            self._state = ClientState.ABORTED
        self._discard_secrets()

    def export_state(self) -> bytes:
        """Everything this session holds, as bytes, for a transport whose client process lives for one message.

        Flower runs a fresh ClientApp process per message and keeps only the
        node's ``context.state`` in between, so the session must travel through
        it. The bytes hold the round's secrets (private keys, the self-mask
        seed, the Shamir shares held, the encoded input), in the clear: they
        must stay on the client's device, like the live object. Long-lived
        credentials (identity or Paillier signing keys) are not included; they
        are passed back to :meth:`restore_state`. No pickle: a JSON header and
        the raw input words.
        """
        values = self._update.values if self._update is not None else None
        header = {
            "format": CLIENT_STATE_FORMAT,
            "kind": type(self).__name__,
            "client": self._client_id,
            "config": self._config.digest.hex(),
            "state": self._state.value,
            "update": None if self._update is None else {
                "ring_bits": self._update.ring.bits, "encoding": self._update.encoding_digest.hex(),
                "max_coordinate": self._update.max_coordinate,
                "length": int(values.size) if values is not None else 0},
            "fields": self._export_fields(),
        }
        encoded = json.dumps(header, separators=(",", ":")).encode()
        body = values.astype(values.dtype.newbyteorder("<"), copy=False).tobytes() if values is not None else b""
        return _STATE_HEADER.pack(len(encoded)) + encoded + body

    @classmethod
    def restore_state(cls: type[_Session], config: RoundConfig, data: bytes, credentials: Any = None) -> _Session:
        """The session :meth:`export_state` saved, for the same ``config`` and the same long-lived ``credentials``.

        It is not built again (an identity does not join the configuration a
        second time); a blob for another configuration, another session class or
        in another format is refused with :class:`LocalProtocolError`.
        """
        try:
            (size,) = _STATE_HEADER.unpack_from(data)
            header = json.loads(data[_STATE_HEADER.size:_STATE_HEADER.size + size])
            if not isinstance(header, dict):
                raise LocalProtocolError("the saved client state is malformed: its header is not an object")
            body = data[_STATE_HEADER.size + size:]
            if header.get("format") != CLIENT_STATE_FORMAT or header.get("kind") != cls.__name__:
                raise LocalProtocolError(f"the saved state is not a {cls.__name__} in {CLIENT_STATE_FORMAT}")
            if header["config"] != config.digest.hex():
                raise LocalProtocolError("the saved state belongs to another round configuration")
            session = cls.__new__(cls)
            session._config = config
            session._client_id = int(header["client"])
            if not config.in_cohort(session._client_id):
                raise LocalProtocolError(f"client {session._client_id} is not in the round's cohort")
            session._state = ClientState(header["state"])
            session._transitions = client_transitions(config.protocol, active=config.active)
            update = header["update"]
            session._update = None
            if update is not None:
                ring = Ring(int(update["ring_bits"]))
                if ring.bits != config.ring_bits or int(update["length"]) != config.vector_length:
                    raise LocalProtocolError("the saved input does not match the round")
                words = np.frombuffer(body, dtype=ring.dtype.newbyteorder("<")).astype(ring.dtype)
                if words.size != config.vector_length:
                    raise LocalProtocolError("the saved input is truncated")
                session._update = EncodedUpdate(words, ring, bytes.fromhex(update["encoding"]),
                                                int(update["max_coordinate"]))
            session._restore_fields(header["fields"], credentials)
        except LocalProtocolError:
            raise
        except (struct.error, ValueError, LookupError, TypeError, AttributeError, ArithmeticError, RecursionError,
                FedSecureError) as error:
            raise LocalProtocolError(f"the saved client state is malformed: {type(error).__name__}") from None
        return session

    def _export_fields(self) -> dict[str, Any]:
        """Hook: the subclass's own state, as JSON values."""
        return {}

    def _restore_fields(self, fields: Mapping[str, Any], credentials: Any) -> None:
        """Hook: the inverse of :meth:`_export_fields`."""
        if credentials is not None:
            raise LocalProtocolError(f"{type(self).__name__} takes no credentials")

    def _encoded_values(self) -> np.ndarray:
        if self._update is None:
            raise LocalProtocolError("this session's input has been discarded")
        return self._update.values

    @abc.abstractmethod
    def _handle(self, message: Message) -> list[ClientMessage]:
        """Protocol-specific work for an allowed message."""

    def _discard_secrets(self) -> None:
        """Drop references to secret material (and the input) once they can no longer be needed."""
        self._update = None

    def __reduce__(self) -> NoReturn:
        raise TypeError("client sessions hold secrets and cannot be pickled")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} client={self._client_id} round={self._config.round_id} state={self._state.value}>"


class ServerSession(abc.ABC):
    """The server's side of one round.

    ``receive`` refuses a bad message by raising :class:`PeerProtocolError`
    after recording its sender as dropped; the session itself carries on. A
    ``close_stage`` that cannot meet the threshold raises :class:`RoundAborted`,
    and the session stays aborted.
    """

    def __init__(self, config: RoundConfig) -> None:
        self._config = config
        self._rules = server_stages(config.protocol, active=config.active)
        self._stage = FIRST_STAGE[config.protocol]
        self._started = False
        self._active: set[int] = set(config.clients)
        self._answered: set[int] = set()
        self._dropped: dict[int, DropRecord] = {}
        self._abort: RoundAborted | None = None
        self._result: AggregationResult | None = None
        ring = config.ring
        self._max_message_bytes = 64 + max(
            config.vector_length * ring.word_bytes + 8, len(config.clients) * (4 + 2 + 160) + 8
        )

    @property
    def config(self) -> RoundConfig:
        return self._config

    @property
    def stage(self) -> Stage:
        return self._stage

    @property
    def dropped(self) -> Mapping[int, DropRecord]:
        return MappingProxyType(self._dropped)

    @property
    def max_message_bytes(self) -> int:
        """The largest message this round can legitimately carry; larger ones are refused unread."""
        return self._max_message_bytes

    def start(self) -> list[ServerMessage]:
        """Begin the round: one :class:`RoundStart` per client in the cohort."""
        if self._started:
            raise LocalProtocolError("the round has already started")
        self._started = True
        return [RoundStart(round_id=self._config.round_id, recipient=c, config_digest=self._config.digest)
                for c in self._config.clients]

    def receive_bytes(self, data: bytes, *, sender: int) -> list[ServerMessage]:
        """Decode bytes the transport received from ``sender`` and process them."""
        try:
            message = decode_message(data, sender=sender, max_bytes=self._max_message_bytes)
        except DecodeError as error:
            self._drop(sender, error.fault, error.detail)
            raise
        if getattr(message, "sender", None) != sender:
            mismatch = PeerProtocolError(PeerFault.WRONG_SENDER, peer=sender,
                                         detail=f"claims to be {getattr(message, 'sender', 'the server')}")
            self._drop(sender, mismatch.fault)
            raise mismatch
        return self.receive(message)

    def receive(self, message: Message) -> list[ServerMessage]:
        """Collect one client message for the current stage."""
        sender = getattr(message, "sender", None)
        if not isinstance(sender, int):
            raise PeerProtocolError(PeerFault.OUT_OF_STAGE, peer=None, detail="a server message sent to the server")
        if not self._started or self._stage in (Stage.DONE, Stage.ABORTED):
            raise PeerProtocolError(PeerFault.OUT_OF_STAGE, peer=sender, detail="no stage is open")
        if not self._config.in_cohort(sender):
            raise PeerProtocolError(PeerFault.NOT_IN_COHORT, peer=sender)
        if sender in self._dropped:
            raise PeerProtocolError(PeerFault.OUT_OF_STAGE, peer=sender,
                                    detail=f"already dropped: {self._dropped[sender].reason}")
        try:
            if message.round_id != self._config.round_id:
                raise PeerProtocolError(PeerFault.WRONG_ROUND, peer=sender,
                                        detail=f"round {message.round_id}, expected {self._config.round_id}")
            if type(message) is not self._rules[self._stage].accepts or sender not in self._active:
                raise PeerProtocolError(PeerFault.OUT_OF_STAGE, peer=sender,
                                        detail=f"{type(message).__name__} during {self._stage.label}")
            if sender in self._answered:
                raise PeerProtocolError(PeerFault.DUPLICATE, peer=sender, detail=self._stage.label)
            self._handle(message)  # type: ignore[arg-type]
        except PeerProtocolError as error:
            self._drop(sender, error.fault, error.detail)
            raise
        self._answered.add(sender)
        return []

    def close_stage(self) -> list[ServerMessage]:
        """The stage's deadline: move on with whoever answered; the silent count as dropped."""
        if self._abort is not None:
            raise self._abort
        if not self._started or self._stage is Stage.DONE:
            raise LocalProtocolError("no stage is open")
        for client in sorted(self._active - self._answered):
            if client not in self._dropped:
                self._dropped[client] = DropRecord(self._stage, "did not answer before the deadline")
        responders = frozenset(self._answered - self._dropped.keys())
        try:
            messages = self._close(responders)
        except RoundAborted as error:
            self._abort = error
            self._stage = Stage.ABORTED
            self._discard_state()
            raise
        self._stage = self._rules[self._stage].next_stage
        self._answered = set()
        return messages

    def result(self) -> AggregationResult:
        """The round's result once every stage has closed."""
        if self._abort is not None:
            raise self._abort
        if self._result is None:
            raise LocalProtocolError(f"the round is not finished (stage {self._stage.label})")
        return self._result

    @property
    def aborted(self) -> RoundAborted | None:
        """The abort error, if the round aborted."""
        return self._abort

    def _drop(self, client: int, fault: PeerFault, detail: str = "") -> None:
        # Only an open stage records drops: junk before start() or after the end changes nothing.
        open_stage = self._started and self._stage not in (Stage.DONE, Stage.ABORTED)
        if open_stage and self._config.in_cohort(client) and client not in self._dropped:
            reason = fault.value + (f" ({detail})" if detail else "")
            self._dropped[client] = DropRecord(self._stage, reason, fault)
            self._active.discard(client)
            self._on_drop(client)

    def _require(self, have: int, need: int, reason: str) -> None:
        if have < need:
            raise RoundAborted(reason, stage=self._stage.label, have=have, need=need)

    def _finish(self, ring_sum: np.ndarray, survivors: frozenset[int]) -> None:
        ring_sum.flags.writeable = False
        self._result = AggregationResult(ring_sum=ring_sum, ring=self._config.ring, survivors=survivors,
                                         dropped=MappingProxyType(dict(self._dropped)))

    def _on_drop(self, client: int) -> None:
        """Hook: forget what a dropped client sent in the current stage."""

    def _discard_state(self) -> None:
        """Hook: release buffers after an abort."""

    @abc.abstractmethod
    def _handle(self, message: ClientMessage) -> None:
        """Validate and store one accepted message; raise PeerProtocolError to refuse it."""

    @abc.abstractmethod
    def _close(self, responders: frozenset[int]) -> list[ServerMessage]:
        """Finish the current stage with ``responders``; raise RoundAborted below the threshold."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} round={self._config.round_id} stage={self._stage.label}>"
