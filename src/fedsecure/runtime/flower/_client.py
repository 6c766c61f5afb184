"""The client half of the Flower runtime: a ClientApp that runs fedsecure's client sessions.

Flower starts a fresh ClientApp process for every message and keeps only the
node's ``context.state`` in between, so the client session is exported into
that state after each message (:meth:`~fedsecure.protocols.ClientSession.export_state`)
and restored from it at the next. The state never leaves the SuperNode's
device; it is deleted as soon as the round ends, aborts, or a new round starts.

Threat model: the server is not trusted to choose the round's parameters. A
client refuses a round whose protocol it has not allowed (so a server cannot
downgrade it to the plaintext baseline), whose threshold or neighbourhood is
smaller than its own :class:`ThreatModel` demands, or whose encoding does not
match the digest the configuration binds.
"""

from __future__ import annotations

import contextlib
import logging
import math
import struct
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..._errors import FedSecureError, LocalProtocolError, PeerFault, PeerProtocolError
from ...crypto import SigningKey
from ...dp import DistributedDPEncoding, DistributedPlan
from ...encoding import ClipMode, EncodedUpdate, EncodingConfig
from ...pipeline import encode_update
from ...protocols import (
    WIRE_VERSION,
    ClientIdentity,
    DecryptionRequest,
    PaillierCredentials,
    PaillierKeyHolder,
    ProtocolKind,
    RoundConfig,
    RoundStart,
    ThreatModel,
    choose_parameters,
    complete_graph_parameters,
    create_client_session,
    decode_message,
    decode_round_config,
    encode_message,
    restore_client_session,
)
from .._simulate import client_data
from ._answers import AnswerLedger
from ._common import JOINED_RECORD, MAX_TASK_BYTES, RECORD, STATE_RECORD, Kind, key_holder_proof_payload, task_digest

__all__ = ["ClientPolicy", "ClientUpdate", "ClientJob", "FedSecureClient", "client_app", "synthetic_job",
           "client_id_of", "SECURE_PROTOCOLS"]

LOGGER = logging.getLogger("fedsecure.flower")
Credentials = PaillierCredentials | ClientIdentity
#: How a refusal names the server (not a client id).
SERVER_PEER: Any = "server"
_SERVER = SERVER_PEER
SECURE_PROTOCOLS = frozenset({ProtocolKind.SECAGG, ProtocolKind.SECAGG_PLUS})


@dataclass(frozen=True)
class ClientUpdate:
    """What a job produced for one round: the float update, for weighted averaging its weight, and public figures
    the client reports to the server with its first message (``report``, say its local-DP epsilon)."""

    vector: np.ndarray
    weight: int | None = None
    report: Mapping[str, float] = field(default_factory=dict)


class ClientJob(Protocol):
    """Computes this client's update for a round from its node context and the round's public task."""

    def __call__(self, context: Any, client_id: int, task: Mapping[str, Any]) -> ClientUpdate: ...


