"""Paillier aggregation as sans-IO sessions: a separate decryptor, or threshold decryption by the clients.

Both arrangements share the first stage (CiphertextInput): each client packs its
encoded update into slots (BatchCrypt, USENIX ATC 2020), encrypts the
plaintexts under the deployment's Paillier key and signs the ciphertexts. The
server checks each signature, multiplies the ciphertexts as they arrive and
keeps them to show whoever decrypts.

* **Separate decryptor** (:class:`PaillierKeyHolder`, FATE's "arbiter"): the
  server forwards every signed contribution and the product. The key holder
  checks the signatures against its own registry, counts distinct
  contributors against its own minimum, recomputes the product, refuses a round
  it has already decrypted, and returns only the decoded total.
* **Threshold** (Damgård–Jurik, PKC 2001): every contributing client that holds
  a key share gets the same request, performs the same checks, and returns a
  partial decryption of the product; any t of them give the total.

Who must not collude with whom is in SECURITY.md.
"""

from __future__ import annotations

import hashlib
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
    SigningKey,
    ThresholdPaillierKey,
    ciphertext_bytes,
    ciphertexts_from_bytes,
    ciphertexts_to_bytes,
    combine_partial_decryptions,
    deal_threshold_paillier,
    generate_paillier_keypair,
    multiply_ciphertexts,
    verify_signature,
)
from ..encoding import EncodedUpdate
from ._config import PaillierKeys, PaillierParameters, ProtocolKind, RoundConfig
from ._messages import (
    DECRYPTOR,
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
)
from ._session import SERVER, ClientSession, ServerSession
from ._stages import Stage

__all__ = [
    "PaillierCredentials",
    "PaillierDeployment",
    "PaillierKeyHolder",
    "PaillierClientSession",
    "PaillierServerSession",
    "contribution_payload",
    "commitment_payload",
    "commitment_set_digest",
]

_COMMITMENT_LABEL = b"fedsecure/v1/paillier-commitment"
_REVEAL_LABEL = b"fedsecure/v1/paillier-reveal"
_SET_LABEL = b"fedsecure/v1/paillier-commitment-set"


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


def _parameters(config: RoundConfig) -> PaillierParameters:
    if config.paillier is None:
        raise LocalProtocolError("not a Paillier round")
    return config.paillier


def _server_fault(fault: PeerFault, detail: str = "") -> PeerProtocolError:
    return PeerProtocolError(fault, peer=SERVER, detail=detail)  # type: ignore[arg-type]


def _check_commitments(config: RoundConfig, commitments: Sequence[Commitment], registry: Mapping[int, bytes],
                       blame: int | str) -> None:
    for commitment in commitments:
        sender = commitment.sender
        if not config.in_cohort(sender) or sender not in registry:
            raise PeerProtocolError(PeerFault.NOT_IN_COHORT, peer=blame,  # type: ignore[arg-type]
                                    detail=f"commitment of {sender}")
        try:
            verify_signature(registry[sender], commitment.signature,
                             commitment_payload(config, sender, commitment.digest))
        except CryptoError:
            raise PeerProtocolError(PeerFault.BAD_SIGNATURE, peer=blame,  # type: ignore[arg-type]
                                    detail=f"commitment of {sender}") from None


def _check_contribution(config: RoundConfig, contribution: EncryptedInput, committed: bytes, set_digest: bytes,
                        registry: Mapping[int, bytes], blame: int | str) -> list[gmpy2.mpz]:
    """One revealed contribution: it matches its commitment, is signed over the commitment set, and parses.

    The server checks each contribution as it arrives (``blame`` is its sender);
    whoever decrypts checks them all again (``blame`` is the server that relayed them).
    """
    sender = contribution.sender

    def fault(kind: PeerFault, detail: str) -> PeerProtocolError:
        return PeerProtocolError(kind, peer=blame, detail=detail)  # type: ignore[arg-type]

    if hashlib.sha256(contribution.ciphertexts).digest() != committed:
        raise fault(PeerFault.BAD_AGGREGATE, f"{sender}'s ciphertexts differ from its commitment")
    try:
        verify_signature(registry[sender], contribution.signature,
                         contribution_payload(config, sender, contribution.ciphertexts, set_digest))
    except CryptoError:
        raise fault(PeerFault.BAD_SIGNATURE, f"contribution of {sender}") from None
    parameters = _parameters(config)
    try:
        return ciphertexts_from_bytes(contribution.ciphertexts, parameters.keys.public_key,
                                      count=parameters.ciphertexts)
    except CryptoError as error:
        raise fault(PeerFault.BAD_CIPHERTEXT, f"contribution of {sender}: {error}") from None


