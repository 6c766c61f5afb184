"""The versioned binary wire format. No pickle, no JSON: fixed-width little-endian fields.

Every message starts with a 14-byte header::

    version:u8 | type:u8 | round_id:u64 | party:u32

``party`` is the sender of a client message and the recipient of a server
message. Vectors travel as raw little-endian words behind a declared word
width and count; lists behind a u32 count. :func:`decode_message` checks the
version, the total size against a caller-supplied limit, every declared length
against the bytes present, and then the message's own validation; whatever is
wrong, it raises :class:`~fedsecure.DecodeError` naming the sender.
"""

from __future__ import annotations

import struct

import numpy as np

from .._errors import DecodeError, PeerFault
from ..crypto import PUBLIC_KEY_BYTES, SHARE_BYTES
from ._messages import (
    SIGNATURE_BYTES,
    AdvertiseKeys,
    AggregateApproval,
    AggregateRequest,
    CiphertextCommitment,
    Commitment,
    RevealRequest,
    DecryptedAggregate,
    DecryptionRequest,
    EncryptedInput,
    PartialDecryption,
    EncryptedShare,
    KeysBroadcast,
    MaskedInput,
    Message,
    PlaintextInput,
    PublicKeys,
    RoundStart,
    ShareKeys,
    SharesDelivery,
    ShareValue,
    UnmaskingShares,
    UnmaskRequest,
    ConsistencyRequest,
    ConsistencySignature,
    SurvivorSignature,
)

__all__ = ["WIRE_VERSION", "encode_message", "decode_message", "DEFAULT_MAX_MESSAGE_BYTES"]

# Version 2 added the active-adversary variant's signatures and consistency messages; version 3 Paillier's proofs,
# aggregate approvals and verifiable decryption.
WIRE_VERSION = 3
DEFAULT_MAX_MESSAGE_BYTES = 1 << 30
_HEADER = struct.Struct("<BBQI")
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")
_VECTOR_HEADER = struct.Struct("<BI")
_KEY_ENTRY = struct.Struct(f"<I{PUBLIC_KEY_BYTES}s{PUBLIC_KEY_BYTES}s")
_SHARE_ENTRY = struct.Struct(f"<I{SHARE_BYTES}s")

_TYPE_CODES: dict[type, int] = {
    RoundStart: 1,
    AdvertiseKeys: 2,
    KeysBroadcast: 3,
    ShareKeys: 4,
    SharesDelivery: 5,
    MaskedInput: 6,
    UnmaskRequest: 7,
    UnmaskingShares: 8,
    PlaintextInput: 9,
    EncryptedInput: 10,
    DecryptionRequest: 11,
    DecryptedAggregate: 12,
    PartialDecryption: 13,
    CiphertextCommitment: 14,
    RevealRequest: 15,
    ConsistencyRequest: 16,
    ConsistencySignature: 17,
    AggregateRequest: 18,
    AggregateApproval: 19,
}
_COMMITMENT_ENTRY = struct.Struct(f"<I32s{SIGNATURE_BYTES}s")
_SIGNATURE_ENTRY = struct.Struct(f"<I{SIGNATURE_BYTES}s")
_ENVELOPE_HEADER = struct.Struct("<IH")  # an encrypted share's peer and envelope length
_DTYPES = {4: np.dtype("<u4"), 8: np.dtype("<u8")}


def _party(message: Message) -> int:
    return message.sender if hasattr(message, "sender") else message.recipient


def _encode_shares(shares: tuple[EncryptedShare, ...]) -> list[bytes]:
    parts = [_U32.pack(len(shares))]
    for share in shares:
        parts.append(_ENVELOPE_HEADER.pack(share.peer, len(share.envelope)))
        parts.append(share.envelope)
    return parts


def _encode_share_values(values: tuple[ShareValue, ...]) -> list[bytes]:
    parts = [_U32.pack(len(values))]
    parts.extend(_SHARE_ENTRY.pack(v.owner, v.value.to_bytes(SHARE_BYTES, "little")) for v in values)
    return parts


def _encode_contribution(contribution: EncryptedInput) -> list[bytes]:
    return [_U32.pack(contribution.sender), _U32.pack(len(contribution.ciphertexts)), contribution.ciphertexts,
            _U32.pack(len(contribution.proof)), contribution.proof, contribution.signature]