@dataclass(frozen=True)
class ClientPolicy:
    """What a client accepts from the server.

    ``protocols`` are the protocols it takes part in (the plaintext baseline
    only if listed); ``threat`` is the threat model its threshold and
    neighbourhood must meet, recomputed from the cohort size (a server cannot
    lower them); ``max_vector_length`` bounds the work a server can ask for;
    ``allow_insecure_keys`` accepts Paillier moduli below 2048 bits (tests only).
    ``require_dp`` (``local`` and/or ``distributed``; empty: no requirement) is
    the differential privacy a client insists on, with a noise multiplier of at
    least ``min_noise_multiplier``: DP-SGD's for local DP, the plan's for
    distributed DP (its noise over the expected number of shares). Central DP
    is the server's own noise, which a client cannot see, so it never meets a
    requirement.
    """

    protocols: frozenset[ProtocolKind] = SECURE_PROTOCOLS
    threat: ThreatModel = field(default_factory=ThreatModel)
    max_vector_length: int = 100_000_000
    allow_insecure_keys: bool = False
    require_dp: frozenset[str] = frozenset()
    min_noise_multiplier: float = 0.0

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, Any]) -> ClientPolicy:
        """The policy a SuperNode's ``--node-config`` sets: ``fedsecure-protocols`` (comma-separated, default
        ``secagg,secagg+``), ``fedsecure-dropout-fraction``, ``fedsecure-corrupt-fraction``,
        ``fedsecure-allow-insecure-keys``, ``fedsecure-require-dp`` (comma-separated ``local``, ``distributed``) and
        ``fedsecure-min-noise-multiplier``."""
        names = str(node_config.get("fedsecure-protocols", "secagg,secagg+"))
        try:
            protocols = frozenset(ProtocolKind(name.strip()) for name in names.split(",") if name.strip())
        except ValueError as error:
            raise LocalProtocolError(f"fedsecure-protocols: {error}") from None
        defaults = ThreatModel()
        threat = ThreatModel(
            dropout_fraction=float(node_config.get("fedsecure-dropout-fraction", defaults.dropout_fraction)),
            corrupt_fraction=float(node_config.get("fedsecure-corrupt-fraction", defaults.corrupt_fraction)))
        insecure = str(node_config.get("fedsecure-allow-insecure-keys", "false")).lower() in ("1", "true", "yes")
        levels = frozenset(level.strip() for level in str(node_config.get("fedsecure-require-dp", "")).split(",")
                           if level.strip())
        if not levels <= {"local", "distributed"}:
            raise LocalProtocolError(f"fedsecure-require-dp: {sorted(levels)} (local, distributed)")
        return cls(protocols=protocols, threat=threat, allow_insecure_keys=insecure, require_dp=levels,
                   min_noise_multiplier=float(node_config.get("fedsecure-min-noise-multiplier", 0.0)))

    def check_privacy(self, encoding: EncodingConfig | DistributedDPEncoding, record: Mapping[str, Any],
                      config: RoundConfig) -> None:
        """Refuse (naming the server) a round without the differential privacy this client requires.

        For distributed DP the client computes the noise multiplier itself, from
        the local variance it will add (never from a field the server states),
        over the honest shares the smallest sum the server can unmask holds (the
        threshold, at most the plan's expected number, less the colluders its
        own threat model tolerates), and refuses a plan that expects more shares
        than the cohort it is shown has: each share would be too small. (Fewer
        is how a plan covers dropouts: each client adds more.)
        """
        if isinstance(encoding, DistributedDPEncoding) and encoding.plan.expected_clients > len(config.clients):
            raise PeerProtocolError(
                PeerFault.REFUSED_BY_POLICY, peer=_SERVER,
                detail=f"the distributed-DP plan expects {encoding.plan.expected_clients} noise shares, the cohort "
                f"has only {len(config.clients)}")
        if not self.require_dp:
            return
        if isinstance(encoding, DistributedDPEncoding):
            # The smallest sum the server can unmask holds `threshold` shares (it may drop the others), and the
            # colluding clients this client's threat model tolerates know (and subtract) their own: the honest
            # shares left are what this client's requirement is measured against.
            plan = encoding.plan
            level = "distributed"
            colluders = math.floor(self.threat.corrupt_fraction * len(config.clients))
            noise = plan.noise_multiplier_for(max(1, min(plan.expected_clients, config.threshold) - colluders))
        elif record.get("dp-level") == "local":
            value = record.get("dp-noise-multiplier", 0.0)
            level = "local"
            noise = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0
        else:
            # A round claims distributed DP only through a distributed-DP encoding, never through a field.
            level, noise = "none", 0.0
        if level not in self.require_dp or not noise > 0 or noise < self.min_noise_multiplier:
            raise PeerProtocolError(
                PeerFault.REFUSED_BY_POLICY, peer=_SERVER,
                detail=f"this client requires {' or '.join(sorted(self.require_dp))} DP with a noise multiplier of at "
                f"least {self.min_noise_multiplier}; the round offers {level} DP at {noise:.4g}")

    def check(self, config: RoundConfig) -> None:
        """Refuse (with :class:`PeerProtocolError` naming the server) a configuration below this policy."""
        def refuse(detail: str) -> PeerProtocolError:
            return PeerProtocolError(PeerFault.REFUSED_BY_POLICY, peer=_SERVER, detail=detail)

        if config.protocol not in self.protocols:
            raise refuse(f"protocol {config.protocol.value} is not allowed by this client "
                         f"(allowed: {', '.join(sorted(p.value for p in self.protocols))})")
        if config.vector_length > self.max_vector_length:
            raise refuse(f"a vector of {config.vector_length} values, above this client's limit")
        n = len(config.clients)
        if config.protocol is ProtocolKind.PLAINTEXT:
            return
        if config.protocol is ProtocolKind.SECAGG_PLUS:
            wanted = choose_parameters(n, self.threat, active=config.active)
        else:
            wanted = complete_graph_parameters(n, self.threat)
        if config.threshold < wanted.threshold or config.degree < min(wanted.degree, n):
            raise refuse(f"threshold {config.threshold} and neighbourhood {config.degree} are below this client's "
                         f"threat model ({wanted.threshold} and {min(wanted.degree, n)} for {n} clients)")


