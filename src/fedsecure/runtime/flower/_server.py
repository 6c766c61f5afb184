"""The server half of the Flower runtime: drives a fedsecure server session over Flower's ``Grid``.

Each stage pushes one message per recipient (``push_messages``) and pulls
replies until every recipient answered or the stage's deadline passed; the
deadline is the sans-IO ``close_stage()``. A node Flower reports as
unavailable, a ClientApp that crashed, a client that refused, a reply from the
wrong node or one that fails fedsecure's decoder: each counts as that client
dropping, is recorded with its reason, and the round goes on with the others
as long as the threshold holds. Every message is recorded in the same
transcript the in-process simulator writes, so ``fedsecure audit`` reads both.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..._errors import CryptoError, FedSecureError, LocalProtocolError, PeerProtocolError, RoundAborted
from ...crypto import verify_signature
from ...dp import DistributedDPEncoding
from ...encoding import EncodingConfig
from ...protocols import (
    DECRYPTOR,
    MAX_CLIENT_ID,
    SERVER,
    WIRE_VERSION,
    RoundConfig,
    RoundStart,
    Stage,
    create_server_session,
    decode_message,
    encode_message,
    encode_round_config,
    public_view,
)
from .._simulator import Progress, RoundReport, TranscriptRecord
from ._common import MESSAGE_TYPE, RECORD, Kind, key_holder_proof_payload, task_digest

__all__ = ["FlowerTransport", "ClientError", "encoding_record"]

LOGGER = logging.getLogger("fedsecure.flower")
# Flower's error codes for a message that never reached a node, or a node it reports gone.
_UNREACHABLE_CODES = (3, 4, 5)


class ClientError(FedSecureError):
    """Why a client's reply never reached the server session: it refused, crashed, or its node vanished."""

    def __init__(self, client: int, reason: str, *, unreachable: bool = False) -> None:
        super().__init__(f"client {client}: {reason}")
        self.client = client
        self.reason = reason
        #: True when the node never answered or Flower reported it gone; False when the client refused.
        self.unreachable = unreachable


def encoding_record(encoding: EncodingConfig | DistributedDPEncoding) -> dict[str, Any]:
    """The public encoding parameters as the fields of a round-start record.

    Distributed DP's encoding travels as its plan (JSON) and the round's public rotation seed.
    """
    if isinstance(encoding, DistributedDPEncoding):
        return {"encoding-kind": "distributed-dp", "dp-plan": encoding.plan.to_json(),
                "dp-rotation-seed": encoding.rotation_seed}
    return {"encoding-kind": "quantizer","encoding-dimension": encoding.dimension, "encoding-clients": encoding.clients,
            "encoding-clip": float(encoding.clip), "encoding-scale": float(encoding.scale),
            "encoding-clip-mode": encoding.clip_mode.value, "encoding-max-weight": encoding.max_weight or 0,
            "encoding-ring-bits": encoding.ring.bits}