def _encode_ids(ids: tuple[int, ...]) -> list[bytes]:
    return [_U32.pack(len(ids)), np.asarray(ids, dtype="<u4").tobytes()]


def _decode_ids(reader: _Reader) -> tuple[int, ...]:
    count = reader.count(_U32.size)
    return tuple(int(c) for c in np.frombuffer(reader.take(4 * count), dtype="<u4"))


def _encode_vector(vector: np.ndarray) -> list[bytes | memoryview]:
    return [_VECTOR_HEADER.pack(vector.dtype.itemsize, vector.size), np.ascontiguousarray(vector).data.cast("B")]


def _encode_commitments(commitments: tuple[Commitment, ...]) -> list[bytes]:
    return [_U32.pack(len(commitments))] + [_COMMITMENT_ENTRY.pack(c.sender, c.digest, c.signature)
                                             for c in commitments]


def encode_message(message: Message) -> bytes:
    """Serialise a message to bytes."""
    code = _TYPE_CODES[type(message)]
    parts: list[bytes | memoryview] = [_HEADER.pack(WIRE_VERSION, code, message.round_id, _party(message))]
    if isinstance(message, RoundStart):
        parts.append(message.config_digest)
    elif isinstance(message, AdvertiseKeys):
        parts += [message.cipher_public_key, message.mask_public_key, _U16.pack(len(message.signature)),
                  message.signature]
    elif isinstance(message, KeysBroadcast):
        parts.append(_U32.pack(len(message.keys)))
        for k in message.keys:
            parts += [_KEY_ENTRY.pack(k.owner, k.cipher_public_key, k.mask_public_key), _U16.pack(len(k.signature)),
                      k.signature]
    elif isinstance(message, ShareKeys):
        parts.append(message.seed_commitment)
        parts.extend(_encode_shares(message.shares))
    elif isinstance(message, SharesDelivery):
        parts.extend(_encode_shares(message.shares))
    elif isinstance(message, (MaskedInput, PlaintextInput)):
        parts.extend(_encode_vector(message.vector))
    elif isinstance(message, EncryptedInput):
        parts.extend(_encode_contribution(message)[1:])
    elif isinstance(message, CiphertextCommitment):
        parts += [message.digest, message.signature]
    elif isinstance(message, RevealRequest):
        parts.extend(_encode_commitments(message.commitments))
    elif isinstance(message, AggregateRequest):
        parts.extend(_encode_commitments(message.commitments))
        parts.append(_U32.pack(len(message.contributions)))
        for contribution in message.contributions:
            parts.extend(_encode_contribution(contribution))
        parts += [_U32.pack(len(message.aggregate)), message.aggregate]
    elif isinstance(message, AggregateApproval):
        parts.append(message.signature)
    elif isinstance(message, DecryptionRequest):
        parts.extend(_encode_ids(message.contributors))
        parts += [_U32.pack(len(message.aggregate)), message.aggregate, _U32.pack(len(message.approvals))]
        parts.extend(_SIGNATURE_ENTRY.pack(a.owner, a.signature) for a in message.approvals)
    elif isinstance(message, DecryptedAggregate):
        parts.extend(_encode_ids(message.contributors))
        parts += [_U32.pack(len(message.plaintexts)), message.plaintexts, _U32.pack(len(message.randomness)),
                  message.randomness]
    elif isinstance(message, PartialDecryption):
        parts += [message.aggregate_digest, _U32.pack(len(message.partials)), message.partials,
                  _U32.pack(len(message.proof)), message.proof]
    elif isinstance(message, (UnmaskRequest, ConsistencyRequest)):
        parts.append(_U32.pack(len(message.survivors)))
        parts.append(np.asarray(message.survivors, dtype="<u4").tobytes())
        if isinstance(message, UnmaskRequest):
            parts.append(_U32.pack(len(message.signatures)))
            parts.extend(_SIGNATURE_ENTRY.pack(s.owner, s.signature) for s in message.signatures)
    elif isinstance(message, ConsistencySignature):
        parts.append(message.signature)
    elif isinstance(message, UnmaskingShares):
        parts.extend(_encode_share_values(message.self_mask_shares))
        parts.extend(_encode_share_values(message.key_shares))
    return b"".join(parts)


