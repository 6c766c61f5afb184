"""Protocol messages: frozen, slotted, self-validating (in the manner of h11's events).

Client-to-server messages carry their ``sender``; server-to-client messages
carry their ``recipient``. Every message carries the ``round_id`` so that a
message replayed from another round is refused. Field validation here is
context-free (types, ranges, sizes, uniqueness); what depends on the round
(cohort, stage, expected lengths) is checked by the sessions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

from ..crypto import PUBLIC_KEY_BYTES, SHARE_BYTES, FIELD_PRIME

__all__ = [
    "Message",
    "ClientMessage",
    "ServerMessage",
    "RoundStart",
    "AdvertiseKeys",
    "PublicKeys",
    "KeysBroadcast",
    "EncryptedShare",
    "ShareKeys",
    "SharesDelivery",
    "MaskedInput",
    "UnmaskRequest",
    "ConsistencyRequest",
    "ConsistencySignature",
    "SurvivorSignature",
    "ShareValue",
    "UnmaskingShares",
    "PlaintextInput",
    "CiphertextCommitment",
    "Commitment",
    "RevealRequest",
    "EncryptedInput",
    "AggregateRequest",
    "AggregateApproval",
    "DecryptionRequest",
    "DecryptedAggregate",
    "PartialDecryption",
    "MAX_ID",
    "DECRYPTOR",
]

MAX_ID = 2**32 - 1
DIGEST_BYTES = 32
SIGNATURE_BYTES = 64
#: The party id of a separate Paillier decryptor on the wire (client ids stop one below it).
DECRYPTOR = MAX_ID
#: The largest ciphertext list one message may carry (a 1e8-parameter update at 2048 bits is ~2e8 bytes).
MAX_CIPHERTEXT_BYTES = 1 << 31


def _check_id(value: object, what: str) -> None:
    if type(value) is not int or not 0 <= value <= MAX_ID:
        raise ValueError(f"{what} must be an integer in [0, 2^32)")


def _check_round(value: object) -> None:
    if type(value) is not int or not 0 <= value < 2**64:
        raise ValueError("round_id must be an integer in [0, 2^64)")


def _check_bytes(value: object, length: int, what: str) -> None:
    if type(value) is not bytes or len(value) != length:
        raise ValueError(f"{what} must be {length} bytes")


def _check_unique(ids: list[int], what: str) -> None:
    if len(set(ids)) != len(ids):
        raise ValueError(f"{what} lists an id twice")


def _check_survivors(survivors: object) -> None:
    if type(survivors) is not tuple:
        raise ValueError("survivors must be a tuple")
    for s in survivors:
        _check_id(s, "survivor")
    _check_unique(list(survivors), "survivors")


def _readonly_vector(vector: object) -> np.ndarray:
    if not isinstance(vector, np.ndarray) or vector.ndim != 1 or vector.dtype not in (np.dtype("<u4"), np.dtype("<u8")):
        raise ValueError("vector must be a 1-D little-endian uint32 or uint64 array")
    view = vector.view()
    view.flags.writeable = False
    return view


@dataclass(frozen=True, slots=True)
class RoundStart:
    """Server to client: the round begins; binds the configuration digest (Bonawitz et al. 2017, §4, setup)."""

    round_id: int
    recipient: int
    config_digest: bytes

    def __post_init__(self) -> None:
        _check_round(self.round_id)
        _check_id(self.recipient, "recipient")
        _check_bytes(self.config_digest, DIGEST_BYTES, "config_digest")


def _check_optional_signature(value: object) -> None:
    if type(value) is not bytes or len(value) not in (0, SIGNATURE_BYTES):
        raise ValueError(f"signature must be empty or {SIGNATURE_BYTES} bytes")


@dataclass(frozen=True, slots=True)
class AdvertiseKeys:
    """Client to server, stage AdvertiseKeys: the client's two fresh X25519 public keys (c_u^PK, s_u^PK).

    In the active-adversary variant ``signature`` is the client's long-term
    Ed25519 signature over both keys, the round and the configuration
    (Bonawitz et al. 2017, §4, AdvertiseKeys, sigma_u); otherwise it is empty.
    """

    round_id: int
    sender: int
    cipher_public_key: bytes
    mask_public_key: bytes
    signature: bytes = b""

    def __post_init__(self) -> None:
        _check_round(self.round_id)
        _check_id(self.sender, "sender")
        _check_bytes(self.cipher_public_key, PUBLIC_KEY_BYTES, "cipher_public_key")
        _check_bytes(self.mask_public_key, PUBLIC_KEY_BYTES, "mask_public_key")
        if self.cipher_public_key == self.mask_public_key:
            raise ValueError("the two public keys must differ")
        _check_optional_signature(self.signature)


@dataclass(frozen=True, slots=True)
class PublicKeys:
    """One peer's advertised public keys (and, in the active variant, its signature over them), as forwarded."""

    owner: int
    cipher_public_key: bytes
    mask_public_key: bytes
    signature: bytes = b""

    def __post_init__(self) -> None:
        _check_id(self.owner, "owner")
        _check_bytes(self.cipher_public_key, PUBLIC_KEY_BYTES, "cipher_public_key")
        _check_bytes(self.mask_public_key, PUBLIC_KEY_BYTES, "mask_public_key")
        _check_optional_signature(self.signature)


