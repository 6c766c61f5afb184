"""Attacks on the Paillier protocols: a curious key holder, replayed ciphertexts, split threshold holders, keys
the server chose.

Each runs against fedsecure's protective configuration and, where one exists, a
weakened one, with real sessions and real keys (512-bit moduli, for speed: the
key size plays no part in any of these attacks). When an attack succeeds, the
victim's update is reconstructed from what the attackers hold and compared with
the truth (relative L2 error of the decoded update).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from .._errors import FedSecureError, LocalProtocolError, PeerProtocolError
from ..crypto import (
    ciphertexts_from_bytes,
    ciphertexts_to_bytes,
    combine_partial_decryptions,
    generate_paillier_keypair,
    multiply_ciphertexts,
)
from ..encoding import ClipMode, EncodedUpdate, EncodingConfig, Quantizer
from ..protocols import (
    DECRYPTOR,
    AggregateApproval,
    AggregateRequest,
    CiphertextCommitment,
    Commitment,
    DecryptionRequest,
    EncryptedInput,
    PaillierDeployment,
    PartialDecryption,
    PaillierKeys,
    ProtocolKind,
    RevealRequest,
    RoundConfig,
    RoundStart,
    ServerSession,
    Stage,
    SurvivorSignature,
    ThreatModel,
    approval_payload,
    commitment_payload,
    commitment_set_digest,
    contribution_payload,
    create_client_session,
    create_server_session,
    plaintext_proof_context,
)
from ._attacks import Outcome

__all__ = ["PAILLIER_ATTACKS"]

_Reply = TypeVar("_Reply")

KEY_BITS = 512
DIMENSION = 64
THREAT = ThreatModel()
#: A deployment that understates the colluders: it tolerates none, while the attack has one or two.
UNDERSTATED = ThreatModel(corrupt_fraction=0.0)


@dataclass
class _Setup:
    deployment: PaillierDeployment
    encoding: EncodingConfig
    quantizer: Quantizer
    floats: dict[int, np.ndarray]
    updates: dict[int, EncodedUpdate]


def _setup(protocol: ProtocolKind, clients: int, threat: ThreatModel, seed: int = 0) -> _Setup:
    deployment = PaillierDeployment.create(protocol, range(clients), key_bits=KEY_BITS, insecure=True, threat=threat)
    encoding = EncodingConfig.fit_scale(dimension=DIMENSION, clients=clients, clip=1.0,
                                        clip_mode=ClipMode.PER_COORDINATE)
    quantizer = Quantizer(encoding)
    rng = np.random.default_rng(seed)  # noqa: csprng-ok (simulated updates, not a secret)
    floats = {c: rng.uniform(-1, 1, DIMENSION) for c in range(clients)}
    return _Setup(deployment, encoding, quantizer, floats, {c: quantizer.encode(v) for c, v in floats.items()})


def _config(setup: _Setup, cohort: Sequence[int], round_id: int, threat: ThreatModel) -> RoundConfig:
    protocol = ProtocolKind.PAILLIER_THRESHOLD if setup.deployment.keys.threshold_decryption else ProtocolKind.PAILLIER
    return RoundConfig.create(protocol=protocol, clients=cohort, encoding=setup.encoding, round_id=round_id,
                              threat=threat, paillier=setup.deployment.keys)


def _error(setup: _Setup, victim: int, ring_values: np.ndarray) -> float:
    decoded = setup.quantizer.decode_sum(ring_values).total
    truth = np.clip(setup.floats[victim], -1, 1)
    return float(np.linalg.norm(decoded - truth) / np.linalg.norm(truth))


def _total_to_ring(config: RoundConfig, plaintexts: list[int], contributors: int) -> np.ndarray:
    if config.paillier is None:  # pragma: no cover - every round here is a Paillier round
        raise ValueError("not a Paillier round")
    signed = config.paillier.layout.unpack_sum(plaintexts, length=config.vector_length, contributors=contributors)
    return config.ring.from_signed(signed)


def _exchange(server: ServerSession, sessions: Mapping[int, Any], outbox: Sequence[Any],
              refusals: list[str]) -> dict[int, Any]:
    """Deliver ``outbox`` to the honest sessions, their replies to the server; returns the replies by sender."""
    replies = {}
    for message in outbox:
        session = sessions.get(message.recipient)
        if session is None:
            continue
        try:
            for reply in session.receive(message):
                replies[reply.sender] = reply
                server.receive(reply)
        except FedSecureError as error:
            refusals.append(f"client {message.recipient}: {error}")
    return replies


def _honest_until(config: RoundConfig, stage: Stage, sessions: dict[int, Any]) -> tuple[ServerSession, list[Any], dict[int, Any]]:
    server = create_server_session(config)
    outbox: list[Any] = server.start()
    replies: dict[int, Any] = {}
    refusals: list[str] = []
    while server.stage is not stage:
        replies = _exchange(server, sessions, outbox, refusals)
        outbox = server.close_stage()
    return server, outbox, replies


def _one(replies: Sequence[Any], kind: type[_Reply]) -> _Reply:
    """The single reply of an honest session, of the type the stage calls for."""
    if len(replies) != 1 or not isinstance(replies[0], kind):
        raise LocalProtocolError(f"expected one {kind.__name__}, got {replies}")
    return replies[0]


def _sessions(setup: _Setup, config: RoundConfig) -> dict[int, Any]:
    return {c: create_client_session(config, c, setup.updates[c], setup.deployment.credentials[c])
            for c in config.clients}


# --------------------------------------------------------------------------- curious key holder
def _curious_key_holder(clients: int) -> tuple[Outcome, Outcome]:
    """The key holder decrypts everything it is shown; alone, it is shown the aggregate only.

    Weakened: it colludes with one contributing client, which passes on the
    aggregate request every contributor receives (all contributions).
    """
    setup = _setup(ProtocolKind.PAILLIER, clients, THREAT)
    config, victim = _config(setup, range(clients), 1, THREAT), 0
    sessions = _sessions(setup, config)
    server, outbox, _ = _honest_until(config, Stage.AGGREGATE_APPROVAL, sessions)
    aggregate_request = _one([m for m in outbox if m.recipient == clients - 1], AggregateRequest)  # the colluder's
    _exchange(server, sessions, outbox, [])
    request = _one(server.close_stage(), DecryptionRequest)
    decryptor = setup.deployment.key_holder.decryptor  # type: ignore[union-attr]
    public = setup.deployment.keys.public_key

    # Protected: everything the key holder receives is the request; the only ciphertext in it is the aggregate.
    ciphertext_fields = [f.name for f in dataclasses.fields(request) if f.name in ("aggregate", "contributions")]
    count = len(request.contributors)
    total = _total_to_ring(config, decryptor.decrypt(ciphertexts_from_bytes(request.aggregate, public)), count)
    mean = config.ring.from_signed(np.round(config.ring.to_signed(total) / count).astype(np.int64))
    error = _error(setup, victim, mean)
    protected = Outcome(False, error, f"the key holder received {ciphertext_fields}: only the aggregate of {count} "
                        f"contributions; the best it can do is the mean (error {error:.2g})")

    # Weakened: a colluding client hands over the contributions it was shown to check the aggregate.
    mine = next(c for c in aggregate_request.contributions if c.sender == victim)
    recovered = _total_to_ring(config, decryptor.decrypt(ciphertexts_from_bytes(mine.ciphertexts, public)), 1)
    error = _error(setup, victim, recovered)
    weakened = Outcome(error < 1e-3, error, "with a colluding client's copy of the aggregate request the key holder "
                       "decrypts the victim's contribution on its own")
    return protected, weakened


# --------------------------------------------------------------------------- replay of an old ciphertext
def _replay(clients: int, threat: ThreatModel, attackers: int | None = None) -> Outcome:
    """Round 1 is honest and the server keeps the victim's contribution. Round 2 is the server's own: a colluding
    client reveals the victim's old ciphertext as its own (with the victim's proof), the other colluders
    encryptions of zero; the colluders approve anything, and the server asks the key holder for the total.

    ``attackers`` colluding clients (by default as many as the deployment tolerates, at least one).
    """
    setup = _setup(ProtocolKind.PAILLIER, clients, threat)
    deployment, keys = setup.deployment, setup.deployment.keys
    count = attackers if attackers is not None else max(1, keys.colluders)
    victim, colluders = 0, list(range(clients - count, clients))
    first = _config(setup, range(clients), 1, threat)
    _, _, replies = _honest_until(first, Stage.AGGREGATE_APPROVAL, _sessions(setup, first))
    kept: EncryptedInput = replies[victim]

    # The smallest cohort the key holder could accept: the colluders, and honest clients to fill it up.
    honest = [c for c in range(1, clients) if c not in colluders][: max(0, keys.min_contributors - len(colluders))]
    cohort = sorted(colluders + honest)
    second = RoundConfig.create(protocol=ProtocolKind.PAILLIER, clients=cohort, encoding=setup.encoding, round_id=2,
                                threat=ThreatModel(dropout_fraction=0.0, corrupt_fraction=threat.corrupt_fraction),
                                paillier=keys)
    layout = second.paillier.layout if second.paillier is not None else None
    if layout is None:  # pragma: no cover - RoundConfig.create gives every Paillier round its parameters
        raise LocalProtocolError("not a Paillier round")
    public = keys.public_key
    chosen = {colluders[0]: (kept.ciphertexts, kept.proof)}
    for colluder in colluders[1:]:
        zeros, zero_proof = deployment.credentials[colluder].encryptor(keys).encrypt_with_proof(
            layout.pack(np.zeros(second.vector_length, dtype=np.int64)),
            plaintext_proof_context(second, colluder))
        chosen[colluder] = (ciphertexts_to_bytes(zeros, public), zero_proof.to_bytes(public))
    sessions = {c: create_client_session(second, c, setup.updates[c], deployment.credentials[c]) for c in honest}
    refusals: list[str] = []

    # The server's side is the attacker's own code: it checks nothing.
    commitments = []
    for c in cohort:
        if c in chosen:
            digest = hashlib.sha256(chosen[c][0]).digest()
            signature = deployment.credentials[c].sign(commitment_payload(second, c, digest))
            commitments.append(Commitment(c, digest, signature))
        else:
            reply = _one(sessions[c].receive(RoundStart(round_id=2, recipient=c, config_digest=second.digest)),
                         CiphertextCommitment)
            commitments.append(Commitment(c, reply.digest, reply.signature))
    commitment_set = tuple(commitments)
    set_digest = commitment_set_digest(commitment_set)
    contributions = []
    for c in cohort:
        if c in chosen:
            data, proof = chosen[c]
            contributions.append(EncryptedInput(round_id=2, sender=c, ciphertexts=data, proof=proof,
                                                signature=deployment.credentials[c].sign(
                                                    contribution_payload(second, c, data, set_digest))))
        else:
            contributions.append(_one(sessions[c].receive(
                RevealRequest(round_id=2, recipient=c, commitments=commitment_set)), EncryptedInput))
    product = multiply_ciphertexts([ciphertexts_from_bytes(c.ciphertexts, public) for c in contributions], public)
    aggregate = ciphertexts_to_bytes(product, public)
    digest = hashlib.sha256(aggregate).digest()
    contributors = tuple(cohort)
    approvals = []
    for c in cohort:
        if c in chosen:
            approvals.append(SurvivorSignature(c, deployment.credentials[c].sign(
                approval_payload(second, c, contributors, digest))))
            continue
        try:
            approval = _one(sessions[c].receive(AggregateRequest(
                round_id=2, recipient=c, commitments=commitment_set, contributions=tuple(contributions),
                aggregate=aggregate)), AggregateApproval)
            approvals.append(SurvivorSignature(c, approval.signature))
        except FedSecureError as error:
            refusals.append(f"client {c} refused to approve ({error})")
    request = DecryptionRequest(round_id=2, recipient=DECRYPTOR, contributors=contributors, aggregate=aggregate,
                                approvals=tuple(approvals))
    assumed = f"{keys.colluders} colluding clients assumed, {count} attacking"
    try:
        answer = deployment.key_holder.receive(second, request)  # type: ignore[union-attr]
    except PeerProtocolError as error:
        return Outcome(False, None, "; ".join([assumed, *refusals, f"the key holder refused ({error})"]))
    width = (keys.key_bits + 7) // 8
    plaintexts = [int.from_bytes(answer.plaintexts[i : i + width], "little")
                  for i in range(0, len(answer.plaintexts), width)]
    # The total is the victim's old input plus a zero, plus the honest clients' inputs if any were needed.
    total = _total_to_ring(second, plaintexts, len(contributors))
    distance = _error(setup, victim, total)
    return Outcome(distance < 1e-3, distance, f"{assumed}: the key holder decrypted {len(contributors)} contributions with "
                   f"{len(approvals)} approvals; the total less the colluders' zeros is the victim's round-1 input")


def _replay_attack(clients: int) -> tuple[Outcome, Outcome]:
    return _replay(clients, THREAT), _replay(clients, UNDERSTATED, attackers=2)


# --------------------------------------------------------------------------- split threshold holders
def _threshold_split(clients: int, threat: ThreatModel, *, enough: bool) -> Outcome:
    """The server shows some honest holders every contribution and the others all but the victim's; the
    colluding holders approve and decrypt both, so that the difference of the two totals is the victim's input.

    The colluders are as many as the deployment tolerates (at least one), or, with ``enough``, the 2t - l
    that the attack needs.
    """
    setup = _setup(ProtocolKind.PAILLIER_THRESHOLD, clients, threat)
    deployment, keys = setup.deployment, setup.deployment.keys
    t = keys.decryption_threshold
    count = max(1, 2 * t - clients if enough else keys.colluders)
    config, victim = _config(setup, range(clients), 1, threat), 0
    colluders = list(range(clients - count, clients))
    public = keys.public_key
    sessions = _sessions(setup, config)
    _, outbox, _ = _honest_until(config, Stage.AGGREGATE_APPROVAL, sessions)
    full = _one(outbox[:1], AggregateRequest)
    without = tuple(c for c in full.contributions if c.sender != victim)
    product = multiply_ciphertexts([ciphertexts_from_bytes(c.ciphertexts, public) for c in without], public)
    smaller = dataclasses.replace(full, contributions=without, aggregate=ciphertexts_to_bytes(product, public))
    # Each group with the colluders reaches t approvals only if the colluders number at least 2t - l.
    others = [c for c in range(1, clients) if c not in colluders]
    split = max(0, t - count - 1)
    groups = {"all": ([victim] + others[:split], full), "without the victim": (others[split:], smaller)}
    totals, refusals = {}, []
    for name, (members, request) in groups.items():
        contributors = tuple(c.sender for c in request.contributions)
        digest = hashlib.sha256(request.aggregate).digest()
        approvals = [SurvivorSignature(c, deployment.credentials[c].sign(
            approval_payload(config, c, contributors, digest))) for c in colluders]
        for member in members:
            try:
                approval = _one(sessions[member].receive(dataclasses.replace(request, recipient=member)),
                                AggregateApproval)
                approvals.append(SurvivorSignature(member, approval.signature))
            except FedSecureError as error:
                refusals.append(f"holder {member} refused to approve ({error})")
        approvals.sort(key=lambda a: a.owner)
        aggregate = ciphertexts_from_bytes(request.aggregate, public)
        partials = {}
        for colluder in colluders:
            share = deployment.credentials[colluder].key_share
            if share is not None:
                partials[colluder] = share.partial_decrypt(aggregate)
        for member in members:
            decryption = DecryptionRequest(round_id=config.round_id, recipient=member, contributors=contributors,
                                           aggregate=request.aggregate, approvals=tuple(approvals))
            try:
                partial = _one(sessions[member].receive(decryption), PartialDecryption)
                partials[member] = ciphertexts_from_bytes(partial.partials, public)
            except FedSecureError as error:
                refusals.append(f"holder {member} refused to decrypt the set {name} ({error})")
        if len(partials) >= t:
            totals[name] = _total_to_ring(config, combine_partial_decryptions(keys.threshold_key(), partials),
                                          len(contributors))
    assumed = (f"t = {t} of {clients} holders, {keys.colluders} colluding holders assumed, {count} attacking")
    if len(totals) < 2:
        return Outcome(False, None, "; ".join([assumed, *refusals]))
    difference = config.ring.reduce(totals["all"] - totals["without the victim"])
    distance = _error(setup, victim, difference)
    return Outcome(distance < 1e-3, distance, f"{assumed}: both contributor sets were decrypted in one round; their "
                   "difference is the victim's input")


def _threshold_split_attack(clients: int) -> tuple[Outcome, Outcome]:
    return _threshold_split(clients, THREAT, enough=False), _threshold_split(clients, UNDERSTATED, enough=True)


# --------------------------------------------------------------------------- key substitution
def _key_substitution(protocol: ProtocolKind, clients: int) -> tuple[Outcome, Outcome]:
    """The server builds the round under a Paillier key of its own, to decrypt the victim's contribution."""
    setup = _setup(protocol, clients, THREAT)
    keys = setup.deployment.keys
    public, _ = generate_paillier_keypair(KEY_BITS)
    own = PaillierKeys(public_key=public, signing_keys=keys.signing_keys, insecure=True, colluders=keys.colluders)
    config = RoundConfig.create(protocol=ProtocolKind.PAILLIER, clients=range(clients), encoding=setup.encoding,
                                round_id=1, threat=THREAT, paillier=own)
    try:
        session = create_client_session(config, 0, setup.updates[0], setup.deployment.credentials[0])
        session.receive(create_server_session(config).start()[0])
    except (LocalProtocolError, PeerProtocolError) as error:
        protected = Outcome(False, None, f"the victim refused the round ({error})")
    else:  # pragma: no cover - a failure of the protection
        protected = Outcome(True, None, "the victim committed to a round under the server's key")
    return protected, Outcome(None, None, "no weakened configuration: Paillier credentials cannot be built without "
                              "the deployment's public keys, received at setup")