class FlowerTransport:
    """Runs fedsecure rounds over a Flower ``grid`` (a ServerApp's, the simulation engine's, or a local one).

    ``stage_timeout`` is each protocol stage's deadline in seconds;
    ``start_timeout`` the first stage's, which includes the clients' local
    work (training); ``poll_interval`` how often replies are pulled;
    ``record_fields`` keeps every message's public fields in the transcript
    (for ``fedsecure audit``); ``progress`` is called as ``(stage, answered,
    expected)`` while a stage waits, and ``on_stage`` as ``(stage, seconds,
    answered, expected)`` when it ends. ``message_type`` is the Flower message type of every message it sends
    (fedsecure's own by default; ``train`` for the drop-in, whose ClientApp mod answers train messages). The
    transport holds no secrets: it sees what the server sees.
    """

    def __init__(self, grid: Any, *, stage_timeout: float = 60.0, start_timeout: float | None = None,
                 poll_interval: float = 0.1, record_fields: bool = False, progress: Progress | None = None,
                 on_stage: Callable[[str, float, int, int], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 message_type: str = MESSAGE_TYPE) -> None:
        if stage_timeout <= 0 or (start_timeout is not None and start_timeout <= 0):
            raise ValueError("stage deadlines must be positive")
        self._grid = grid
        self._stage_timeout = stage_timeout
        self._start_timeout = start_timeout if start_timeout is not None else stage_timeout
        self._poll_interval = poll_interval
        self._record_fields = record_fields
        self._progress = progress
        self._on_stage = on_stage
        #: Nodes that answered ``hello`` as a separate Paillier decryptor (never part of a cohort).
        self.decryptors: list[int] = []
        self._clock = clock
        self._sleep = sleep
        self._message_type = message_type

    @property
    def grid(self) -> Any:
        """The Flower grid this transport drives."""
        return self._grid

    # ---- the exchange of one stage ----------------------------------------------------------------
    def _exchange(self, contents: Mapping[int, dict[str, Any]], timeout: float, group: str,
                  extra: Mapping[int, Any] | None = None
                  ) -> tuple[dict[int, dict[str, Any]], dict[int, str], set[int]]:
        """Send ``contents[node]`` to each node (with ``extra[node]``'s records beside it); returns the replies'
        records, why the others failed, and which of those failed because their ClientApp raised (reachable,
        but failing) rather than vanished."""
        from flwr.app import ConfigRecord, RecordDict

        def body(node: int, content: dict[str, Any]) -> Any:
            records = RecordDict({RECORD: ConfigRecord(content)})
            for name, record in (extra or {}).get(node, RecordDict()).items():
                records[name] = record
            return records

        messages = [self._grid.create_message(body(node, content), self._message_type, node, group,
                                              ttl=timeout + 5.0)
                    for node, content in contents.items()]
        ids = list(self._grid.push_messages(messages))
        pending = {message_id: message.metadata.dst_node_id for message_id, message in zip(ids, messages)
                   if message_id}
        failed = {message.metadata.dst_node_id: "Flower could not queue the message"
                  for message_id, message in zip(ids, messages) if not message_id}
        replies: dict[int, dict[str, Any]] = {}
        crashed: set[int] = set()
        opened = self._clock()
        deadline = opened + timeout
        while pending:
            for reply in self._grid.pull_messages(list(pending)):
                node = pending.pop(reply.metadata.reply_to_message_id, None)
                if node is None:
                    continue
                if reply.has_error():
                    failed[node] = f"Flower error {reply.error.code}: {reply.error.reason}"
                    if reply.error.code not in _UNREACHABLE_CODES:
                        crashed.add(node)
                elif reply.metadata.src_node_id != node:
                    failed[node] = f"the reply came from node {reply.metadata.src_node_id}"
                elif RECORD not in reply.content.config_records:
                    failed[node] = f"the reply has no `{RECORD}` record"
                else:
                    replies[node] = dict(reply.content.config_records[RECORD])
            if self._progress is not None:
                self._progress(group, len(replies), len(contents))
            if not pending or self._clock() >= deadline:
                break
            self._sleep(self._poll_interval)
        for node in pending.values():
            failed[node] = "did not answer before the deadline"
        if self._on_stage is not None:
            self._on_stage(group, self._clock() - opened, len(replies), len(contents))
        return replies, failed, crashed

    # ---- registration -----------------------------------------------------------------------------
    def register(self, nodes: Iterable[int] | None = None, *, timeout: float | None = None,
                 known: Mapping[int, int] | None = None, key_holder_key: bytes | None = None,
                 held: dict[int, int] | None = None) -> dict[int, int]:
        """Ask ``nodes`` (default: every node Flower lists) for their client ids; returns node -> client id.

        Nodes that do not answer, claim an id outside [0, 2^32 - 2], speak another wire version, or claim an id
        that another node claims in this batch or already holds in ``known`` (node -> client id) are left out.
        Those of the last kind are added to ``held`` (node -> the id it claims) when given: a caller may ask them again once the node
        holding their id is gone (a restarted SuperNode listed before its old node id lapses).
        A node answering as the Paillier key holder is accepted (into :attr:`decryptors`) only if it signs this
        exchange's fresh nonce with the key holder's registered Ed25519 key, ``key_holder_key``.
        """
        nodes = list(self._grid.get_node_ids()) if nodes is None else list(nodes)
        nonce = os.urandom(32)
        replies, failed, _ = self._exchange({node: {"kind": Kind.HELLO, "nonce": nonce} for node in nodes},
                                         timeout if timeout is not None else self._stage_timeout, "hello")
        for node, reason in failed.items():
            LOGGER.warning("node %d is left out: %s", node, reason)
        registered: dict[int, int] = {}
        owners: dict[int, int] = {client: node for node, client in (known or {}).items()}
        contested: set[int] = set()
        for node, reply in sorted(replies.items()):
            client, wire = reply.get("client"), reply.get("wire")
            if reply.get("role") == "decryptor":
                proof = reply.get("proof")
                try:
                    if key_holder_key is None or not isinstance(proof, bytes) or wire != WIRE_VERSION:
                        raise CryptoError("no proof")
                    verify_signature(key_holder_key, proof, key_holder_proof_payload(nonce))
                except CryptoError:
                    LOGGER.warning("node %d claims to be the Paillier key holder without its key; left out", node)
                    continue
                if node not in self.decryptors:
                    self.decryptors.append(node)
                continue
            if wire != WIRE_VERSION or not isinstance(client, int) or isinstance(client, bool) \
                    or not 0 <= client <= MAX_CLIENT_ID:
                LOGGER.warning("node %d is left out: it speaks wire version %r, client id %r", node, wire, client)
                continue
            if client in owners or client in contested:
                # Two nodes claim one id: the one already registered keeps it; a new pair are both left out.
                waits = held is not None and client in owners and owners[client] not in registered
                LOGGER.warning("node %d claims client id %d, which node %s claims too; it is %s", node, client,
                               owners.get(client, "another"), "asked again later" if waits else "left out")
                if owners.get(client) in registered:
                    registered.pop(owners.pop(client))
                    contested.add(client)
                elif waits and held is not None:
                    held[node] = client
                continue
            owners[client] = node
            registered[node] = client
        return registered

    # ---- one round --------------------------------------------------------------------------------
    def run_round(self, config: RoundConfig, nodes: Mapping[int, int], task: Mapping[str, Any], *,
                  decryptor: int | None = None, name: str | None = None,
                  start_records: Mapping[int, Any] | None = None) -> RoundReport:
        """Run ``config`` with ``nodes`` (client id -> Flower node id) and the public ``task`` fields.

        ``start_records`` (Flower node id -> RecordDict) go beside the round start to each node: the drop-in
        sends a strategy's fit instructions this way. ``task`` and the start records are the round's task; they
        must be the same for every node, and the configuration binds their digest (filled in here when
        ``config`` has none; the report's configuration is the one that ran).

        A Paillier round with a separate decryptor sends its decryption request to the ``decryptor`` node.
        ``name`` (default ``round <id>``) prefixes the stage names in progress reports and Flower's group ids.
        Returns the same :class:`RoundReport` as the simulator; an aborted round
        has ``abort`` set and no result, and every client still in it is told
        to forget its secrets.
        """
        if set(nodes) != set(config.clients):
            raise LocalProtocolError("every client of the round needs exactly one node")
        # The round's task (the public fields and the records beside the round start) is bound into the
        # configuration, so every client can check it was given the same as the others.
        digests = {task_digest(task, (start_records or {}).get(node)) for node in nodes.values()}
        if len(digests) != 1:
            raise LocalProtocolError("the round's clients would be given different tasks; one round has one task")
        (digest,) = digests
        if not config.task_digest:
            config = dataclasses.replace(config, task_digest=digest)
        elif config.task_digest != digest:
            raise LocalProtocolError("the configuration binds another task than the one the round sends")
        if config.paillier is not None and not config.paillier.keys.threshold_decryption and decryptor is None:
            raise LocalProtocolError("a Paillier round with a separate decryptor needs the decryptor's node")
        clock = time.perf_counter
        transcript: list[TranscriptRecord] = []
        rejected: list[PeerProtocolError] = []
        client_errors: dict[int, FedSecureError] = {}
        client_reports: dict[int, dict[str, float]] = {}
        stage_seconds: dict[str, float] = defaultdict(float)
        client_of: dict[int, int] = {node: client for client, node in nodes.items()}
        if decryptor is not None:
            client_of[decryptor] = DECRYPTOR
        started = clock()
        server = create_server_session(config)
        outgoing = server.start()
        stage_seconds["setup"] += clock() - started
        config_bytes = encode_round_config(config)
        abort: RoundAborted | None = None
        decryptor_error: FedSecureError | None = None
        last_answered: set[int] = set()
        first = True
        while True:
            stage = server.stage
            label = stage.label
            started = clock()
            contents: dict[int, dict[str, Any]] = {}
            for message in outgoing:
                recipient = message.recipient
                if recipient == DECRYPTOR and decryptor is not None:
                    data = encode_message(message)
                    contents[decryptor] = {"kind": Kind.DECRYPT, "round": config.round_id, "stage": label,
                                           "config": config_bytes, "message": data}
                    transcript.append(TranscriptRecord(label, SERVER, "decryptor", type(message).__name__,
                                                       len(data), public_view(message) if self._record_fields
                                                       else None))
                    continue
                if recipient in client_errors:
                    continue
                data = encode_message(message)
                content: dict[str, Any] = {"kind": Kind.STEP, "round": config.round_id, "stage": label,
                                           "message": data}
                if isinstance(message, RoundStart):
                    content = dict(task) | {"kind": Kind.ROUND_START, "round": config.round_id, "stage": label,
                                            "config": config_bytes, "client": recipient, "message": data}
                contents[nodes[recipient]] = content
                transcript.append(TranscriptRecord(label, SERVER, recipient, type(message).__name__, len(data),
                                                   public_view(message) if self._record_fields else None))
            stage_seconds[label] += clock() - started
            timeout = self._start_timeout if first else self._stage_timeout
            replies, failed, crashed = self._exchange(contents, timeout,
                                                      f"{name or f'round {config.round_id}'} {label}",
                                                      start_records if first else None)
            first = False
            last_answered = {client_of[node] for node in replies if node != decryptor}
            started = clock()
            for node, reason in failed.items():
                if node == decryptor:
                    decryptor_error = ClientError(DECRYPTOR, f"the decryptor: {reason}", unreachable=True)
                    continue
                client_errors[client_of[node]] = ClientError(client_of[node], reason,
                                                             unreachable=node not in crashed)
            for node, reply in replies.items():
                client = client_of[node]
                if node == decryptor and not isinstance(reply.get("message"), bytes):
                    decryptor_error = ClientError(DECRYPTOR, f"the decryptor refused: {reply.get('error')}")
                    continue
                payload = reply.get("message")
                if not isinstance(payload, bytes):
                    reason = str(reply.get("error", "the reply carries no fedsecure message"))
                    client_errors[client] = ClientError(client, reason)
                    continue
                data = payload
                reported = {key[len("report-"):]: value for key, value in reply.items()
                            if key.startswith("report-") and isinstance(value, float)}
                if reported:
                    client_reports[client] = reported
                fields = None
                try:
                    decoded = decode_message(data, max_bytes=server.max_message_bytes)
                    type_name = type(decoded).__name__
                    if self._record_fields:
                        fields = public_view(decoded)
                except FedSecureError as error:
                    type_name = "undecodable"
                    if self._record_fields:
                        fields = {"undecodable": type(error).__name__}
                party: int | str = "decryptor" if node == decryptor else client
                transcript.append(TranscriptRecord(label, party, SERVER, type_name, len(data), fields))
                try:
                    server.receive_bytes(data, sender=client)
                except PeerProtocolError as error:
                    LOGGER.warning("round %d, %s: %s", config.round_id, label, error)
                    rejected.append(error)
            try:
                outgoing = server.close_stage()
            except RoundAborted as error:
                abort = error
            stage_seconds[label] += clock() - started
            if abort is not None or server.stage is Stage.DONE:
                break
        # Tell every client that did not finish (the round aborted, it dropped, or it answered late) that the round
        # is over, so none keeps its keys, seeds, shares or input; those that answered the last stage are done.
        if abort is not None:
            LOGGER.warning("round %d aborted: %s", config.round_id, abort)
            unfinished = list(config.clients)
        else:
            unfinished = [c for c in config.clients if c not in last_answered or c in client_errors]
        self._notify_abort(config, [nodes[c] for c in unfinished])
        for client, failure in sorted(client_errors.items()):
            LOGGER.info("round %d: %s", config.round_id, failure)
        return RoundReport(config=config, result=None if abort is not None else server.result(), abort=abort,
                           transcript=transcript, client_seconds={}, server_seconds=sum(stage_seconds.values()),
                           server_stage_seconds=dict(stage_seconds), client_stage_seconds={}, rejected=rejected,
                           client_errors=client_errors, client_reports=client_reports, decryptor_error=decryptor_error)

    def _notify_abort(self, config: RoundConfig, nodes: list[int]) -> None:
        from flwr.app import ConfigRecord, RecordDict

        if not nodes:
            return
        messages = [self._grid.create_message(RecordDict({RECORD: ConfigRecord({"kind": Kind.ABORT,
                                                                                "round": config.round_id})}),
                                              self._message_type, node, f"round {config.round_id} abort",
                                              ttl=self._stage_timeout)
                    for node in nodes]
        # No reply is awaited: a client that never hears this forgets its round at the next round's start.
        self._grid.push_messages(messages)