def _check_request(config: RoundConfig, request: DecryptionRequest, registry: Mapping[int, bytes],
                   min_contributors: int, blame: int | str) -> list[gmpy2.mpz]:
    """Everything whoever decrypts must check before it decrypts; returns the recomputed aggregate.

    ``registry`` and ``min_contributors`` are the checker's own (a key holder
    does not take them from the server). ``blame`` names who sent the request.
    Every contributor must have committed to its ciphertexts before any were
    revealed, and revealed them against this very commitment set.
    """
    parameters = _parameters(config)
    public_key = parameters.keys.public_key

    def fault(kind: PeerFault, detail: str) -> PeerProtocolError:
        return PeerProtocolError(kind, peer=blame, detail=detail)  # type: ignore[arg-type]

    contributors = [c.sender for c in request.contributions]
    if len(contributors) < min_contributors:
        raise fault(PeerFault.TOO_FEW_CONTRIBUTORS, f"{len(contributors)} contributors, "
                    f"at least {min_contributors} required")
    if len(contributors) > parameters.layout.max_contributors:
        raise fault(PeerFault.BAD_AGGREGATE, f"{len(contributors)} contributors overflow slots sized for "
                    f"{parameters.layout.max_contributors}")
    _check_commitments(config, request.commitments, registry, blame)
    committed = {c.sender: c.digest for c in request.commitments}
    set_digest = commitment_set_digest(request.commitments)
    columns = []
    for contribution in request.contributions:
        if contribution.sender not in committed:
            raise fault(PeerFault.BAD_AGGREGATE, f"{contribution.sender} contributed without committing")
        columns.append(_check_contribution(config, contribution, committed[contribution.sender], set_digest,
                                           registry, blame))
    aggregate = multiply_ciphertexts(columns, public_key)
    if ciphertexts_to_bytes(aggregate, public_key) != request.aggregate:
        raise fault(PeerFault.BAD_AGGREGATE, "the product of the contributions differs from the aggregate")
    return aggregate


def _decode_total(config: RoundConfig, plaintexts: list[int], contributors: int) -> np.ndarray:
    parameters = _parameters(config)
    signed = parameters.layout.unpack_sum(plaintexts, length=config.vector_length, contributors=contributors)
    return config.ring.from_signed(signed)


class PaillierCredentials:
    """One client's long-lived Paillier secrets: its signing key, its encryptor and (threshold) its key share.

    It remembers the rounds it has partially decrypted, and refuses a second
    decryption for any of them; it never decrypts a sum of fewer than
    ``min_contributors`` inputs, whatever a round configuration says. Secret:
    no pickling, no secrets in ``repr``.
    """

    __slots__ = ("_signing_key", "_key_share", "_encryptor", "_decrypted_rounds", "_min_contributors",
                 "_trusted_keys")

    def __init__(self, signing_key: SigningKey, key_share: PaillierKeyShare | None = None, *,
                 min_contributors: int = 2, decrypted_rounds: Iterable[int] = (),
                 trusted_keys: PaillierKeys | None = None) -> None:
        if min_contributors < 2:
            raise ConfigurationError("a key-share holder must require at least two contributors",
                                     parameter="min_contributors")
        self._signing_key = signing_key
        self._key_share = key_share
        self._encryptor: PaillierEncryptor | None = None
        self._decrypted_rounds: set[int] = set(decrypted_rounds)
        self._min_contributors = min_contributors
        self._trusted_keys = trusted_keys

    @property
    def trusted_keys(self) -> PaillierKeys | None:
        """The deployment's public keys as this client received them at setup (not from the server)."""
        return self._trusted_keys

    def check_keys(self, config: RoundConfig) -> None:
        """Refuse a round under another public key, signer registry or key-holder arrangement than the trusted one.

        Without this check a server could put a key of its own in the configuration and decrypt every input.
        A key share also refuses a modulus other than its own.
        """
        keys = _parameters(config).keys
        share = self._key_share
        if share is not None and int(share.key.public_key.n) != int(keys.public_key.n):
            raise LocalProtocolError("the round's Paillier key is not the one this client holds a share of")
        trusted = self._trusted_keys
        if trusted is None:
            return
        if int(trusted.public_key.n) != int(keys.public_key.n) or trusted.key_holders != keys.key_holders \
                or trusted.decryption_threshold != keys.decryption_threshold \
                or any(trusted.signing_keys.get(c) != keys.signing_keys.get(c) for c in config.clients):
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
        return self._min_contributors

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
            raise PeerProtocolError(PeerFault.ALREADY_DECRYPTED, peer=blame,  # type: ignore[arg-type]
                                    detail=f"round {round_id}")
        self._decrypted_rounds.add(round_id)

    def __reduce__(self) -> NoReturn:
        raise TypeError("PaillierCredentials hold secrets and cannot be pickled")

    def __repr__(self) -> str:
        return f"<PaillierCredentials {self._signing_key!r} key_share={self._key_share is not None}>"