@dataclass(frozen=True, slots=True)
class KeysBroadcast:
    """Server to client: the public keys of the client's neighbours that advertised (U1), itself included."""

    round_id: int
    recipient: int
    keys: tuple[PublicKeys, ...]

    def __post_init__(self) -> None:
        _check_round(self.round_id)
        _check_id(self.recipient, "recipient")
        if type(self.keys) is not tuple or not all(isinstance(k, PublicKeys) for k in self.keys):
            raise ValueError("keys must be a tuple of PublicKeys")
        _check_unique([k.owner for k in self.keys], "keys")


@dataclass(frozen=True, slots=True)
class EncryptedShare:
    """An AES-GCM envelope of one client's shares for one peer.

    ``peer`` is the recipient in :class:`ShareKeys` and the original sender in
    :class:`SharesDelivery`.
    """

    peer: int
    envelope: bytes

    def __post_init__(self) -> None:
        _check_id(self.peer, "peer")
        if type(self.envelope) is not bytes or not 0 < len(self.envelope) <= 4096:
            raise ValueError("envelope must be 1 to 4096 bytes")


def _check_shares(shares: object) -> None:
    if type(shares) is not tuple or not all(isinstance(s, EncryptedShare) for s in shares):
        raise ValueError("shares must be a tuple of EncryptedShare")
    _check_unique([s.peer for s in shares], "shares")


@dataclass(frozen=True, slots=True)
class ShareKeys:
    """Client to server, stage ShareKeys: one envelope per neighbour, for the server to forward.

    ``seed_commitment`` commits to the self-mask seed b_u, so that the server can
    check the seed it reconstructs at unmasking.
    """

    round_id: int
    sender: int
    seed_commitment: bytes
    shares: tuple[EncryptedShare, ...]

    def __post_init__(self) -> None:
        _check_round(self.round_id)
        _check_id(self.sender, "sender")
        _check_bytes(self.seed_commitment, DIGEST_BYTES, "seed_commitment")
        _check_shares(self.shares)


@dataclass(frozen=True, slots=True)
class SharesDelivery:
    """Server to client: the envelopes addressed to the client by neighbours that shared (U2)."""

    round_id: int
    recipient: int
    shares: tuple[EncryptedShare, ...]

    def __post_init__(self) -> None:
        _check_round(self.round_id)
        _check_id(self.recipient, "recipient")
        _check_shares(self.shares)


@dataclass(frozen=True, slots=True, eq=False)
class _VectorMessage:
    """A client's vector of ring words; read-only once constructed."""

    round_id: int
    sender: int
    vector: np.ndarray

    def __post_init__(self) -> None:
        _check_round(self.round_id)
        _check_id(self.sender, "sender")
        object.__setattr__(self, "vector", _readonly_vector(self.vector))


@dataclass(frozen=True, slots=True, eq=False)
class MaskedInput(_VectorMessage):
    """Client to server, stage MaskedInputCollection: y_u = x_u + PRG(b_u) + sum of signed PRG(s_uv)."""


