"""Paillier aggregation as sans-IO sessions: a separate decryptor, or threshold decryption by the clients.

Both arrangements share three stages. **Commitment**: each client packs its
encoded update into slots (BatchCrypt, USENIX ATC 2020), encrypts the
plaintexts under the deployment's Paillier key with a proof of plaintext
knowledge bound to the round and to itself (Damgård–Jurik–Nielsen, batched,
Fiat–Shamir), and sends a signed hash of the ciphertexts. **CiphertextInput**:
shown the set of commitments, each reveals its ciphertexts and proof, signed
together with that set. **AggregateApproval**: the server shows every
contributor all contributions and their product; each checks every commitment,
signature and proof, recomputes the product, and signs (round configuration,
contributor set, digest of the aggregate).

* **Separate decryptor** (:class:`PaillierKeyHolder`, FATE's "arbiter"): the
  server sends it the aggregate, the contributor set and the approvals, never
  a single contribution. It checks the approvals against its own registry, its
  own contributor minimum (colluders + 2) and its own approval quorum
  (colluders + 1: at least one honest client checked the aggregate), decrypts
  once per round, and returns the plaintexts with the aggregate's randomness,
  which the server checks before it decodes.
* **Threshold** (Damgård–Jurik, PKC 2001): each approving key-share holder
  checks that ``decryption_threshold`` holders approved the very set it
  approved, and returns its partial decryption with Shoup's proof of
  correctness; the server checks each proof and combines any t.

Who must not collude with whom is in SECURITY.md.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, NoReturn

import gmpy2
import numpy as np

from .._errors import ConfigurationError, CryptoError, LocalProtocolError, PeerFault, PeerProtocolError, RoundAborted
from ..crypto import (
    MIN_SECURE_KEY_BITS,
    PaillierDecryptor,
    PaillierEncryptor,
    PaillierKeyShare,
    PartialDecryptionProof,
    PlaintextKnowledgeProof,
    SigningKey,
    ciphertext_bytes,
    ciphertexts_from_bytes,
    ciphertexts_to_bytes,
    combine_partial_decryptions,
    deal_threshold_paillier,
    generate_paillier_keypair,
    multiply_ciphertexts,
    verify_decryption,
    verify_partial_decryption,
    verify_plaintext_knowledge,
    verify_signature,
)
from ..encoding import EncodedUpdate, SlotLayout
from ._config import PaillierKeys, PaillierParameters, ProtocolKind, RoundConfig
from ._messages import (
    DECRYPTOR,
    AggregateApproval,
    AggregateRequest,
    CiphertextCommitment,
    ClientMessage,
    Commitment,
    DecryptedAggregate,
    DecryptionRequest,
    EncryptedInput,
    Message,
    PartialDecryption,
    RevealRequest,
    RoundStart,
    ServerMessage,
    SurvivorSignature,
)
from ._parameters import ThreatModel
from ._session import SERVER, ClientSession, ServerSession
from ._stages import Stage

__all__ = [
    "PaillierCredentials",
    "PaillierDeployment",
    "PaillierKeyHolder",
    "PaillierClientSession",
    "PaillierServerSession",
    "approval_payload",
    "contribution_payload",
    "commitment_payload",
    "commitment_set_digest",
    "plaintext_proof_context",
    "partial_proof_context",
]

_COMMITMENT_LABEL = b"fedsecure/v1/paillier-commitment"
_REVEAL_LABEL = b"fedsecure/v1/paillier-reveal"
_SET_LABEL = b"fedsecure/v1/paillier-commitment-set"
_APPROVAL_LABEL = b"fedsecure/v1/paillier-approval"
_PLAINTEXT_PROOF_LABEL = b"fedsecure/v1/paillier-plaintext-proof"
_PARTIAL_PROOF_LABEL = b"fedsecure/v1/paillier-partial-proof"


def commitment_payload(config: RoundConfig, sender: int, digest: bytes) -> bytes:
    """The bytes a client signs when it commits: configuration digest, round, sender, SHA-256 of its ciphertexts."""
    return _COMMITMENT_LABEL + config.digest + struct.pack("<QI", config.round_id, sender) + digest


def commitment_set_digest(commitments: Sequence[Commitment]) -> bytes:
    """SHA-256 of a commitment set, in its canonical (sorted) order."""
    return hashlib.sha256(_SET_LABEL + b"".join(struct.pack("<I", c.sender) + c.digest + c.signature
                                               for c in commitments)).digest()


def contribution_payload(config: RoundConfig, sender: int, ciphertexts: bytes, commitments: bytes) -> bytes:
    """The bytes a client signs when it reveals: configuration digest, round, sender, its ciphertexts' hash
    and the digest of the commitment set it was shown."""
    return (_REVEAL_LABEL + config.digest + struct.pack("<QI", config.round_id, sender)
            + hashlib.sha256(ciphertexts).digest() + commitments)


def approval_payload(config: RoundConfig, sender: int, contributors: Sequence[int], aggregate_digest: bytes) -> bytes:
    """The bytes a client signs when it approves an aggregate: configuration, round, itself, the contributor set
    and the SHA-256 of the aggregate it recomputed."""
    return (_APPROVAL_LABEL + config.digest + struct.pack("<QII", config.round_id, sender, len(contributors))
            + np.asarray(contributors, dtype="<u4").tobytes() + aggregate_digest)


def plaintext_proof_context(config: RoundConfig, sender: int) -> bytes:
    """What a proof of plaintext knowledge is bound to: the round configuration (hence the round) and the sender."""
    return _PLAINTEXT_PROOF_LABEL + config.digest + struct.pack("<QI", config.round_id, sender)


def partial_proof_context(config: RoundConfig, aggregate_digest: bytes) -> bytes:
    """What a proof of correct partial decryption is bound to: the round configuration and the aggregate."""
    return _PARTIAL_PROOF_LABEL + config.digest + aggregate_digest


def _parameters(config: RoundConfig) -> PaillierParameters:
    if config.paillier is None:
        raise LocalProtocolError("not a Paillier round")
    return config.paillier


def _server_fault(fault: PeerFault, detail: str = "") -> PeerProtocolError:
    return PeerProtocolError(fault, peer=SERVER, detail=detail)  # type: ignore[arg-type]


def _fault(blame: int | str, kind: PeerFault, detail: str) -> PeerProtocolError:
    return PeerProtocolError(kind, peer=blame, detail=detail)  # type: ignore[arg-type]


def _check_commitments(config: RoundConfig, commitments: Sequence[Commitment], registry: Mapping[int, bytes],
                       blame: int | str) -> None:
    for commitment in commitments:
        sender = commitment.sender
        if not config.in_cohort(sender) or sender not in registry:
            raise _fault(blame, PeerFault.NOT_IN_COHORT, f"commitment of {sender}")
        try:
            verify_signature(registry[sender], commitment.signature,
                             commitment_payload(config, sender, commitment.digest))
        except CryptoError:
            raise _fault(blame, PeerFault.BAD_SIGNATURE, f"commitment of {sender}") from None


def _check_contribution(config: RoundConfig, contribution: EncryptedInput, committed: bytes, set_digest: bytes,
                        registry: Mapping[int, bytes], blame: int | str) -> list[gmpy2.mpz]:
    """One revealed contribution: it matches its commitment, is signed over the commitment set, parses, and its
    proof of plaintext knowledge holds for this round and this sender.

    The server checks each contribution as it arrives (``blame`` is its sender);
    each approving client checks them all again (``blame`` is the server that relayed them).
    """
    sender = contribution.sender
    if hashlib.sha256(contribution.ciphertexts).digest() != committed:
        raise _fault(blame, PeerFault.BAD_AGGREGATE, f"{sender}'s ciphertexts differ from its commitment")
    try:
        verify_signature(registry[sender], contribution.signature,
                         contribution_payload(config, sender, contribution.ciphertexts, set_digest))
    except CryptoError:
        raise _fault(blame, PeerFault.BAD_SIGNATURE, f"contribution of {sender}") from None
    parameters = _parameters(config)
    public_key = parameters.keys.public_key
    try:
        ciphertexts = ciphertexts_from_bytes(contribution.ciphertexts, public_key, count=parameters.ciphertexts)
    except CryptoError as error:
        raise _fault(blame, PeerFault.BAD_CIPHERTEXT, f"contribution of {sender}: {error}") from None
    try:
        proof = PlaintextKnowledgeProof.from_bytes(contribution.proof, public_key)
        verify_plaintext_knowledge(public_key, ciphertexts, proof, plaintext_proof_context(config, sender))
    except CryptoError as error:
        raise _fault(blame, PeerFault.BAD_PROOF, f"contribution of {sender}: {error}") from None
    return ciphertexts


def _check_aggregate_request(config: RoundConfig, request: AggregateRequest, registry: Mapping[int, bytes],
                             min_contributors: int, blame: int | str) -> tuple[tuple[int, ...], list[gmpy2.mpz]]:
    """Everything a client checks before it approves an aggregate; returns the contributors and the aggregate.

    ``registry`` and ``min_contributors`` are the checker's own. Every
    contributor must have committed before any ciphertext was revealed,
    revealed against this very commitment set, and proven knowledge of its
    plaintexts for this round; the aggregate must be their product.
    """
    parameters = _parameters(config)
    contributors = tuple(c.sender for c in request.contributions)
    if len(set(contributors)) != len(contributors) or len({c.sender for c in request.commitments}) != len(
            request.commitments):
        raise _fault(blame, PeerFault.DUPLICATE, "a contributor or a commitment is listed twice")
    if len(contributors) < min_contributors:
        raise _fault(blame, PeerFault.TOO_FEW_CONTRIBUTORS,
                     f"{len(contributors)} contributors, at least {min_contributors} required")
    if len(contributors) > parameters.layout.max_contributors:
        raise _fault(blame, PeerFault.BAD_AGGREGATE, f"{len(contributors)} contributors overflow slots sized for "
                     f"{parameters.layout.max_contributors}")
    _check_commitments(config, request.commitments, registry, blame)
    committed = {c.sender: c.digest for c in request.commitments}
    set_digest = commitment_set_digest(request.commitments)
    columns = []
    for contribution in request.contributions:
        if contribution.sender not in committed:
            raise _fault(blame, PeerFault.BAD_AGGREGATE, f"{contribution.sender} contributed without committing")
        columns.append(_check_contribution(config, contribution, committed[contribution.sender], set_digest,
                                           registry, blame))
    aggregate = multiply_ciphertexts(columns, parameters.keys.public_key)
    if ciphertexts_to_bytes(aggregate, parameters.keys.public_key) != request.aggregate:
        raise _fault(blame, PeerFault.BAD_AGGREGATE, "the product of the contributions differs from the aggregate")
    return contributors, aggregate


def _check_approvals(config: RoundConfig, contributors: Sequence[int], aggregate_digest: bytes,
                     approvals: Sequence[SurvivorSignature], registry: Mapping[int, bytes], eligible: Iterable[int],
                     quorum: int, blame: int | str) -> None:
    """At least ``quorum`` distinct ``eligible`` clients signed this contributor set and aggregate.

    Each honest client approves one aggregate per round, after checking every
    contribution itself; ``quorum`` is chosen (by whoever decrypts, from its own
    setup) so that the colluders the threat model allows cannot reach it alone.
    """
    allowed = set(eligible)
    if len({a.owner for a in approvals}) != len(approvals) or len(set(contributors)) != len(contributors):
        raise _fault(blame, PeerFault.DUPLICATE, "an approver or a contributor is listed twice")
    valid = 0
    for approval in approvals:
        if approval.owner not in allowed or approval.owner not in registry:
            raise _fault(blame, PeerFault.BAD_AGGREGATE, f"an approval by {approval.owner}, who may not approve")
        try:
            verify_signature(registry[approval.owner], approval.signature,
                             approval_payload(config, approval.owner, contributors, aggregate_digest))
        except CryptoError:
            raise _fault(blame, PeerFault.BAD_SIGNATURE, f"approval of {approval.owner}") from None
        valid += 1
    if valid < quorum:
        raise _fault(blame, PeerFault.TOO_FEW_APPROVALS, f"{valid} approvals, at least {quorum} required")


def _decode_total(config: RoundConfig, plaintexts: list[int], contributors: int) -> np.ndarray:
    parameters = _parameters(config)
    signed = parameters.layout.unpack_sum(plaintexts, length=config.vector_length, contributors=contributors)
    return config.ring.from_signed(signed)


def _integers_to_bytes(values: Sequence[int], width: int) -> bytes:
    return b"".join(int(v).to_bytes(width, "little") for v in values)


def _integers_from_bytes(data: bytes, width: int, count: int) -> list[int]:
    if len(data) != width * count:
        raise CryptoError(f"{len(data)} bytes, expected {count} values of {width} bytes")
    return [int.from_bytes(data[i : i + width], "little") for i in range(0, len(data), width)]


def _check_layout(config: RoundConfig, update: EncodedUpdate | None) -> None:
    """Refuse a slot layout other than the one this client's encoding bound and the key determine.

    The server builds the layout. One with a smaller offset or narrower values
    would make packing refuse exactly when a coordinate lies beyond them, and a
    server probing with many such rounds would learn the client's largest and
    smallest values. The check depends only on public parameters, never on the values.
    """
    parameters = _parameters(config)
    if update is None:
        return
    expected = SlotLayout.create(max_coordinate=update.max_coordinate, clients=parameters.layout.max_contributors,
                                 plaintext_bits=parameters.keys.key_bits - 1)
    if parameters.layout != expected:
        raise LocalProtocolError("the round's slot layout is not the one this client's encoding and the key "
                                 "determine: refusing a layout the server chose")


class PaillierCredentials:
    """One client's long-lived Paillier secrets: its signing key, its encryptor and (threshold) its key share.

    ``trusted_keys`` is the deployment's public keys as the client received them
    at setup, never from the server: a round under any other key, registry,
    colluder bound or holder arrangement is refused (otherwise a server could
    put a key of its own in the configuration and decrypt the client's input).
    The credentials remember the rounds they have partially decrypted and
    refuse a second decryption of any; they never approve or decrypt a sum of
    fewer than ``trusted_keys.min_contributors`` inputs, whatever a round
    configuration says. Secret: no pickling, no secrets in ``repr``.
    """

    __slots__ = ("_signing_key", "_key_share", "_encryptor", "_decrypted_rounds", "_trusted_keys")

    def __init__(self, signing_key: SigningKey, trusted_keys: PaillierKeys, key_share: PaillierKeyShare | None = None,
                 *, decrypted_rounds: Iterable[int] = ()) -> None:
        if not isinstance(trusted_keys, PaillierKeys):
            raise ConfigurationError("Paillier credentials need the deployment's public keys (trusted_keys), as "
                                     "the client received them at setup", parameter="trusted_keys")
        if signing_key.public_bytes not in trusted_keys.signing_keys.values():
            raise ConfigurationError("the signing key is not in the deployment's registry", parameter="signing_key")
        if key_share is not None and (int(key_share.key.public_key.n) != int(trusted_keys.public_key.n)
                                      or key_share.key.holders != trusted_keys.key_holders):
            raise ConfigurationError("the key share is not of the deployment's key", parameter="key_share")
        self._signing_key = signing_key
        self._key_share = key_share
        self._encryptor: PaillierEncryptor | None = None
        self._decrypted_rounds: set[int] = set(decrypted_rounds)
        self._trusted_keys = trusted_keys

    @property
    def trusted_keys(self) -> PaillierKeys:
        """The deployment's public keys as this client received them at setup (not from the server)."""
        return self._trusted_keys

    def check_keys(self, config: RoundConfig) -> None:
        """Refuse a round whose Paillier keys differ in anything from the trusted ones."""
        keys = _parameters(config).keys
        if keys.canonical_bytes() != self._trusted_keys.canonical_bytes():
            raise LocalProtocolError("the round's Paillier keys differ from the deployment's: refusing keys the "
                                     "server chose")

    @property
    def verify_key(self) -> bytes:
        return self._signing_key.public_bytes

    @property
    def signing_key(self) -> SigningKey:
        """The client's signing key, to persist on its own device."""
        return self._signing_key

    @property
    def decrypted_rounds(self) -> frozenset[int]:
        """The rounds this holder has partially decrypted; a deployment must persist them (it refuses a second)."""
        return frozenset(self._decrypted_rounds)

    @property
    def min_contributors(self) -> int:
        """The fewest contributions this client approves or decrypts: the deployment's colluders plus two."""
        return self._trusted_keys.min_contributors

    def sign(self, data: bytes) -> bytes:
        return self._signing_key.sign(data)

    def encryptor(self, keys: PaillierKeys) -> PaillierEncryptor:
        """The encryptor for ``keys`` (its fixed-base table is built once and reused across rounds)."""
        if self._encryptor is None or self._encryptor.public_key != keys.public_key:
            self._encryptor = PaillierEncryptor(keys.public_key)
        return self._encryptor

    @property
    def key_share(self) -> PaillierKeyShare | None:
        return self._key_share

    def claim_round(self, round_id: int, *, blame: int | str) -> None:
        """Record that this holder decrypts ``round_id``; refuse if it already did."""
        if round_id in self._decrypted_rounds:
            raise _fault(blame, PeerFault.ALREADY_DECRYPTED, f"round {round_id}")
        self._decrypted_rounds.add(round_id)

    def __reduce__(self) -> NoReturn:
        raise TypeError("PaillierCredentials hold secrets and cannot be pickled")

    def __repr__(self) -> str:
        return f"<PaillierCredentials {self._signing_key!r} key_share={self._key_share is not None}>"


class PaillierKeyHolder:
    """The separate decryptor: holds the private key, its own signer registry and its own colluder bound.

    It never sees a single contribution. It decrypts at most one aggregate per
    round id, only with at least ``colluders + 2`` contributors and
    ``colluders + 1`` valid approvals from contributors (so at least one honest
    client checked every contribution's signature and proof and recomputed the
    product), and returns the plaintexts with the aggregate's randomness.
    Threat model: it learns the total and the contributor set; it must not
    collude with the server or with any client (each contributor sees every
    ciphertext, to check the aggregate, and the key holder could decrypt them).
    """

    __slots__ = ("_decryptor", "_registry", "_colluders", "_decrypted_rounds")

    def __init__(self, decryptor: PaillierDecryptor, *, signing_keys: Mapping[int, bytes], colluders: int,
                 decrypted_rounds: Iterable[int] = ()) -> None:
        if type(colluders) is not int or colluders < 0:
            raise ConfigurationError("colluders must be a non-negative integer (from the threat model)",
                                     parameter="colluders")
        self._decryptor = decryptor
        self._registry = dict(signing_keys)
        self._colluders = colluders
        self._decrypted_rounds: set[int] = set(decrypted_rounds)

    @property
    def decrypted_rounds(self) -> frozenset[int]:
        """The rounds it has decrypted; a deployment must persist them (it refuses a second decryption)."""
        return frozenset(self._decrypted_rounds)

    @property
    def decryptor(self) -> PaillierDecryptor:
        return self._decryptor

    @property
    def signing_keys(self) -> Mapping[int, bytes]:
        return MappingProxyType(self._registry)

    @property
    def colluders(self) -> int:
        return self._colluders

    @property
    def min_contributors(self) -> int:
        return self._colluders + 2

    @property
    def approval_quorum(self) -> int:
        return self._colluders + 1

    def receive(self, config: RoundConfig, request: DecryptionRequest) -> DecryptedAggregate:
        """Check a decryption request and answer it with the aggregate's plaintexts and randomness, or raise."""
        if request.recipient != DECRYPTOR or request.round_id != config.round_id:
            raise _server_fault(PeerFault.WRONG_RECIPIENT if request.recipient != DECRYPTOR else PeerFault.WRONG_ROUND)
        parameters = _parameters(config)
        if parameters.keys.public_key != self._decryptor.public_key or parameters.keys.threshold_decryption:
            raise _server_fault(PeerFault.CONFIG_MISMATCH, "the round is not under this key holder's key")
        if request.round_id in self._decrypted_rounds:
            raise _server_fault(PeerFault.ALREADY_DECRYPTED, f"round {request.round_id}")
        contributors = request.contributors
        if len(set(contributors)) != len(contributors):
            raise _server_fault(PeerFault.DUPLICATE, "a contributor is listed twice")
        minimum = max(self.min_contributors, parameters.min_contributors)
        if len(contributors) < minimum:
            raise _server_fault(PeerFault.TOO_FEW_CONTRIBUTORS, f"{len(contributors)} contributors, at least "
                                f"{minimum} required")
        if len(contributors) > parameters.layout.max_contributors:
            raise _server_fault(PeerFault.BAD_AGGREGATE, f"{len(contributors)} contributors overflow the slots")
        strangers = [c for c in contributors if not config.in_cohort(c) or c not in self._registry]
        if strangers:
            raise _server_fault(PeerFault.NOT_IN_COHORT, f"contributors {strangers[:5]}")
        _check_approvals(config, contributors, hashlib.sha256(request.aggregate).digest(), request.approvals,
                         self._registry, contributors, self.approval_quorum, SERVER)
        try:
            aggregate = ciphertexts_from_bytes(request.aggregate, parameters.keys.public_key,
                                               count=parameters.ciphertexts)
        except CryptoError as error:
            raise _server_fault(PeerFault.BAD_CIPHERTEXT, str(error)) from None
        # From here on the round counts as decrypted, whatever happens next.
        self._decrypted_rounds.add(request.round_id)
        plaintexts, randomness = self._decryptor.decrypt_with_randomness(aggregate)
        try:
            _decode_total(config, plaintexts, len(contributors))
        except ValueError as error:
            # A contribution outside its slots (a malicious client's). Nothing is returned.
            raise _server_fault(PeerFault.BAD_AGGREGATE, f"the decrypted total does not fit its slots: {error}") from None
        width = (parameters.keys.key_bits + 7) // 8
        return DecryptedAggregate(round_id=config.round_id, sender=DECRYPTOR, contributors=contributors,
                                  plaintexts=_integers_to_bytes(plaintexts, width),
                                  randomness=_integers_to_bytes(randomness, width))

    def __reduce__(self) -> NoReturn:
        raise TypeError("a PaillierKeyHolder holds a private key and cannot be pickled")

    def __repr__(self) -> str:
        return f"<PaillierKeyHolder {self._decryptor!r} colluders={self._colluders}>"


class PaillierClientSession(ClientSession):
    """A Paillier client: packs, encrypts with a proof, commits, reveals, approves, and (threshold) decrypts.

    Threat model: the server alone learns nothing of this client's input
    (semantic security of Paillier under DCR, plus the short-exponent
    assumption of the DJN randomiser). It reveals its ciphertexts only against
    a commitment set that contains its own commitment and at least the minimum
    number of committers. It approves one aggregate per round, after checking
    every contribution's signature and proof and recomputing the product. As a
    key-share holder it decrypts only the aggregate it approved, once the
    threshold of holders approved the same one, and at most once per round.
    """

    def __init__(self, config: RoundConfig, client_id: int, update: EncodedUpdate,
                 credentials: PaillierCredentials | None = None) -> None:
        super().__init__(config, client_id, update)
        if not isinstance(credentials, PaillierCredentials):
            raise LocalProtocolError(f"client {client_id} has no Paillier credentials")
        parameters = _parameters(config)
        if parameters.keys.signing_keys.get(client_id) != credentials.verify_key:
            raise LocalProtocolError(f"client {client_id}'s signing key is not the one registered for the round")
        credentials.check_keys(config)
        _check_layout(config, update)
        self._credentials = credentials
        self._ciphertexts: bytes | None = None
        self._proof = b""
        self._digest = b""
        self._approved: tuple[tuple[int, ...], bytes] | None = None

    def _handle(self, message: Message) -> list[ClientMessage]:
        if isinstance(message, RoundStart):
            return [self._commit()]
        if isinstance(message, RevealRequest):
            return [self._reveal(message)]
        if isinstance(message, AggregateRequest):
            return [self._approve(message)]
        if isinstance(message, DecryptionRequest):
            return [self._partial_decryption(message)]
        raise _server_fault(PeerFault.OUT_OF_STAGE, type(message).__name__)

    def _minimum(self) -> int:
        return max(_parameters(self._config).min_contributors, self._credentials.min_contributors)

    def _commit(self) -> CiphertextCommitment:
        config, parameters = self._config, _parameters(self._config)
        signed = config.ring.to_signed(self._encoded_values())
        plaintexts = parameters.layout.pack(signed)
        ciphertexts, proof = self._credentials.encryptor(parameters.keys).encrypt_with_proof(
            plaintexts, plaintext_proof_context(config, self._client_id))
        self._ciphertexts = ciphertexts_to_bytes(ciphertexts, parameters.keys.public_key)
        self._proof = proof.to_bytes(parameters.keys.public_key)
        self._digest = hashlib.sha256(self._ciphertexts).digest()
        signature = self._credentials.sign(commitment_payload(config, self._client_id, self._digest))
        return CiphertextCommitment(round_id=config.round_id, sender=self._client_id, digest=self._digest,
                                    signature=signature)

    def _reveal(self, request: RevealRequest) -> EncryptedInput:
        config, parameters = self._config, _parameters(self._config)
        if self._ciphertexts is None:
            raise _server_fault(PeerFault.OUT_OF_STAGE, "nothing committed")
        mine = [c for c in request.commitments if c.sender == self._client_id]
        if len(mine) != 1 or mine[0].digest != self._digest:
            raise _server_fault(PeerFault.BAD_AGGREGATE, "the commitment set lacks or alters this client's commitment")
        if len(request.commitments) < self._minimum():
            raise _server_fault(PeerFault.TOO_FEW_CONTRIBUTORS, f"{len(request.commitments)} commitments")
        _check_commitments(config, request.commitments, parameters.keys.signing_keys, SERVER)
        set_digest = commitment_set_digest(request.commitments)
        signature = self._credentials.sign(contribution_payload(config, self._client_id, self._ciphertexts, set_digest))
        return EncryptedInput(round_id=config.round_id, sender=self._client_id, ciphertexts=self._ciphertexts,
                              proof=self._proof, signature=signature)

    def _approve(self, request: AggregateRequest) -> AggregateApproval:
        config, parameters = self._config, _parameters(self._config)
        contributors, _ = _check_aggregate_request(config, request, parameters.keys.signing_keys, self._minimum(),
                                                   SERVER)
        digest = hashlib.sha256(request.aggregate).digest()
        self._approved = (contributors, digest)
        signature = self._credentials.sign(approval_payload(config, self._client_id, contributors, digest))
        return AggregateApproval(round_id=config.round_id, sender=self._client_id, signature=signature)

    def _partial_decryption(self, request: DecryptionRequest) -> PartialDecryption:
        config, parameters = self._config, _parameters(self._config)
        share = self._credentials.key_share
        if share is None:
            raise LocalProtocolError(f"client {self._client_id} holds no decryption key share")
        if self._approved is None:
            raise _server_fault(PeerFault.OUT_OF_STAGE, "no aggregate approved")
        contributors, digest = self._approved
        if request.contributors != contributors or hashlib.sha256(request.aggregate).digest() != digest:
            raise _server_fault(PeerFault.BAD_AGGREGATE, "a decryption request for another aggregate than the one "
                                "this client approved")
        keys = parameters.keys
        # Damgård–Jurik threshold decryption with Shoup's consistency: decrypt only what t holders approved.
        _check_approvals(config, contributors, digest, request.approvals, keys.signing_keys,
                         set(contributors) & set(keys.key_holders), keys.decryption_threshold, SERVER)
        try:
            aggregate = ciphertexts_from_bytes(request.aggregate, keys.public_key, count=parameters.ciphertexts)
        except CryptoError as error:
            raise _server_fault(PeerFault.BAD_CIPHERTEXT, str(error)) from None
        self._credentials.claim_round(config.round_id, blame=SERVER)
        partials, proof = share.partial_decrypt_with_proof(aggregate, partial_proof_context(config, digest))
        return PartialDecryption(round_id=config.round_id, sender=self._client_id, aggregate_digest=digest,
                                 partials=ciphertexts_to_bytes(partials, keys.public_key), proof=proof.to_bytes())

    def _export_fields(self) -> dict[str, Any]:
        approved = None if self._approved is None else [list(self._approved[0]), self._approved[1].hex()]
        return {"ciphertexts": None if self._ciphertexts is None else self._ciphertexts.hex(),
                "proof": self._proof.hex(), "digest": self._digest.hex(), "approved": approved}

    def _restore_fields(self, fields: Mapping[str, Any], credentials: Any) -> None:
        if not isinstance(credentials, PaillierCredentials):
            raise LocalProtocolError(f"client {self._client_id} has no Paillier credentials")
        if _parameters(self._config).keys.signing_keys.get(self._client_id) != credentials.verify_key:
            raise LocalProtocolError(f"client {self._client_id}'s signing key is not the one registered for the round")
        credentials.check_keys(self._config)
        _check_layout(self._config, self._update)
        self._credentials = credentials
        ciphertexts = fields["ciphertexts"]
        self._ciphertexts = None if ciphertexts is None else bytes.fromhex(ciphertexts)
        self._proof = bytes.fromhex(fields["proof"])
        self._digest = bytes.fromhex(fields["digest"])
        approved = fields["approved"]
        if approved is None:
            self._approved = None
        else:
            contributors, digest = approved
            if not isinstance(contributors, list) or not all(type(c) is int for c in contributors):
                raise LocalProtocolError("the saved approval is malformed")
            self._approved = (tuple(contributors), bytes.fromhex(digest))

    def _discard_secrets(self) -> None:
        super()._discard_secrets()
        self._ciphertexts = None
        self._proof = b""


class PaillierServerSession(ServerSession):
    """The Paillier server: collects commitments, then proven and signed ciphertexts; multiplies; gathers the
    contributors' approvals of the product; asks for the total and checks it.

    Memory: it keeps every contribution until the aggregate requests are sent
    (each contributor checks them all), O(clients x ciphertexts).
    """

    def __init__(self, config: RoundConfig) -> None:
        super().__init__(config)
        parameters = _parameters(config)
        self._parameters = parameters
        self._public_key = parameters.keys.public_key
        width = ciphertext_bytes(self._public_key)
        payload = parameters.ciphertexts * width
        # The largest legitimate message: an aggregate request (every contribution with its proof), or a total.
        self._max_message_bytes = 256 + len(config.clients) * (payload + 3 * width + 300) + 2 * payload + 4 * width
        self._commitments: dict[int, Commitment] = {}
        self._commitment_set: tuple[Commitment, ...] = ()
        self._set_digest = b""
        self._contributions: dict[int, EncryptedInput] = {}
        self._product: list[gmpy2.mpz] | None = None
        self._aggregate_values: list[gmpy2.mpz] = []
        self._aggregate: bytes = b""
        self._aggregate_digest = b""
        self._contributors: tuple[int, ...] = ()
        self._approvals: dict[int, SurvivorSignature] = {}
        self._partials: dict[int, list[gmpy2.mpz]] = {}
        self._decryptor_fault = ""

    # ---- the decryptor is not a client: its answer bypasses the cohort checks -------------------
    def receive(self, message: Message) -> list[ServerMessage]:
        if isinstance(message, DecryptedAggregate):
            self._on_decrypted(message)
            return []
        return super().receive(message)

    def _on_decrypted(self, message: DecryptedAggregate) -> None:
        if message.sender != DECRYPTOR:
            error = PeerProtocolError(PeerFault.WRONG_SENDER, peer=message.sender, detail="only the decryptor decrypts")
            self._drop(message.sender, error.fault, error.detail)
            raise error
        if self._stage is not Stage.DECRYPTION or self._result is not None:
            raise PeerProtocolError(PeerFault.OUT_OF_STAGE, peer=DECRYPTOR, detail=self._stage.label)
        if message.round_id != self._config.round_id:
            raise PeerProtocolError(PeerFault.WRONG_ROUND, peer=DECRYPTOR)
        if message.contributors != self._contributors:
            raise PeerProtocolError(PeerFault.BAD_AGGREGATE, peer=DECRYPTOR, detail="decrypted another contributor set")
        width = (self._parameters.keys.key_bits + 7) // 8
        try:
            plaintexts = _integers_from_bytes(message.plaintexts, width, self._parameters.ciphertexts)
            randomness = _integers_from_bytes(message.randomness, width, self._parameters.ciphertexts)
            # The total is checked, not trusted: each plaintext with its randomness must re-encrypt to the aggregate.
            verify_decryption(self._public_key, self._aggregate_values, plaintexts, randomness)
        except CryptoError as error:
            self._decryptor_fault = f"the decryptor's total does not match the aggregate: {error}"
            raise PeerProtocolError(PeerFault.BAD_PROOF, peer=DECRYPTOR, detail=self._decryptor_fault) from None
        try:
            total = _decode_total(self._config, plaintexts, len(self._contributors))
        except ValueError as error:
            self._decryptor_fault = f"the decrypted total does not fit its slots: {error}"
            raise PeerProtocolError(PeerFault.BAD_AGGREGATE, peer=DECRYPTOR, detail=self._decryptor_fault) from None
        self._finish(total, frozenset(self._contributors))

    def _handle(self, message: ClientMessage) -> None:
        if isinstance(message, CiphertextCommitment):
            self._on_commitment(message)
        elif isinstance(message, EncryptedInput):
            self._on_input(message)
        elif isinstance(message, AggregateApproval):
            self._on_approval(message)
        elif isinstance(message, PartialDecryption):
            self._on_partial(message)

    def _on_commitment(self, message: CiphertextCommitment) -> None:
        sender = message.sender
        try:
            verify_signature(self._parameters.keys.signing_keys[sender], message.signature,
                             commitment_payload(self._config, sender, message.digest))
        except CryptoError:
            raise PeerProtocolError(PeerFault.BAD_SIGNATURE, peer=sender, detail="commitment") from None
        self._commitments[sender] = Commitment(sender=sender, digest=message.digest, signature=message.signature)

    def _on_input(self, message: EncryptedInput) -> None:
        sender = message.sender
        ciphertexts = _check_contribution(self._config, message, self._commitments[sender].digest, self._set_digest,
                                          self._parameters.keys.signing_keys, sender)
        self._product = ciphertexts if self._product is None else multiply_ciphertexts(
            [self._product, ciphertexts], self._public_key)
        self._contributions[sender] = message

    def _on_approval(self, message: AggregateApproval) -> None:
        sender = message.sender
        try:
            verify_signature(self._parameters.keys.signing_keys[sender], message.signature,
                             approval_payload(self._config, sender, self._contributors, self._aggregate_digest))
        except CryptoError:
            raise PeerProtocolError(PeerFault.BAD_SIGNATURE, peer=sender, detail="approval") from None
        self._approvals[sender] = SurvivorSignature(owner=sender, signature=message.signature)

    def _on_partial(self, message: PartialDecryption) -> None:
        sender = message.sender
        if message.aggregate_digest != self._aggregate_digest:
            raise PeerProtocolError(PeerFault.BAD_AGGREGATE, peer=sender, detail="partial of another aggregate")
        try:
            partials = ciphertexts_from_bytes(message.partials, self._public_key, count=self._parameters.ciphertexts)
        except CryptoError as error:
            raise PeerProtocolError(PeerFault.BAD_CIPHERTEXT, peer=sender, detail=str(error)) from None
        try:
            proof = PartialDecryptionProof.from_bytes(message.proof, max_bytes=2 * ciphertext_bytes(self._public_key)
                                                      + math.factorial(len(self._parameters.keys.key_holders))
                                                      .bit_length() // 8 + 64)
            verify_partial_decryption(self._parameters.keys.threshold_key(), sender, self._aggregate_values, partials,
                                      proof, partial_proof_context(self._config, self._aggregate_digest))
        except CryptoError as error:
            raise PeerProtocolError(PeerFault.BAD_PROOF, peer=sender, detail=str(error)) from None
        self._partials[sender] = partials

    def _on_drop(self, client: int) -> None:
        # A contribution already multiplied into the product stays counted (the client is then both a
        # contributor and in the drop records, as a SecAgg survivor that vanishes during unmasking is).
        # A commitment, an approval or a partial from a client dropped in that stage is forgotten.
        if self._stage is Stage.COMMITMENT:
            self._commitments.pop(client, None)
        elif self._stage is Stage.AGGREGATE_APPROVAL:
            self._approvals.pop(client, None)
        elif self._stage is Stage.PARTIAL_DECRYPTION:
            self._partials.pop(client, None)

    def _discard_state(self) -> None:
        self._contributions = {}
        self._product = None
        self._aggregate_values = []
        self._partials = {}

    def _close(self, responders: frozenset[int]) -> list[ServerMessage]:
        config, parameters = self._config, self._parameters
        keys = parameters.keys
        if self._stage is Stage.COMMITMENT:
            self._require(len(self._commitments), parameters.min_contributors, "too few clients committed")
            self._commitment_set = tuple(self._commitments[c] for c in sorted(self._commitments))
            self._set_digest = commitment_set_digest(self._commitment_set)
            self._active = set(self._commitments)
            return [RevealRequest(round_id=config.round_id, recipient=c, commitments=self._commitment_set)
                    for c in sorted(self._commitments)]
        if self._stage is Stage.CIPHERTEXT_INPUT:
            self._require(len(self._contributions), parameters.min_contributors, "too few proven contributions")
            if self._product is None:  # pragma: no cover - required above
                raise RuntimeError("unreachable")
            self._contributors = tuple(sorted(self._contributions))
            self._aggregate_values = self._product
            self._aggregate = ciphertexts_to_bytes(self._product, self._public_key)
            self._aggregate_digest = hashlib.sha256(self._aggregate).digest()
            contributions = tuple(self._contributions[c] for c in self._contributors)
            self._contributions = {}
            # Every contributor checks the aggregate itself and signs it (the approval stage).
            self._active = set(self._contributors)
            return [AggregateRequest(round_id=config.round_id, recipient=c, commitments=self._commitment_set,
                                     contributions=contributions, aggregate=self._aggregate)
                    for c in self._contributors]
        if self._stage is Stage.AGGREGATE_APPROVAL:
            eligible = set(self._contributors) & set(keys.key_holders) if keys.threshold_decryption \
                else set(self._contributors)
            approvers = sorted(c for c in self._approvals if c in responders and c in eligible)
            self._require(len(approvers), keys.approval_quorum, "too few clients approved the aggregate")
            approvals = tuple(self._approvals[c] for c in approvers)
            if not keys.threshold_decryption:
                # Clients have nothing more to say; only the decryptor answers in the next stage.
                self._active = set()
                return [DecryptionRequest(round_id=config.round_id, recipient=DECRYPTOR,
                                          contributors=self._contributors, aggregate=self._aggregate,
                                          approvals=approvals)]
            self._active = set(approvers)
            return [DecryptionRequest(round_id=config.round_id, recipient=h, contributors=self._contributors,
                                      aggregate=self._aggregate, approvals=approvals) for h in approvers]
        if self._stage is Stage.DECRYPTION:
            if self._result is None:
                reason = self._decryptor_fault or "the decryptor did not return the total"
                raise RoundAborted(reason, stage=self._stage.label, have=0, need=1)
            self._discard_state()
            return []
        # Stage.PARTIAL_DECRYPTION: every partial kept here has passed its proof.
        partials = {h: self._partials[h] for h in responders if h in self._partials}
        self._require(len(partials), keys.decryption_threshold, "too few proven partial decryptions")
        key = keys.threshold_key()
        try:
            plaintexts = combine_partial_decryptions(key, partials)
        except CryptoError as error:
            raise RoundAborted(f"the partial decryptions do not combine: {error}", stage=self._stage.label,
                               have=len(partials), need=key.threshold) from None
        try:
            total = _decode_total(config, plaintexts, len(self._contributors))
        except ValueError as error:
            raise RoundAborted(f"the decrypted total does not fit its slots (a contribution was out of range): "
                               f"{error}", stage=self._stage.label, have=len(partials), need=key.threshold) from None
        self._finish(total, frozenset(self._contributors))
        self._discard_state()
        return []


class PaillierDeployment:
    """Everything a Paillier deployment sets up once: keys, the signer registry, and each party's secrets.

    In a real deployment these live on different machines: each client keeps its
    own :class:`PaillierCredentials`, the key holder its :class:`PaillierKeyHolder`,
    and only :attr:`keys` is public. The simulator and the training wrapper hold
    them all because they play every party.

    ``protocol`` picks the trust arrangement. ``threat`` sets how many of the
    registered clients may collude with the server (``corrupt_fraction`` of
    them, rounded down): every decrypted total then holds at least that many
    plus two contributions, and approvals come from more than that many. For a
    separate decryptor, a fresh ``phe`` key pair goes to the key holder. For
    threshold decryption, a trusted dealer
    (:func:`~fedsecure.crypto.deal_threshold_paillier`) shares the key among
    ``clients``, any ``decryption_threshold`` of whom can decrypt; by default the
    smallest t with 2t > holders + colluders, so that no two contributor sets can
    be decrypted in one round. Keys below 2048 bits need ``insecure=True``.
    """

    __slots__ = ("keys", "credentials", "key_holder")

    def __init__(self, keys: PaillierKeys, credentials: Mapping[int, PaillierCredentials],
                 key_holder: PaillierKeyHolder | None) -> None:
        self.keys = keys
        self.credentials = dict(credentials)
        self.key_holder = key_holder

    @classmethod
    def create(cls, protocol: ProtocolKind, clients: Sequence[int], *, key_bits: int = MIN_SECURE_KEY_BITS,
               threat: ThreatModel | None = None, decryption_threshold: int | None = None,
               insecure: bool = False) -> PaillierDeployment:
        if not protocol.is_paillier:
            raise ConfigurationError(f"{protocol.value} is not a Paillier protocol", parameter="protocol")
        if key_bits < MIN_SECURE_KEY_BITS and not insecure:
            raise ConfigurationError(f"{key_bits}-bit Paillier keys are insecure; use key_bits >= "
                                     f"{MIN_SECURE_KEY_BITS}", parameter="key_bits")
        threat = threat or ThreatModel()
        holders = tuple(sorted(set(int(c) for c in clients)))
        colluders = math.floor(threat.corrupt_fraction * len(holders))
        if len(holders) < colluders + 2:
            raise ConfigurationError(f"{len(holders)} clients cannot hold two honest contributions beside "
                                     f"{colluders} colluders", parameter="clients")
        signing = {c: SigningKey.generate() for c in holders}
        registry = {c: key.public_bytes for c, key in signing.items()}
        if protocol is ProtocolKind.PAILLIER_THRESHOLD:
            low = (len(holders) + colluders) // 2 + 1
            threshold = decryption_threshold if decryption_threshold is not None else low
            if not low <= threshold <= len(holders):
                raise ConfigurationError(
                    f"decryption_threshold must exceed (holders + colluders) / 2 so that no two contributor sets can "
                    f"be decrypted in one round: in [{low}, {len(holders)}] for {len(holders)} holders and "
                    f"{colluders} colluders", parameter="decryption_threshold")
            key, shares = deal_threshold_paillier(key_bits, holders, threshold)
            keys = PaillierKeys(public_key=key.public_key, signing_keys=registry, key_holders=holders,
                                decryption_threshold=threshold, insecure=insecure, colluders=colluders,
                                verification_base=key.verification_base, verification_keys=key.verification_keys)
            credentials = {c: PaillierCredentials(signing[c], keys, shares[c]) for c in holders}
            return cls(keys, credentials, None)
        public, private = generate_paillier_keypair(key_bits)
        keys = PaillierKeys(public_key=public, signing_keys=registry, insecure=insecure, colluders=colluders)
        holder = PaillierKeyHolder(PaillierDecryptor(private), signing_keys=registry, colluders=colluders)
        return cls(keys, {c: PaillierCredentials(signing[c], keys) for c in holders}, holder)

    def __reduce__(self) -> NoReturn:
        raise TypeError("a PaillierDeployment holds secrets and cannot be pickled")

    def __repr__(self) -> str:
        kind = "threshold" if self.keys.threshold_decryption else "separate decryptor"
        return f"<PaillierDeployment {kind}, {self.keys.key_bits}-bit key, {len(self.credentials)} clients>"