class PaillierKeyHolder:
    """The separate decryptor: holds the private key, its own signer registry and its own minimum.

    It decrypts at most one aggregate per round id, only after checking every
    commitment and signature and recomputing the product itself, and returns
    only the total. Threat model: it must not collude with the server (together
    they see every individual ciphertext and can decrypt it).
    """

    __slots__ = ("_decryptor", "_registry", "_min_contributors", "_decrypted_rounds")

    def __init__(self, decryptor: PaillierDecryptor, *, signing_keys: Mapping[int, bytes],
                 min_contributors: int = 2, decrypted_rounds: Iterable[int] = ()) -> None:
        if min_contributors < 2:
            raise ConfigurationError("a key holder must require at least two contributors",
                                     parameter="min_contributors")
        self._decryptor = decryptor
        self._registry = dict(signing_keys)
        self._min_contributors = min_contributors
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
    def min_contributors(self) -> int:
        return self._min_contributors

    def receive(self, config: RoundConfig, request: DecryptionRequest) -> DecryptedAggregate:
        """Check a decryption request and answer it with the decoded total, or raise naming the fault."""
        if request.recipient != DECRYPTOR or request.round_id != config.round_id:
            raise _server_fault(PeerFault.WRONG_RECIPIENT if request.recipient != DECRYPTOR else PeerFault.WRONG_ROUND)
        parameters = _parameters(config)
        if parameters.keys.public_key != self._decryptor.public_key or parameters.keys.threshold_decryption:
            raise _server_fault(PeerFault.CONFIG_MISMATCH, "the round is not under this key holder's key")
        if request.round_id in self._decrypted_rounds:
            raise _server_fault(PeerFault.ALREADY_DECRYPTED, f"round {request.round_id}")
        minimum = max(self._min_contributors, parameters.min_contributors)
        aggregate = _check_request(config, request, self._registry, minimum, SERVER)
        # From here on the round counts as decrypted, whatever happens next.
        self._decrypted_rounds.add(request.round_id)
        contributors = tuple(sorted(c.sender for c in request.contributions))
        try:
            total = _decode_total(config, self._decryptor.decrypt(aggregate), len(contributors))
        except ValueError as error:
            # A contribution outside its slots (a malicious client's). Nothing is returned.
            raise _server_fault(PeerFault.BAD_AGGREGATE, f"the decrypted total does not fit its slots: {error}") from None
        return DecryptedAggregate(round_id=config.round_id, sender=DECRYPTOR, contributors=contributors, vector=total)

    def __reduce__(self) -> NoReturn:
        raise TypeError("a PaillierKeyHolder holds a private key and cannot be pickled")

    def __repr__(self) -> str:
        return f"<PaillierKeyHolder {self._decryptor!r} min_contributors={self._min_contributors}>"