@dataclass(frozen=True, slots=True)
class ConsistencyRequest:
    """Server to client, active variant, stage ConsistencyCheck: the whole set U3 of masked inputs received.

    Bonawitz et al. 2017, §4, ConsistencyCheck: each client signs the set it is
    shown, so that it can later demand proof that enough others saw the same one.
    """

    round_id: int
    recipient: int
    survivors: tuple[int, ...]

    def __post_init__(self) -> None:
        _check_round(self.round_id)
        _check_id(self.recipient, "recipient")
        _check_survivors(self.survivors)


@dataclass(frozen=True, slots=True)
class ConsistencySignature:
    """Client to server, active variant: the client's Ed25519 signature over the survivor set it was shown."""

    round_id: int
    sender: int
    signature: bytes

    def __post_init__(self) -> None:
        _check_round(self.round_id)
        _check_id(self.sender, "sender")
        _check_bytes(self.signature, SIGNATURE_BYTES, "signature")


@dataclass(frozen=True, slots=True)
class SurvivorSignature:
    """One client's consistency signature, as the server forwards it in an :class:`UnmaskRequest`."""

    owner: int
    signature: bytes

    def __post_init__(self) -> None:
        _check_id(self.owner, "owner")
        _check_bytes(self.signature, SIGNATURE_BYTES, "signature")


@dataclass(frozen=True, slots=True)
class UnmaskRequest:
    """Server to client, stage Unmasking: which of the client's neighbours sent a masked input (U3).

    In the active variant ``signatures`` carries the consistency signatures the
    server collected (from U4), which the client verifies before unmasking.
    """

    round_id: int
    recipient: int
    survivors: tuple[int, ...]
    signatures: tuple[SurvivorSignature, ...] = ()

    def __post_init__(self) -> None:
        _check_round(self.round_id)
        _check_id(self.recipient, "recipient")
        _check_survivors(self.survivors)
        if type(self.signatures) is not tuple or not all(isinstance(s, SurvivorSignature) for s in self.signatures):
            raise ValueError("signatures must be a tuple of SurvivorSignature")
        _check_unique([s.owner for s in self.signatures], "signatures")


@dataclass(frozen=True, slots=True)
class ShareValue:
    """One Shamir share (its value is hidden from ``repr``) of ``owner``'s secret, held by the sender."""

    owner: int
    value: int

    def __post_init__(self) -> None:
        _check_id(self.owner, "owner")
        if type(self.value) is not int or not 0 <= self.value < FIELD_PRIME:
            raise ValueError("share value must be a field element")

    def __repr__(self) -> str:
        return f"ShareValue(owner={self.owner}, value=<{SHARE_BYTES} bytes>)"


@dataclass(frozen=True, slots=True)
class UnmaskingShares:
    """Client to server, stage Unmasking: self-mask shares of survivors, key shares of the dropped.

    An honest client never puts the same owner in both lists (Bonawitz et al. 2017, §4, Unmasking).
    """

    round_id: int
    sender: int
    self_mask_shares: tuple[ShareValue, ...]
    key_shares: tuple[ShareValue, ...]

    def __post_init__(self) -> None:
        _check_round(self.round_id)
        _check_id(self.sender, "sender")
        for field_name in ("self_mask_shares", "key_shares"):
            values = getattr(self, field_name)
            if type(values) is not tuple or not all(isinstance(v, ShareValue) for v in values):
                raise ValueError(f"{field_name} must be a tuple of ShareValue")
            _check_unique([v.owner for v in values], field_name)
        if {v.owner for v in self.self_mask_shares} & {v.owner for v in self.key_shares}:
            raise ValueError("a client must never reveal both share kinds of one owner")


@dataclass(frozen=True, slots=True, eq=False)
class PlaintextInput(_VectorMessage):
    """Client to server, plaintext baseline: the encoded update in the clear (no protection)."""


def _check_blob(value: object, what: str) -> None:
    if type(value) is not bytes or not 0 < len(value) <= MAX_CIPHERTEXT_BYTES:
        raise ValueError(f"{what} must be 1 to 2^31 bytes")