class _Reader:
    __slots__ = ("data", "offset")

    def __init__(self, data: bytes, offset: int) -> None:
        self.data = data
        self.offset = offset

    def take(self, count: int) -> bytes:
        end = self.offset + count
        if count < 0 or end > len(self.data):
            raise ValueError("declared length runs past the end of the message")
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def unpack(self, layout: struct.Struct) -> tuple[object, ...]:
        return layout.unpack(self.take(layout.size))

    def count(self, entry_size: int) -> int:
        (count,) = _U32.unpack(self.take(_U32.size))
        count = int(count)
        if count * entry_size > len(self.data) - self.offset:
            raise ValueError("declared count exceeds the bytes present")
        return count

    def done(self) -> None:
        if self.offset != len(self.data):
            raise ValueError("trailing bytes after the message")


def _decode_vector(reader: _Reader) -> np.ndarray:
    width, count = reader.unpack(_VECTOR_HEADER)
    dtype = _DTYPES.get(width)  # type: ignore[call-overload]
    if dtype is None:
        raise ValueError("vector word width must be 4 or 8 bytes")
    return np.frombuffer(reader.take(count * width), dtype=dtype)  # type: ignore[operator]


def _decode_short(reader: _Reader) -> bytes:
    (length,) = reader.unpack(_U16)
    return reader.take(length)  # type: ignore[arg-type]


def _decode_blob(reader: _Reader) -> bytes:
    (length,) = reader.unpack(_U32)
    return reader.take(length)  # type: ignore[arg-type]


def _decode_contribution(round_id: int, sender: int, reader: _Reader) -> EncryptedInput:
    ciphertexts = _decode_blob(reader)
    proof = _decode_blob(reader)
    return EncryptedInput(round_id=round_id, sender=sender, ciphertexts=ciphertexts, proof=proof,
                          signature=reader.take(SIGNATURE_BYTES))


def _decode_commitments(reader: _Reader) -> tuple[Commitment, ...]:
    entries = []
    for _ in range(reader.count(_COMMITMENT_ENTRY.size)):
        sender, digest, signature = reader.unpack(_COMMITMENT_ENTRY)
        entries.append(Commitment(sender=sender, digest=digest, signature=signature))  # type: ignore[arg-type]
    return tuple(entries)