class PaillierClientSession(ClientSession):
    """A Paillier client: packs, encrypts, commits, reveals, and in threshold mode partially decrypts.

    Threat model: the server alone learns nothing of this client's input
    (semantic security of Paillier under DCR, plus the short-exponent
    assumption of the DJN randomiser). It reveals its ciphertexts only against
    a commitment set that contains its own commitment and at least the minimum
    number of committers. As a key-share holder, it only decrypts a product it
    recomputed from signed, committed contributions, once per round.
    """

    def __init__(self, config: RoundConfig, client_id: int, update: EncodedUpdate,
                 credentials: PaillierCredentials | None = None) -> None:
        super().__init__(config, client_id, update)
        if credentials is None:
            raise LocalProtocolError(f"client {client_id} has no Paillier credentials")
        parameters = _parameters(config)
        if parameters.keys.signing_keys.get(client_id) != credentials.verify_key:
            raise LocalProtocolError(f"client {client_id}'s signing key is not the one registered for the round")
        credentials.check_keys(config)
        self._credentials = credentials
        self._ciphertexts: bytes | None = None
        self._digest = b""

    def _handle(self, message: Message) -> list[ClientMessage]:
        if isinstance(message, RoundStart):
            return [self._commit()]
        if isinstance(message, RevealRequest):
            return [self._reveal(message)]
        if isinstance(message, DecryptionRequest):
            return [self._partial_decryption(message)]
        raise _server_fault(PeerFault.OUT_OF_STAGE, type(message).__name__)

    def _commit(self) -> CiphertextCommitment:
        config, parameters = self._config, _parameters(self._config)
        signed = config.ring.to_signed(self._encoded_values())
        plaintexts = parameters.layout.pack(signed)
        ciphertexts = self._credentials.encryptor(parameters.keys).encrypt(plaintexts)
        self._ciphertexts = ciphertexts_to_bytes(ciphertexts, parameters.keys.public_key)
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
        if len(request.commitments) < max(parameters.min_contributors, self._credentials.min_contributors):
            raise _server_fault(PeerFault.TOO_FEW_CONTRIBUTORS, f"{len(request.commitments)} commitments")
        _check_commitments(config, request.commitments, parameters.keys.signing_keys, SERVER)
        set_digest = commitment_set_digest(request.commitments)
        signature = self._credentials.sign(contribution_payload(config, self._client_id, self._ciphertexts, set_digest))
        return EncryptedInput(round_id=config.round_id, sender=self._client_id, ciphertexts=self._ciphertexts,
                              signature=signature)

    def _partial_decryption(self, request: DecryptionRequest) -> PartialDecryption:
        config, parameters = self._config, _parameters(self._config)
        share = self._credentials.key_share
        if share is None:
            raise LocalProtocolError(f"client {self._client_id} holds no decryption key share")
        minimum = max(parameters.min_contributors, self._credentials.min_contributors)
        aggregate = _check_request(config, request, parameters.keys.signing_keys, minimum, SERVER)
        self._credentials.claim_round(config.round_id, blame=SERVER)
        partials = share.partial_decrypt(aggregate)
        return PartialDecryption(round_id=config.round_id, sender=self._client_id,
                                 aggregate_digest=hashlib.sha256(request.aggregate).digest(),
                                 partials=ciphertexts_to_bytes(partials, parameters.keys.public_key))

    def _export_fields(self) -> dict[str, Any]:
        return {"ciphertexts": None if self._ciphertexts is None else self._ciphertexts.hex(),
                "digest": self._digest.hex()}

    def _restore_fields(self, fields: Mapping[str, Any], credentials: Any) -> None:
        if not isinstance(credentials, PaillierCredentials):
            raise LocalProtocolError(f"client {self._client_id} has no Paillier credentials")
        if _parameters(self._config).keys.signing_keys.get(self._client_id) != credentials.verify_key:
            raise LocalProtocolError(f"client {self._client_id}'s signing key is not the one registered for the round")
        credentials.check_keys(self._config)
        self._credentials = credentials
        ciphertexts = fields["ciphertexts"]
        self._ciphertexts = None if ciphertexts is None else bytes.fromhex(ciphertexts)
        self._digest = bytes.fromhex(fields["digest"])

    def _discard_secrets(self) -> None:
        super()._discard_secrets()
        self._ciphertexts = None