@dataclass(frozen=True, slots=True)
class CiphertextCommitment:
    """Client to server, Paillier stage Commitment: SHA-256 of the ciphertexts the client will reveal, signed.

    Committing before anyone reveals stops a client from building its
    ciphertext out of other clients' ciphertexts (Paillier is malleable): that
    is how one malicious client and the server could otherwise cancel every
    input but a victim's.
    """

    round_id: int
    sender: int
    digest: bytes
    signature: bytes

    def __post_init__(self) -> None:
        _check_round(self.round_id)
        _check_id(self.sender, "sender")
        _check_bytes(self.digest, DIGEST_BYTES, "digest")
        _check_bytes(self.signature, SIGNATURE_BYTES, "signature")


@dataclass(frozen=True, slots=True)
class Commitment:
    """One client's signed commitment, as the server forwards it."""

    sender: int
    digest: bytes
    signature: bytes

    def __post_init__(self) -> None:
        _check_id(self.sender, "sender")
        _check_bytes(self.digest, DIGEST_BYTES, "digest")
        _check_bytes(self.signature, SIGNATURE_BYTES, "signature")


def _check_commitments(commitments: object) -> None:
    if type(commitments) is not tuple or not all(isinstance(c, Commitment) for c in commitments):
        raise ValueError("commitments must be a tuple of Commitment")
    senders = [c.sender for c in commitments]
    _check_unique(senders, "commitments")
    if senders != sorted(senders):
        raise ValueError("commitments must be sorted by sender")


@dataclass(frozen=True, slots=True)
class RevealRequest:
    """Server to client, Paillier stage CiphertextInput: every commitment made; reveal yours against this set."""

    round_id: int
    recipient: int
    commitments: tuple[Commitment, ...]

    def __post_init__(self) -> None:
        _check_round(self.round_id)
        _check_id(self.recipient, "recipient")
        _check_commitments(self.commitments)


@dataclass(frozen=True, slots=True)
class EncryptedInput:
    """Client to server, Paillier: the client's packed, encrypted update, its proof and its Ed25519 signature.

    ``proof`` is a proof of knowledge of every plaintext (Damgård–Jurik–Nielsen,
    batched, Fiat–Shamir) bound to the round configuration's digest and the
    sender, so no one can contribute a ciphertext they did not make for this
    round. The signature covers the configuration digest, the round, the sender,
    a SHA-256 of ``ciphertexts`` and a SHA-256 of the commitment set the client
    was shown, so a contribution cannot be attributed to another client,
    replayed in another round, altered, or shown with another commitment set.
    """

    round_id: int
    sender: int
    ciphertexts: bytes
    proof: bytes
    signature: bytes

    def __post_init__(self) -> None:
        _check_round(self.round_id)
        _check_id(self.sender, "sender")
        _check_blob(self.ciphertexts, "ciphertexts")
        _check_blob(self.proof, "proof")
        _check_bytes(self.signature, SIGNATURE_BYTES, "signature")

    def __repr__(self) -> str:
        return f"EncryptedInput(round_id={self.round_id}, sender={self.sender}, <{len(self.ciphertexts)} bytes>)"


def _check_contributors(contributors: object) -> None:
    if type(contributors) is not tuple:
        raise ValueError("contributors must be a tuple")
    for c in contributors:
        _check_id(c, "contributor")
    _check_unique(list(contributors), "contributors")
    if list(contributors) != sorted(contributors):
        raise ValueError("contributors must be sorted")


@dataclass(frozen=True, slots=True)
class AggregateRequest:
    """Server to contributing client, Paillier stage AggregateApproval: every contribution and their product.

    The client checks every commitment, signature and proof and recomputes the
    product; only then does it sign the contributor set and the aggregate's
    digest (an :class:`AggregateApproval`). Whoever decrypts needs a quorum of
    such approvals, so it never has to see a single contribution.
    """

    round_id: int
    recipient: int
    commitments: tuple[Commitment, ...]
    contributions: tuple[EncryptedInput, ...]
    aggregate: bytes

    def __post_init__(self) -> None:
        _check_round(self.round_id)
        _check_id(self.recipient, "recipient")
        _check_commitments(self.commitments)
        if type(self.contributions) is not tuple or not all(isinstance(c, EncryptedInput) for c in self.contributions):
            raise ValueError("contributions must be a tuple of EncryptedInput")
        if any(c.round_id != self.round_id for c in self.contributions):
            raise ValueError("a contribution belongs to another round")
        senders = [c.sender for c in self.contributions]
        _check_unique(senders, "contributions")
        if senders != sorted(senders):
            raise ValueError("contributions must be sorted by sender")
        _check_blob(self.aggregate, "aggregate")

    def __repr__(self) -> str:
        return (f"AggregateRequest(round_id={self.round_id}, recipient={self.recipient}, "
                f"contributors={[c.sender for c in self.contributions]})")