def client_id_of(context: Any) -> int:
    """This node's fedsecure client id: ``fedsecure-client-id`` or else ``partition-id`` from its node config."""
    config = context.node_config
    value = config.get("fedsecure-client-id", config.get("partition-id"))
    if value is None:
        raise LocalProtocolError("the node config needs `partition-id` or `fedsecure-client-id`")
    return int(value)


def synthetic_job(context: Any, client_id: int, task: Mapping[str, Any]) -> ClientUpdate:
    """The simulated update of ``fedsecure simulate``: uniform in [-1, 1], reproducible from (seed, client id)."""
    return ClientUpdate(client_data(int(task["task-seed"]), client_id, int(task["encoding-dimension"])))


def _integer(record: Mapping[str, Any], key: str) -> int:
    value = record.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise PeerProtocolError(PeerFault.MALFORMED, peer=_SERVER, detail=f"`{key}` is not an integer")
    return value


def _bounded(record: Mapping[str, Any], key: str, low: int, high: int) -> int:
    value = _integer(record, key)
    if not low <= value <= high:
        raise PeerProtocolError(PeerFault.MALFORMED, peer=_SERVER, detail=f"`{key}` = {value} outside [{low}, {high}]")
    return value


def _number(record: Mapping[str, Any], key: str) -> float:
    value = record.get(key)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise PeerProtocolError(PeerFault.MALFORMED, peer=_SERVER, detail=f"`{key}` is not a finite number")
    return float(value)


def _encoding_from(record: Mapping[str, Any], config: RoundConfig,
                   policy: ClientPolicy) -> EncodingConfig | DistributedDPEncoding:
    """The round's encoding from the record's fields, each checked against the configuration and this client's
    limits before anything is allocated."""
    if record.get("encoding-kind") == "distributed-dp":
        plan = DistributedPlan.from_json(record.get("dp-plan"), max_dimension=policy.max_vector_length)
        if plan.padded_dimension != config.vector_length:
            raise PeerProtocolError(PeerFault.WRONG_SIZE, peer=_SERVER,
                                    detail=f"a plan of {plan.padded_dimension} values for a round of "
                                    f"{config.vector_length}")
        seed = record.get("dp-rotation-seed")
        if not isinstance(seed, bytes) or len(seed) != 32:
            raise PeerProtocolError(PeerFault.MALFORMED, peer=_SERVER, detail="`dp-rotation-seed` is not 32 bytes")
        return plan.encoding(seed)
    max_weight = _bounded(record, "encoding-max-weight", 0, 2**32)
    dimension = _bounded(record, "encoding-dimension", 1, policy.max_vector_length)
    if dimension + (1 if max_weight else 0) != config.vector_length:
        raise PeerProtocolError(PeerFault.WRONG_SIZE, peer=_SERVER,
                                detail=f"an encoding of {dimension} values for a round of {config.vector_length}")
    clip_mode = record.get("encoding-clip-mode")
    return EncodingConfig(dimension=dimension, clients=_bounded(record, "encoding-clients", 1, 2**32),
                          clip=_number(record, "encoding-clip"), scale=_number(record, "encoding-scale"),
                          clip_mode=ClipMode(clip_mode if isinstance(clip_mode, str) else ""),
                          max_weight=max_weight or None, ring_bits=_bounded(record, "encoding-ring-bits", 1, 64))