class PaillierServerSession(ServerSession):
    """The Paillier server: collects commitments, then signed ciphertexts; multiplies; asks for the total.

    Memory: it keeps every contribution until the decryption request is sent
    (whoever decrypts must see them), O(clients x ciphertexts).
    """

    def __init__(self, config: RoundConfig) -> None:
        super().__init__(config)
        parameters = _parameters(config)
        self._parameters = parameters
        self._public_key = parameters.keys.public_key
        width = ciphertext_bytes(self._public_key)
        payload = parameters.ciphertexts * width
        self._max_message_bytes = 64 + len(config.clients) * (payload + 200) + payload + 8 + max(
            config.vector_length * config.ring.word_bytes, 4 * len(config.clients))
        self._commitments: dict[int, Commitment] = {}
        self._commitment_set: tuple[Commitment, ...] = ()
        self._set_digest = b""
        self._contributions: dict[int, EncryptedInput] = {}
        self._product: list[gmpy2.mpz] | None = None
        self._aggregate: bytes = b""
        self._partials: dict[int, list[gmpy2.mpz]] = {}
        self._contributors: frozenset[int] = frozenset()

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
        if frozenset(message.contributors) != self._contributors:
            raise PeerProtocolError(PeerFault.BAD_AGGREGATE, peer=DECRYPTOR, detail="decrypted another contributor set")
        ring = self._config.ring
        if message.vector.shape != (self._config.vector_length,) or message.vector.dtype != ring.dtype:
            raise PeerProtocolError(PeerFault.WRONG_SIZE, peer=DECRYPTOR)
        if not ring.contains(message.vector):
            raise PeerProtocolError(PeerFault.MALFORMED, peer=DECRYPTOR, detail="values outside the ring")
        self._finish(np.array(message.vector), self._contributors)

    def _handle(self, message: ClientMessage) -> None:
        if isinstance(message, CiphertextCommitment):
            self._on_commitment(message)
        elif isinstance(message, EncryptedInput):
            self._on_input(message)
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

    def _on_partial(self, message: PartialDecryption) -> None:
        sender = message.sender
        if message.aggregate_digest != hashlib.sha256(self._aggregate).digest():
            raise PeerProtocolError(PeerFault.BAD_AGGREGATE, peer=sender, detail="partial of another aggregate")
        try:
            self._partials[sender] = ciphertexts_from_bytes(message.partials, self._public_key,
                                                            count=self._parameters.ciphertexts)
        except CryptoError as error:
            raise PeerProtocolError(PeerFault.BAD_CIPHERTEXT, peer=sender, detail=str(error)) from None

    def _on_drop(self, client: int) -> None:
        # A contribution already multiplied into the product stays counted (the client is then both a
        # contributor and in the drop records, as a SecAgg survivor that vanishes during unmasking is);
        # whoever decrypts sees it among the contributions. A partial from a dropped holder is forgotten.
        if self._stage is Stage.COMMITMENT:
            self._commitments.pop(client, None)
        elif self._stage is Stage.PARTIAL_DECRYPTION:
            self._partials.pop(client, None)

    def _discard_state(self) -> None:
        self._contributions = {}
        self._product = None
        self._partials = {}

    def _close(self, responders: frozenset[int]) -> list[ServerMessage]:
        config, parameters = self._config, self._parameters
        if self._stage is Stage.COMMITMENT:
            self._require(len(self._commitments), parameters.min_contributors, "too few clients committed")
            self._commitment_set = tuple(self._commitments[c] for c in sorted(self._commitments))
            self._set_digest = commitment_set_digest(self._commitment_set)
            self._active = set(self._commitments)
            return [RevealRequest(round_id=config.round_id, recipient=c, commitments=self._commitment_set)
                    for c in sorted(self._commitments)]
        if self._stage is Stage.CIPHERTEXT_INPUT:
            self._require(len(self._contributions), parameters.min_contributors, "too few signed contributions")
            if self._product is None:  # pragma: no cover - required above
                raise RuntimeError("unreachable")
            self._contributors = frozenset(self._contributions)
            self._aggregate = ciphertexts_to_bytes(self._product, self._public_key)
            contributions = tuple(self._contributions[c] for c in sorted(self._contributions))
            self._contributions = {}
            if not parameters.keys.threshold_decryption:
                # Clients have nothing more to say; only the decryptor answers in the next stage.
                self._active = set()
                return [DecryptionRequest(round_id=config.round_id, recipient=DECRYPTOR,
                                          commitments=self._commitment_set, contributions=contributions,
                                          aggregate=self._aggregate)]
            holders = sorted(self._contributors & set(parameters.keys.key_holders))
            self._require(len(holders), parameters.keys.decryption_threshold, "too few key-share holders contributed")
            self._active = set(holders)
            return [DecryptionRequest(round_id=config.round_id, recipient=h, commitments=self._commitment_set,
                                      contributions=contributions, aggregate=self._aggregate) for h in holders]
        if self._stage is Stage.DECRYPTION:
            if self._result is None:
                raise RoundAborted("the decryptor did not return the total", stage=self._stage.label, have=0, need=1)
            self._discard_state()
            return []
        # Stage.PARTIAL_DECRYPTION
        partials = {h: self._partials[h] for h in responders if h in self._partials}
        self._require(len(partials), parameters.keys.decryption_threshold, "too few partial decryptions")
        key = ThresholdPaillierKey(public_key=self._public_key, holders=parameters.keys.key_holders,
                                   threshold=parameters.keys.decryption_threshold)
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
        self._finish(total, self._contributors)
        self._discard_state()
        return []