@dataclass(frozen=True, slots=True)
class AggregateApproval:
    """Client to server, Paillier: the client's signature over (round configuration, contributor set, aggregate)."""

    round_id: int
    sender: int
    signature: bytes

    def __post_init__(self) -> None:
        _check_round(self.round_id)
        _check_id(self.sender, "sender")
        _check_bytes(self.signature, SIGNATURE_BYTES, "signature")


def _check_approvals(approvals: object) -> None:
    if type(approvals) is not tuple or not all(isinstance(a, SurvivorSignature) for a in approvals):
        raise ValueError("approvals must be a tuple of SurvivorSignature")
    owners = [a.owner for a in approvals]
    _check_unique(owners, "approvals")


@dataclass(frozen=True, slots=True)
class DecryptionRequest:
    """Server to decryptor (or, for threshold decryption, to each approving holder): the aggregate to decrypt.

    It carries the contributor set, the aggregate and the approvals the
    contributing clients signed over both, never an individual contribution.
    """

    round_id: int
    recipient: int
    contributors: tuple[int, ...]
    aggregate: bytes
    approvals: tuple[SurvivorSignature, ...]

    def __post_init__(self) -> None:
        _check_round(self.round_id)
        _check_id(self.recipient, "recipient")
        _check_contributors(self.contributors)
        _check_blob(self.aggregate, "aggregate")
        _check_approvals(self.approvals)

    def __repr__(self) -> str:
        return (f"DecryptionRequest(round_id={self.round_id}, recipient={self.recipient}, "
                f"contributors={list(self.contributors)}, approvals={len(self.approvals)})")


@dataclass(frozen=True, slots=True)
class DecryptedAggregate:
    """Separate decryptor to server: the aggregate's plaintexts and randomness, so the server can check them."""

    round_id: int
    sender: int
    contributors: tuple[int, ...]
    plaintexts: bytes
    randomness: bytes

    def __post_init__(self) -> None:
        _check_round(self.round_id)
        _check_id(self.sender, "sender")
        _check_contributors(self.contributors)
        _check_blob(self.plaintexts, "plaintexts")
        _check_blob(self.randomness, "randomness")

    def __repr__(self) -> str:
        return (f"DecryptedAggregate(round_id={self.round_id}, sender={self.sender}, "
                f"contributors={list(self.contributors)}, <{len(self.plaintexts)} bytes>)")


@dataclass(frozen=True, slots=True)
class PartialDecryption:
    """Client to server, threshold Paillier: c^(2 Delta s_i) for each aggregate ciphertext, with Shoup's proof.

    ``aggregate_digest`` is the SHA-256 of the aggregate the client approved and
    decrypted, so the server can tell which aggregate a partial belongs to;
    ``proof`` shows the partials were made with the holder's own share.
    """

    round_id: int
    sender: int
    aggregate_digest: bytes
    partials: bytes
    proof: bytes

    def __post_init__(self) -> None:
        _check_round(self.round_id)
        _check_id(self.sender, "sender")
        _check_bytes(self.aggregate_digest, DIGEST_BYTES, "aggregate_digest")
        _check_blob(self.partials, "partials")
        _check_blob(self.proof, "proof")

    def __repr__(self) -> str:
        return f"PartialDecryption(round_id={self.round_id}, sender={self.sender}, <{len(self.partials)} bytes>)"


ClientMessage = Union[AdvertiseKeys, ShareKeys, MaskedInput, ConsistencySignature, UnmaskingShares, PlaintextInput,
                      CiphertextCommitment, EncryptedInput, AggregateApproval, PartialDecryption, DecryptedAggregate]
ServerMessage = Union[RoundStart, KeysBroadcast, SharesDelivery, ConsistencyRequest, UnmaskRequest, RevealRequest,
                      AggregateRequest, DecryptionRequest]
Message = Union[ClientMessage, ServerMessage]