PaillierRunner = Callable[[ProtocolKind, int], tuple[Outcome, Outcome]]

#: name -> (description, the protocols it targets, runner).
PAILLIER_ATTACKS: dict[str, tuple[str, tuple[ProtocolKind, ...], PaillierRunner]] = {
    "curious-key-holder": (
        "the separate key holder decrypts everything it receives (protected: it receives only the aggregate and "
        "the approvals; weakened: it colludes with one client, which sees every contribution to check the aggregate)",
        (ProtocolKind.PAILLIER,), lambda p, n: _curious_key_holder(n)),
    "paillier-replay": (
        "a colluding client reveals the victim's ciphertext from an earlier round as its own, with the victim's "
        "proof, beside a colluder's zero (protected: proofs bound to round and sender, checked by honest approvers, "
        "and a quorum above the colluders; weakened: a deployment that assumes no colluders)",
        (ProtocolKind.PAILLIER,), lambda p, n: _replay_attack(n)),
    "threshold-split": (
        "the server shows some holders every contribution and others all but the victim's, and a colluding holder "
        "decrypts both (protected: 2t > holders + colluders and approvals by t holders; weakened: a threshold "
        "sized for no colluders)",
        (ProtocolKind.PAILLIER_THRESHOLD,), lambda p, n: _threshold_split_attack(n)),
    "paillier-key-substitution": (
        "the server runs the round under a Paillier key of its own (protected: clients hold the deployment's keys "
        "from setup)",
        (ProtocolKind.PAILLIER, ProtocolKind.PAILLIER_THRESHOLD), _key_substitution),
}