class FedSecureClient:
    """Handles one Flower message for one node: the body of the ClientApp.

    ``job`` computes the node's update; ``policy`` is what the client accepts
    (by default, read from each node's config: :meth:`ClientPolicy.from_node_config`);
    ``credentials`` loads the node's long-lived secrets (its
    :class:`ClientIdentity` for SecAgg's active-adversary variant, its
    :class:`PaillierCredentials` for Paillier) and ``save_credentials``
    persists them after every message (the configurations an identity joined,
    the rounds a key share decrypted); ``key_holder`` and ``save_key_holder``
    do the same for a node that is the separate Paillier decryptor, and
    ``key_holder_signer`` gives that node's Ed25519 key (it signs the server's
    nonce at registration, to show it is the registered key holder); ``lock``
    is held around each whole message (an exclusive lock on those files, so
    that concurrent ClientApps of one node cannot both pass a check before
    either records its claim);
    ``answers`` gives the node's :class:`AnswerLedger`: each protocol step is
    recorded there before it is answered, and a second answer to the same step
    of the same configuration is refused (a stale ``context.state`` cannot make
    the client unmask or sign twice); use it with ``lock``.
    ``observe`` (tests and audits on the client's own device) sees each
    encoded input before it is masked.
    """

    def __init__(self, job: ClientJob, *, policy: ClientPolicy | None = None,
                 credentials: Callable[[Any], Credentials | None] | None = None,
                 save_credentials: Callable[[Any, Credentials], None] | None = None,
                 key_holder: Callable[[Any], PaillierKeyHolder | None] | None = None,
                 save_key_holder: Callable[[Any, PaillierKeyHolder], None] | None = None,
                 key_holder_signer: Callable[[Any], SigningKey] | None = None,
                 lock: Callable[[Any], AbstractContextManager[None]] | None = None,
                 answers: Callable[[Any], AnswerLedger] | None = None,
                 observe: Callable[[Any, int, int, EncodedUpdate], None] | None = None) -> None:
        self._job = job
        self._policy = policy
        self._credentials = credentials
        self._save_credentials = save_credentials
        self._key_holder = key_holder
        self._save_key_holder = save_key_holder
        self._key_holder_signer = key_holder_signer
        self._lock = lock
        self._answers = answers
        self._observe = observe
        self._report: dict[str, float] = {}
        self._content: Any = None

    def handle(self, message: Any, context: Any) -> Any:
        """Process one Flower message; the reply carries fedsecure bytes or the reason the client refused."""
        from flwr.app import ConfigRecord, Message, RecordDict

        record = message.content.config_records.get(RECORD)
        kind = record.get("kind") if record is not None else None
        self._content = message.content
        reply: dict[str, Any]
        try:
            with self._lock(context) if self._lock is not None else contextlib.nullcontext():
                reply = self._dispatch(record, kind, context)
        except (FedSecureError, ValueError, KeyError, TypeError, ArithmeticError, struct.error, OSError,
                RecursionError) as error:
            # The client refuses and forgets the round; the server sees why, and counts it as dropped. (Malformed
            # fields a parser did not name, a credential file that cannot be locked or written, are refused the
            # same way rather than crash the ClientApp.)
            self._forget(context)
            LOGGER.warning("client %s refused a %s message: %s", context.node_config.get("partition-id", "?"),
                           kind, error)
            reply = {"error": f"{type(error).__name__}: {error}"}
        return Message(RecordDict({RECORD: ConfigRecord(reply)}), reply_to=message)

    def _dispatch(self, record: Any, kind: Any, context: Any) -> dict[str, Any]:
        """The reply's fields for one message of each kind; raises to refuse."""
        reply: dict[str, Any]
        if record is None:
            raise PeerProtocolError(PeerFault.MALFORMED, peer=_SERVER, detail=f"no `{RECORD}` record")
        if kind == Kind.HELLO:
            holder = self._key_holder(context) if self._key_holder is not None else None
            if holder is None and self._credentials is not None:
                self._credentials(context)  # A node whose credentials do not match its id says so now.
            reply = {"client": client_id_of(context) if holder is None else -1, "wire": WIRE_VERSION,
                     "role": "decryptor" if holder is not None else "client"}
            nonce = record.get("nonce")
            if holder is not None and self._key_holder_signer is not None and isinstance(nonce, bytes) \
                    and len(nonce) == 32:
                reply["proof"] = self._key_holder_signer(context).sign(key_holder_proof_payload(nonce))
        elif kind == Kind.DECRYPT:
            reply = {"message": self._decrypt(record, context)}
        elif kind == Kind.ROUND_START:
            self._report = {}
            reply = {"message": self._start(record, context)} | self._report
        elif kind == Kind.STEP:
            reply = {"message": self._step(record, context)}
        elif kind == Kind.ABORT:
            self._forget(context)
            reply = {}
        else:
            raise PeerProtocolError(PeerFault.MALFORMED, peer=_SERVER, detail=f"unknown kind {kind!r}")
        return reply

    def _forget(self, context: Any) -> None:
        if STATE_RECORD in context.state.config_records:
            del context.state.config_records[STATE_RECORD]

    def _start(self, record: Mapping[str, Any], context: Any) -> bytes:
        self._forget(context)  # A new round: whatever an unfinished one left behind goes.
        config_bytes = record.get("config")
        if not isinstance(config_bytes, bytes):
            raise PeerProtocolError(PeerFault.MALFORMED, peer=_SERVER, detail="no round configuration")
        policy = self._policy or ClientPolicy.from_node_config(context.node_config)
        config = decode_round_config(config_bytes, allow_insecure_keys=policy.allow_insecure_keys)
        client_id = _integer(record, "client")
        pinned = context.node_config.get("fedsecure-client-id")
        if pinned is not None and int(pinned) != client_id:
            # A node with a pinned id (the active variant's identity registry lists it) answers to no other.
            raise PeerProtocolError(PeerFault.WRONG_RECIPIENT, peer=_SERVER,
                                    detail=f"addressed to client {client_id}, this node is client {pinned}")
        if not config.in_cohort(client_id):
            raise PeerProtocolError(PeerFault.WRONG_RECIPIENT, peer=_SERVER,
                                    detail=f"client {client_id} is not in the round's cohort")
        policy.check(config)
        if task_digest(record, self._content) != config.task_digest:
            # Checked before any work: a client given other instructions than the cohort (another model, say, so
            # that everyone else's update vanishes from the sum) refuses instead of training.
            raise PeerProtocolError(PeerFault.CONFIG_MISMATCH, peer=_SERVER,
                                    detail="the round's task (model, instructions, task fields) is not the one its "
                                    "configuration binds")
        joined = self._joined(context)
        if config.digest.hex() in joined:
            # Each configuration is joined once: a rerun would mask the same input again under fresh keys.
            raise PeerProtocolError(PeerFault.WRONG_ROUND, peer=_SERVER,
                                    detail=f"round {config.round_id} of this configuration was already joined")
        task_size = sum(len(v) for k, v in record.items() if k.startswith("task-") and isinstance(v, bytes))
        if task_size > MAX_TASK_BYTES:
            raise PeerProtocolError(PeerFault.OVERSIZED, peer=_SERVER, detail=f"a task of {task_size} bytes")
        try:
            encoding = _encoding_from(record, config, policy)
            digest = encoding.digest()
        except PeerProtocolError:
            raise
        except (KeyError, ValueError, TypeError, ArithmeticError, struct.error, FedSecureError) as error:
            raise PeerProtocolError(PeerFault.MALFORMED, peer=_SERVER,
                                    detail=f"encoding parameters: {type(error).__name__}: {error}") from None
        if digest != config.encoding_digest:
            raise PeerProtocolError(PeerFault.CONFIG_MISMATCH, peer=_SERVER,
                                    detail="the encoding parameters do not match the configuration's digest")
        if encoding.vector_length != config.vector_length or encoding.dimension > policy.max_vector_length:
            # Checked before the job runs: the encoding's dimension sizes the work a server asks of the client.
            raise PeerProtocolError(PeerFault.WRONG_SIZE, peer=_SERVER,
                                    detail=f"an encoding of {encoding.vector_length} values for a round of "
                                    f"{config.vector_length} (this client's limit: {policy.max_vector_length})")
        policy.check_privacy(encoding, record, config)
        weights = record.get("task-weights")
        if weights is not None and (not isinstance(weights, bytes) or len(weights) != 8 * encoding.dimension):
            raise PeerProtocolError(PeerFault.WRONG_SIZE, peer=_SERVER,
                                    detail=f"the global model is not {encoding.dimension} float64 values")
        credentials = self._credentials(context) if self._credentials is not None else None
        if isinstance(credentials, ClientIdentity) and config.digest in credentials.joined:
            raise PeerProtocolError(PeerFault.WRONG_ROUND, peer=_SERVER,
                                    detail="this identity already joined this configuration")
        try:
            update = self._job(context, client_id, record)
        except FedSecureError:
            raise
        except Exception as error:  # noqa: BLE001 (the user's job failed: the client refuses, naming why)
            if not isinstance(encoding, DistributedDPEncoding):
                raise LocalProtocolError(f"the job failed: {type(error).__name__}: {error}") from None
            # Distributed DP: a job can fail because of its data, and whether a client adds its noise share must
            # not depend on its data. It takes part with a zero update and its full share, as a NaN update does.
            LOGGER.warning("client %s: the job failed (%s); it sends a zero update with its noise share",
                           client_id, type(error).__name__)
            update = ClientUpdate(np.zeros(encoding.dimension))
        # Distributed DP: a client whose update is unusable still adds its noise share (whether it can must not
        # depend on its data), with its update counted as zero; otherwise an unusable update is refused here.
        encoded = encode_update(encoding, update.vector, update.weight, client=client_id)
        self._report = {f"report-{key}": float(value) for key, value in update.report.items()}
        if self._observe is not None:
            self._observe(context, config.round_id, client_id, encoded)
        session = create_client_session(config, client_id, encoded, credentials)
        if credentials is not None:
            if self._save_credentials is None:
                raise LocalProtocolError("credentials that are loaded must be saved (save_credentials): an identity "
                                         "must remember every configuration it joined")
            # An identity joined this configuration: persisted before anything is signed with it.
            self._save_credentials(context, credentials)
        self._remember(context, joined, config.digest.hex())
        message = self._decode(record, config, RoundStart)
        if self._answers is not None:
            self._answers(context).claim(config.digest, session.state.value)
        replies = session.receive(message)
        self._save(context, config_bytes, session.export_state())
        return self._single(replies)

    @staticmethod
    def _joined(context: Any) -> list[str]:
        record = context.state.config_records.get(JOINED_RECORD)
        return list(record["digests"]) if record is not None else []

    @staticmethod
    def _remember(context: Any, joined: list[str], digest: str) -> None:
        from flwr.app import ConfigRecord

        # The configurations this node joined in this run (the most recent 10,000; round ids keep growing).
        context.state.config_records[JOINED_RECORD] = ConfigRecord({"digests": (joined + [digest])[-10_000:]})

    def _step(self, record: Mapping[str, Any], context: Any) -> bytes:
        from flwr.app import ConfigRecord

        saved = context.state.config_records.get(STATE_RECORD)
        if saved is None:
            raise PeerProtocolError(PeerFault.OUT_OF_STAGE, peer=_SERVER, detail="no round in progress on this node")
        policy = self._policy or ClientPolicy.from_node_config(context.node_config)
        config = decode_round_config(saved["config"], allow_insecure_keys=policy.allow_insecure_keys)
        if _integer(record, "round") != config.round_id:
            raise PeerProtocolError(PeerFault.WRONG_ROUND, peer=_SERVER,
                                    detail=f"round {record.get('round')}, this node is in round {config.round_id}")
        credentials = self._credentials(context) if self._credentials is not None else None
        session = restore_client_session(config, saved["session"], credentials)
        message = self._decode(record, config, None)
        if self._answers is not None:
            self._answers(context).claim(config.digest, session.state.value)
        try:
            replies = session.receive(message)
        finally:
            if credentials is not None and self._save_credentials is not None:
                # A key share records the round it decrypted, even when the session then fails.
                self._save_credentials(context, credentials)
        if session.state.value in ("done", "aborted"):
            self._forget(context)
        else:
            context.state.config_records[STATE_RECORD] = ConfigRecord(
                {"config": saved["config"], "session": session.export_state()})
        return self._single(replies)

    def _decrypt(self, record: Mapping[str, Any], context: Any) -> bytes:
        holder = self._key_holder(context) if self._key_holder is not None else None
        if holder is None:
            raise PeerProtocolError(PeerFault.WRONG_RECIPIENT, peer=_SERVER, detail="this node holds no Paillier key")
        config_bytes = record.get("config")
        if not isinstance(config_bytes, bytes):
            raise PeerProtocolError(PeerFault.MALFORMED, peer=_SERVER, detail="no round configuration")
        policy = self._policy or ClientPolicy.from_node_config(context.node_config)
        config = decode_round_config(config_bytes, allow_insecure_keys=policy.allow_insecure_keys)
        request = self._decode(record, config, DecryptionRequest)
        try:
            reply = holder.receive(config, request)
        finally:
            if self._save_key_holder is not None:
                # The round counts as decrypted once the request passed its checks: persisted whatever follows.
                self._save_key_holder(context, holder)
        return encode_message(reply)

    def _save(self, context: Any, config_bytes: bytes, state: bytes) -> None:
        from flwr.app import ConfigRecord

        context.state.config_records[STATE_RECORD] = ConfigRecord({"config": config_bytes, "session": state})

    @staticmethod
    def _decode(record: Mapping[str, Any], config: RoundConfig, expected: type | None) -> Any:
        data = record.get("message")
        if not isinstance(data, bytes):
            raise PeerProtocolError(PeerFault.MALFORMED, peer=_SERVER, detail="no fedsecure message")
        limit = 64 + len(config.clients) * 256 + config.vector_length * 8 + 1024
        if config.paillier is not None:
            # A decryption request carries every contribution: the ciphertexts and a signature per client.
            per_client = config.paillier.ciphertexts * (config.paillier.keys.key_bits // 4 + 8) + 256
            limit += (len(config.clients) + 1) * per_client
        message = decode_message(data, max_bytes=limit)
        if expected is not None and not isinstance(message, expected):
            raise PeerProtocolError(PeerFault.OUT_OF_STAGE, peer=_SERVER,
                                    detail=f"a round starts with RoundStart, not {type(message).__name__}")
        return message

    @staticmethod
    def _single(replies: list[Any]) -> bytes:
        if len(replies) != 1:
            raise LocalProtocolError(f"a client session answered with {len(replies)} messages")
        return encode_message(replies[0])


def client_app(job: ClientJob = synthetic_job, **options: Any) -> Any:
    """A Flower ``ClientApp`` that answers fedsecure's ``query.fedsecure`` messages with :class:`FedSecureClient`.

    ``options`` are :class:`FedSecureClient`'s (``policy``, ``credentials``, ``save_credentials``, ``key_holder``,
    ``save_key_holder``, ``observe``).
    """
    from flwr.clientapp import ClientApp

    handler = FedSecureClient(job, **options)
    app = ClientApp()

    @app.query("fedsecure")
    def query(message: Any, context: Any) -> Any:
        return handler.handle(message, context)

    return app