class PaillierDeployment:
    """Everything a Paillier deployment sets up once: keys, the signer registry, and each party's secrets.

    In a real deployment these live on different machines: each client keeps its
    own :class:`PaillierCredentials`, the key holder its :class:`PaillierKeyHolder`,
    and only :attr:`keys` is public. The simulator and the training wrapper hold
    them all because they play every party.

    ``protocol`` picks the trust arrangement. For a separate decryptor, a fresh
    ``phe`` key pair goes to the key holder. For threshold decryption, a trusted
    dealer (:func:`~fedsecure.crypto.deal_threshold_paillier`) shares the key
    among ``clients``, any ``decryption_threshold`` of whom can decrypt (default:
    a majority). Keys below 2048 bits need ``insecure=True``.
    """

    __slots__ = ("keys", "credentials", "key_holder")

    def __init__(self, keys: PaillierKeys, credentials: Mapping[int, PaillierCredentials],
                 key_holder: PaillierKeyHolder | None) -> None:
        self.keys = keys
        self.credentials = dict(credentials)
        self.key_holder = key_holder

    @classmethod
    def create(cls, protocol: ProtocolKind, clients: Sequence[int], *, key_bits: int = MIN_SECURE_KEY_BITS,
               decryption_threshold: int | None = None, insecure: bool = False,
               min_contributors: int = 2) -> PaillierDeployment:
        if not protocol.is_paillier:
            raise ConfigurationError(f"{protocol.value} is not a Paillier protocol", parameter="protocol")
        if key_bits < MIN_SECURE_KEY_BITS and not insecure:
            raise ConfigurationError(f"{key_bits}-bit Paillier keys are insecure; use key_bits >= "
                                     f"{MIN_SECURE_KEY_BITS}", parameter="key_bits")
        holders = tuple(sorted(set(int(c) for c in clients)))
        signing = {c: SigningKey.generate() for c in holders}
        registry = {c: key.public_bytes for c, key in signing.items()}
        if protocol is ProtocolKind.PAILLIER_THRESHOLD:
            threshold = decryption_threshold if decryption_threshold is not None else len(holders) // 2 + 1
            if not max(2, len(holders) // 2 + 1) <= threshold <= len(holders):
                raise ConfigurationError(
                    f"decryption_threshold must be a strict majority of the {len(holders)} holders, at least 2: "
                    f"in [{max(2, len(holders) // 2 + 1)}, {len(holders)}]", parameter="decryption_threshold")
            key, shares = deal_threshold_paillier(key_bits, holders, threshold)
            keys = PaillierKeys(public_key=key.public_key, signing_keys=registry, key_holders=holders,
                                decryption_threshold=threshold, insecure=insecure)
            credentials = {c: PaillierCredentials(signing[c], shares[c], min_contributors=max(2, min_contributors),
                                                  trusted_keys=keys)
                           for c in holders}
            return cls(keys, credentials, None)
        public, private = generate_paillier_keypair(key_bits)
        keys = PaillierKeys(public_key=public, signing_keys=registry, insecure=insecure)
        holder = PaillierKeyHolder(PaillierDecryptor(private), signing_keys=registry,
                                   min_contributors=max(2, min_contributors))
        return cls(keys, {c: PaillierCredentials(signing[c], trusted_keys=keys) for c in holders}, holder)

    def __reduce__(self) -> NoReturn:
        raise TypeError("a PaillierDeployment holds secrets and cannot be pickled")

    def __repr__(self) -> str:
        kind = "threshold" if self.keys.threshold_decryption else "separate decryptor"
        return f"<PaillierDeployment {kind}, {self.keys.key_bits}-bit key, {len(self.credentials)} clients>"
