"""An in-process transport: drives one server session and N client sessions.

Every message goes through the wire codec (so byte counts and decoding are
real), each send is recorded in a transcript, and client and server time is
measured per stage. Masked inputs are folded into the server's running sum as
they arrive, so the server's memory grows with the vector length, not with N.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .._errors import ConfigurationError, FedSecureError, LocalProtocolError, PeerProtocolError, RoundAborted
from ..encoding import EncodedUpdate
from ..protocols import (
    DECRYPTOR,
    SERVER,
    DecryptionRequest,
    ClientIdentity,
    PaillierCredentials,
    PaillierDeployment,
    AggregationResult,
    RoundConfig,
    ServerSession,
    Stage,
    create_client_session,
    create_server_session,
    decode_message,
    encode_message,
    public_view,
)
from ._schedule import DropoutSchedule

__all__ = ["TranscriptRecord", "RoundReport", "Simulator", "Interceptor", "Progress"]

LOGGER = logging.getLogger("fedsecure.runtime")

Interceptor = Callable[[int, Stage, bytes], "bytes | None"]
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True, slots=True)
class TranscriptRecord:
    """One message on the wire: who sent what to whom, in which stage, and how many bytes.

    It records only public facts (never contents), so a transcript can be
    shared with an auditor.
    """

    stage: str
    sender: int | str
    receiver: int | str
    message_type: str
    size: int
    #: The message's public fields (:func:`~fedsecure.protocols.public_view`), when the simulator records them.
    fields: Mapping[str, Any] | None = None


@dataclass
class RoundReport:
    """What happened in one simulated round."""

    config: RoundConfig
    result: AggregationResult | None
    abort: RoundAborted | None
    transcript: list[TranscriptRecord]
    client_seconds: dict[int, float]
    server_seconds: float
    server_stage_seconds: dict[str, float]
    client_stage_seconds: dict[str, float]
    rejected: list[PeerProtocolError] = field(default_factory=list)
    client_errors: dict[int, FedSecureError] = field(default_factory=dict)
    decryptor_seconds: float = 0.0
    decryptor_error: FedSecureError | None = None
    #: What clients reported alongside their first message (the Flower runtime: local DP's epsilon).
    client_reports: dict[int, dict[str, float]] = field(default_factory=dict)
    #: How many of the inputs the clip changed (known where the inputs are: the in-process simulator).
    clipped: int = 0

    @property
    def aborted(self) -> bool:
        return self.abort is not None

    def bytes_sent(self, party: int | str) -> int:
        return sum(r.size for r in self.transcript if r.sender == party)

    def bytes_received(self, party: int | str) -> int:
        return sum(r.size for r in self.transcript if r.receiver == party)

    @property
    def median_client_seconds(self) -> float:
        return statistics.median(self.client_seconds.values()) if self.client_seconds else 0.0


class Simulator:
    """Runs one round of ``config`` over in-process sessions.

    ``updates`` maps every client in the cohort to its encoded update;
    ``schedule`` says who goes silent when; ``interceptor`` (for tests and
    audits) may rewrite or swallow a client's outgoing bytes, standing in for a
    misbehaving client; ``progress`` is called as ``(stage, done, total)``;
    ``wrap_server`` may wrap the server session (benchmarks use it to measure
    the server's own memory). Paillier rounds need the ``paillier`` deployment:
    each client's credentials and, for a separate decryptor, the key holder,
    which appears in the transcript as ``"decryptor"``. With ``record_fields``
    every transcript record also carries the message's public fields, for
    auditing (it costs a hash of every vector and envelope). Rounds of SecAgg's
    active-adversary variant need every client's ``identities`` key.
    """

    def __init__(
        self,
        config: RoundConfig,
        updates: Mapping[int, EncodedUpdate],
        *,
        schedule: DropoutSchedule | None = None,
        interceptor: Interceptor | None = None,
        progress: Progress | None = None,
        wrap_server: Callable[[ServerSession], ServerSession] | None = None,
        paillier: PaillierDeployment | None = None,
        record_fields: bool = False,
        identities: Mapping[int, ClientIdentity] | None = None,
        warn_clipping: bool = True,
    ) -> None:
        self._config = config
        self._warn_clipping = warn_clipping
        for client in config.clients:
            update = updates.get(client)
            if not isinstance(update, EncodedUpdate):
                raise ConfigurationError(
                    f"the update of client {client} is " + ("missing" if update is None else
                                                            f"a {type(update).__name__}, not an EncodedUpdate")
                    + ": encode each with Quantizer(encoding).encode(vector)", parameter="updates")
        self._updates = updates
        self._schedule = schedule or DropoutSchedule()
        self._interceptor = interceptor
        self._progress = progress
        self._wrap_server = wrap_server
        if config.protocol.is_paillier and paillier is None:
            raise ValueError(f"a {config.protocol.value} round needs its PaillierDeployment")
        self._paillier = paillier
        self._record_fields = record_fields
        if config.active and (identities is None or set(config.clients) - identities.keys()):
            raise ValueError("an active-adversary round needs every client's identity key")
        self._identities = identities or {}

    def _fields(self, message: Any) -> Mapping[str, Any] | None:
        return public_view(message) if self._record_fields else None

    def _fields_of_bytes(self, data: bytes, max_bytes: int) -> Mapping[str, Any] | None:
        if not self._record_fields:
            return None
        try:
            return public_view(decode_message(data, max_bytes=max_bytes))
        except FedSecureError as error:
            return {"undecodable": type(error).__name__}

    def _decrypt(self, server: ServerSession, data: bytes, label: str, transcript: list[TranscriptRecord],
                 refusals: dict[str, FedSecureError], rejected: list[PeerProtocolError]) -> float:
        # The separate decryptor: a party of its own, reached over the same codec. Returns its time.
        key_holder = self._paillier.key_holder if self._paillier is not None else None
        transcript.append(TranscriptRecord(label, SERVER, "decryptor", "DecryptionRequest", len(data),
                                           self._fields_of_bytes(data, server.max_message_bytes)))
        if key_holder is None:
            return 0.0
        started = time.perf_counter()
        try:
            request = decode_message(data, max_bytes=server.max_message_bytes)
            if not isinstance(request, DecryptionRequest):
                raise LocalProtocolError(f"the decryptor got a {type(request).__name__}")
            reply = encode_message(key_holder.receive(self._config, request))
        except FedSecureError as error:
            # The key holder refused (an honest decryptor declining a bad request); the round will abort.
            refusals["decryptor"] = error
            return time.perf_counter() - started
        elapsed = time.perf_counter() - started
        transcript.append(TranscriptRecord(label, "decryptor", SERVER, "DecryptedAggregate", len(reply),
                                           self._fields_of_bytes(reply, server.max_message_bytes)))
        try:
            server.receive_bytes(reply, sender=DECRYPTOR)
        except PeerProtocolError as error:
            rejected.append(error)
        return elapsed

    def run(self) -> RoundReport:
        config = self._config
        clock = time.perf_counter
        clipped = sum(1 for update in self._updates.values() if update.clipped)
        if self._warn_clipping and clipped * 2 > len(self._updates):
            LOGGER.warning("%d of %d updates were clipped to the encoding's clip: the sum is of scaled-down updates "
                           "(raise `clip` if that is not what you meant)", clipped, len(self._updates))
        transcript: list[TranscriptRecord] = []
        client_seconds: dict[int, float] = defaultdict(float)
        client_stage_seconds: dict[str, float] = defaultdict(float)
        server_stage_seconds: dict[str, float] = defaultdict(float)
        rejected: list[PeerProtocolError] = []
        client_errors: dict[int, FedSecureError] = {}
        decryptor_errors: dict[str, FedSecureError] = {}
        decryptor_seconds = 0.0

        started = clock()
        server = create_server_session(config)
        if self._wrap_server is not None:
            server = self._wrap_server(server)
        outgoing = server.start()
        server_stage_seconds["setup"] += clock() - started
        clients = {}
        for c in config.clients:
            started = clock()
            credentials: PaillierCredentials | ClientIdentity | None = (
                self._paillier.credentials.get(c) if self._paillier is not None else self._identities.get(c))
            clients[c] = create_client_session(config, c, self._updates[c], credentials)
            client_seconds[c] += clock() - started

        abort: RoundAborted | None = None
        while True:
            stage = server.stage
            label = stage.label
            total = len(outgoing)
            for done, message in enumerate(outgoing, 1):
                recipient = message.recipient
                started = clock()
                data = encode_message(message)
                server_stage_seconds[label] += clock() - started
                if self._progress is not None:
                    # Reported before the recipient works on it: the stage's slow part is the clients'.
                    self._progress(label, done - 1, total)
                if recipient == DECRYPTOR:
                    decryptor_seconds += self._decrypt(server, data, label, transcript, decryptor_errors, rejected)
                    continue
                if recipient in client_errors or self._schedule.is_silent(recipient, stage):
                    continue
                transcript.append(TranscriptRecord(label, SERVER, recipient, type(message).__name__, len(data),
                                                   self._fields(message)))
                started = clock()
                try:
                    replies = clients[recipient].receive(decode_message(data, max_bytes=server.max_message_bytes))
                    wire = [(type(reply).__name__, encode_message(reply), reply) for reply in replies]
                except FedSecureError as error:
                    # The client refused (an honest client aborting); it is silent from now on.
                    client_errors[recipient] = error
                    wire = []
                elapsed = clock() - started
                client_seconds[recipient] += elapsed
                client_stage_seconds[label] += elapsed
                for type_name, reply_bytes, reply in wire:
                    fields = self._fields(reply)
                    if self._interceptor is not None:
                        tampered = self._interceptor(recipient, stage, reply_bytes)
                        if tampered is None:
                            # Swallowed: nothing reached the server.
                            continue
                        if tampered != reply_bytes:
                            # The transcript shows what was on the wire, not what the honest session produced.
                            fields = self._fields_of_bytes(tampered, server.max_message_bytes)
                        reply_bytes = tampered
                    transcript.append(TranscriptRecord(label, recipient, SERVER, type_name, len(reply_bytes),
                                                       fields))
                    started = clock()
                    try:
                        server.receive_bytes(reply_bytes, sender=recipient)
                    except PeerProtocolError as error:
                        rejected.append(error)
                    server_stage_seconds[label] += clock() - started
            if self._progress is not None:
                self._progress(label, total, total)
            started = clock()
            try:
                outgoing = server.close_stage()
            except RoundAborted as error:
                abort = error
            server_stage_seconds[label] += clock() - started
            if abort is not None or server.stage is Stage.DONE:
                break
        if abort is not None:
            # Tell every client the round is over, so that none keeps its keys, seeds or input.
            for session in clients.values():
                session.abort()

        return RoundReport(
            config=config,
            result=None if abort is not None else server.result(),
            abort=abort,
            transcript=transcript,
            client_seconds=dict(client_seconds),
            server_seconds=sum(server_stage_seconds.values()),
            server_stage_seconds=dict(server_stage_seconds),
            client_stage_seconds=dict(client_stage_seconds),
            rejected=rejected,
            client_errors=client_errors,
            decryptor_seconds=decryptor_seconds,
            decryptor_error=decryptor_errors.get("decryptor"),
            clipped=clipped,
        )