def _decode_body(code: int, round_id: int, party: int, reader: _Reader) -> Message:
    if code == 1:
        return RoundStart(round_id=round_id, recipient=party, config_digest=reader.take(32))
    if code == 2:
        cipher_public, mask_public = reader.take(PUBLIC_KEY_BYTES), reader.take(PUBLIC_KEY_BYTES)
        return AdvertiseKeys(round_id=round_id, sender=party, cipher_public_key=cipher_public,
                             mask_public_key=mask_public, signature=_decode_short(reader))
    if code == 3:
        keys = []
        for _ in range(reader.count(_KEY_ENTRY.size + _U16.size)):
            owner, cipher_key, mask_key = reader.unpack(_KEY_ENTRY)
            keys.append(PublicKeys(owner=owner, cipher_public_key=cipher_key, mask_public_key=mask_key,  # type: ignore[arg-type]
                                   signature=_decode_short(reader)))
        return KeysBroadcast(round_id=round_id, recipient=party, keys=tuple(keys))
    if code in (4, 5):
        commitment = reader.take(32) if code == 4 else b""
        shares = []
        for _ in range(reader.count(_ENVELOPE_HEADER.size)):
            peer, length = reader.unpack(_ENVELOPE_HEADER)
            shares.append(EncryptedShare(peer=peer, envelope=reader.take(length)))  # type: ignore[arg-type]
        if code == 4:
            return ShareKeys(round_id=round_id, sender=party, seed_commitment=commitment, shares=tuple(shares))
        return SharesDelivery(round_id=round_id, recipient=party, shares=tuple(shares))
    if code in (6, 9):
        cls = MaskedInput if code == 6 else PlaintextInput
        return cls(round_id=round_id, sender=party, vector=_decode_vector(reader))
    if code == 10:
        return _decode_contribution(round_id, party, reader)
    if code == 14:
        return CiphertextCommitment(round_id=round_id, sender=party, digest=reader.take(32),
                                    signature=reader.take(SIGNATURE_BYTES))
    if code == 15:
        return RevealRequest(round_id=round_id, recipient=party, commitments=_decode_commitments(reader))
    if code == 18:
        commitments = _decode_commitments(reader)
        contributions = []
        for _ in range(reader.count(3 * _U32.size + SIGNATURE_BYTES)):
            (sender,) = reader.unpack(_U32)
            contributions.append(_decode_contribution(round_id, sender, reader))  # type: ignore[arg-type]
        return AggregateRequest(round_id=round_id, recipient=party, commitments=commitments,
                                contributions=tuple(contributions), aggregate=_decode_blob(reader))
    if code == 19:
        return AggregateApproval(round_id=round_id, sender=party, signature=reader.take(SIGNATURE_BYTES))
    if code == 11:
        contributors = _decode_ids(reader)
        aggregate = _decode_blob(reader)
        approvals = []
        for _ in range(reader.count(_SIGNATURE_ENTRY.size)):
            owner, signature = reader.unpack(_SIGNATURE_ENTRY)
            approvals.append(SurvivorSignature(owner=owner, signature=signature))  # type: ignore[arg-type]
        return DecryptionRequest(round_id=round_id, recipient=party, contributors=contributors, aggregate=aggregate,
                                 approvals=tuple(approvals))
    if code == 12:
        contributors = _decode_ids(reader)
        plaintexts = _decode_blob(reader)
        return DecryptedAggregate(round_id=round_id, sender=party, contributors=contributors, plaintexts=plaintexts,
                                  randomness=_decode_blob(reader))
    if code == 13:
        digest = reader.take(32)
        partials = _decode_blob(reader)
        return PartialDecryption(round_id=round_id, sender=party, aggregate_digest=digest, partials=partials,
                                 proof=_decode_blob(reader))
    if code in (7, 16):
        count = reader.count(_U32.size)
        survivors = tuple(int(s) for s in np.frombuffer(reader.take(4 * count), dtype="<u4"))
        if code == 16:
            return ConsistencyRequest(round_id=round_id, recipient=party, survivors=survivors)
        signatures = []
        for _ in range(reader.count(_SIGNATURE_ENTRY.size)):
            owner, signature = reader.unpack(_SIGNATURE_ENTRY)
            signatures.append(SurvivorSignature(owner=owner, signature=signature))  # type: ignore[arg-type]
        return UnmaskRequest(round_id=round_id, recipient=party, survivors=survivors, signatures=tuple(signatures))
    if code == 17:
        return ConsistencySignature(round_id=round_id, sender=party, signature=reader.take(SIGNATURE_BYTES))
    if code == 8:
        lists = []
        for _ in range(2):
            values = []
            for _ in range(reader.count(_SHARE_ENTRY.size)):
                owner, raw_value = reader.unpack(_SHARE_ENTRY)
                values.append(ShareValue(owner=owner, value=int.from_bytes(raw_value, "little")))  # type: ignore[arg-type]
            lists.append(tuple(values))
        return UnmaskingShares(round_id=round_id, sender=party, self_mask_shares=lists[0], key_shares=lists[1])
    raise ValueError(f"unknown message type {code}")


def decode_message(data: bytes, *, sender: int | None = None, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Message:
    """Parse bytes into a message, or raise :class:`~fedsecure.DecodeError`.

    ``sender`` is who the transport says sent the bytes (used to name the
    culprit even when the header is unreadable); ``max_bytes`` is the largest
    message the receiver will accept.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError(PeerFault.MALFORMED, peer=sender, detail="not bytes")
    data = bytes(data)
    if len(data) > max_bytes:
        raise DecodeError(PeerFault.OVERSIZED, peer=sender, detail=f"{len(data)} bytes, limit {max_bytes}")
    if len(data) < _HEADER.size:
        raise DecodeError(PeerFault.MALFORMED, peer=sender, detail="shorter than the header")
    version, code, round_id, party = _HEADER.unpack_from(data)
    culprit = sender if sender is not None else party
    if version != WIRE_VERSION:
        raise DecodeError(PeerFault.UNSUPPORTED_VERSION, peer=culprit, detail=f"version {version}")
    reader = _Reader(data, _HEADER.size)
    try:
        message = _decode_body(code, round_id, party, reader)
        reader.done()
    except (ValueError, struct.error, OverflowError, TypeError) as exc:
        raise DecodeError(PeerFault.MALFORMED, peer=culprit, detail=str(exc)) from None
    return message
