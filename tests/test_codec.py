"""Tier 4: the wire codec. Every message round-trips; random or mutated bytes only raise DecodeError."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedsecure import DecodeError, PeerFault
from fedsecure.protocols import (
    DECRYPTOR,
    AdvertiseKeys,
    CiphertextCommitment,
    Commitment,
    RevealRequest,
    AggregateApproval,
    AggregateRequest,
    DecryptedAggregate,
    DecryptionRequest,
    EncryptedInput,
    PartialDecryption,
    EncryptedShare,
    KeysBroadcast,
    MaskedInput,
    PlaintextInput,
    PublicKeys,
    RoundStart,
    ShareKeys,
    SharesDelivery,
    ShareValue,
    UnmaskingShares,
    UnmaskRequest,
    WIRE_VERSION,
    ConsistencyRequest,
    ConsistencySignature,
    SurvivorSignature,
    decode_message,
    encode_message,
)

KEY_A, KEY_B = b"\x11" * 32, b"\x22" * 32
SAMPLES = [
    RoundStart(round_id=3, recipient=1, config_digest=b"d" * 32),
    AdvertiseKeys(round_id=3, sender=1, cipher_public_key=KEY_A, mask_public_key=KEY_B),
    KeysBroadcast(round_id=3, recipient=2, keys=(PublicKeys(1, KEY_A, KEY_B), PublicKeys(2, KEY_B, KEY_A))),
    ShareKeys(round_id=3, sender=1, seed_commitment=b"c" * 32,
              shares=(EncryptedShare(2, b"e" * 94), EncryptedShare(5, b"f" * 94))),
    SharesDelivery(round_id=3, recipient=2, shares=(EncryptedShare(1, b"e" * 94),)),
    MaskedInput(round_id=3, sender=1, vector=np.arange(10, dtype="<u4")),
    MaskedInput(round_id=2**64 - 1, sender=2**32 - 1, vector=np.arange(3, dtype="<u8")),
    UnmaskRequest(round_id=3, recipient=4, survivors=(1, 2, 4)),
    UnmaskingShares(round_id=3, sender=4, self_mask_shares=(ShareValue(1, 5), ShareValue(4, 2**256)),
                    key_shares=(ShareValue(3, 7),)),
    PlaintextInput(round_id=3, sender=1, vector=np.zeros(0, dtype="<u4")),
    EncryptedInput(round_id=3, sender=1, ciphertexts=b"c" * 128, proof=b"k" * 256, signature=b"s" * 64),
    CiphertextCommitment(round_id=3, sender=1, digest=b"h" * 32, signature=b"s" * 64),
    RevealRequest(round_id=3, recipient=4, commitments=(Commitment(1, b"h" * 32, b"s" * 64),
                                                        Commitment(4, b"i" * 32, b"t" * 64))),
    AggregateRequest(round_id=3, recipient=4, aggregate=b"a" * 128,
                     commitments=(Commitment(1, b"h" * 32, b"s" * 64), Commitment(4, b"i" * 32, b"t" * 64)),
                     contributions=(
        EncryptedInput(round_id=3, sender=1, ciphertexts=b"c" * 128, proof=b"k" * 256, signature=b"s" * 64),
        EncryptedInput(round_id=3, sender=4, ciphertexts=b"d" * 128, proof=b"l" * 256, signature=b"t" * 64))),
    AggregateApproval(round_id=3, sender=4, signature=b"v" * 64),
    DecryptionRequest(round_id=3, recipient=DECRYPTOR, contributors=(1, 4), aggregate=b"a" * 128,
                      approvals=(SurvivorSignature(1, b"s" * 64), SurvivorSignature(4, b"t" * 64))),
    DecryptedAggregate(round_id=3, sender=DECRYPTOR, contributors=(1, 4), plaintexts=b"m" * 64, randomness=b"r" * 64),
    PartialDecryption(round_id=3, sender=2, aggregate_digest=b"g" * 32, partials=b"p" * 128, proof=b"z" * 300),
    # The active-adversary variant's signatures and consistency check.
    AdvertiseKeys(round_id=3, sender=1, cipher_public_key=KEY_A, mask_public_key=KEY_B, signature=b"s" * 64),
    KeysBroadcast(round_id=3, recipient=2, keys=(PublicKeys(1, KEY_A, KEY_B, b"s" * 64),
                                                 PublicKeys(2, KEY_B, KEY_A, b"t" * 64))),
    ConsistencyRequest(round_id=3, recipient=4, survivors=(1, 2, 4, 9)),
    ConsistencySignature(round_id=3, sender=4, signature=b"u" * 64),
    UnmaskRequest(round_id=3, recipient=4, survivors=(1, 4),
                  signatures=(SurvivorSignature(1, b"s" * 64), SurvivorSignature(4, b"t" * 64))),
]


def _equal(a: object, b: object) -> bool:
    if isinstance(a, (MaskedInput, PlaintextInput)):
        return (type(a) is type(b) and a.round_id == b.round_id and a.sender == b.sender  # type: ignore[union-attr]
                and a.vector.dtype == b.vector.dtype and np.array_equal(a.vector, b.vector))  # type: ignore[union-attr]
    return a == b


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(message: object) -> None:
    data = encode_message(message)  # type: ignore[arg-type]
    assert data[0] == WIRE_VERSION
    assert _equal(decode_message(data), message)


def test_decoded_vectors_are_read_only() -> None:
    decoded = decode_message(encode_message(SAMPLES[5]))
    with pytest.raises(ValueError):
        decoded.vector[0] = 1  # type: ignore[union-attr]


def test_decoder_names_the_fault_and_the_sender() -> None:
    data = encode_message(SAMPLES[1])
    with pytest.raises(DecodeError) as info:
        decode_message(bytes([WIRE_VERSION + 1]) + data[1:], sender=9)
    assert info.value.fault is PeerFault.UNSUPPORTED_VERSION and info.value.peer == 9
    with pytest.raises(DecodeError) as info:
        decode_message(data, max_bytes=len(data) - 1, sender=9)
    assert info.value.fault is PeerFault.OVERSIZED
    with pytest.raises(DecodeError) as info:
        decode_message(data[:-1])
    assert info.value.fault is PeerFault.MALFORMED and info.value.peer == 1  # Named from the header.
    with pytest.raises(DecodeError):
        decode_message(data + b"\x00")
    # A declared count far beyond the bytes present is refused before any allocation.
    huge = encode_message(SAMPLES[7])[:14] + (2**32 - 1).to_bytes(4, "little")
    with pytest.raises(DecodeError):
        decode_message(huge)
    # The same owner in both share lists is refused by the message itself.
    both = encode_message(UnmaskingShares(round_id=1, sender=1, self_mask_shares=(ShareValue(2, 1),),
                                          key_shares=(ShareValue(3, 1),)))
    tampered = both.replace((3).to_bytes(4, "little") + (1).to_bytes(33, "little"),
                            (2).to_bytes(4, "little") + (1).to_bytes(33, "little"))
    with pytest.raises(DecodeError):
        decode_message(tampered)


@given(st.binary(max_size=600))
def test_random_bytes_only_raise_decode_error(data: bytes) -> None:
    try:
        decode_message(data, sender=7)
    except DecodeError as error:
        assert error.peer is not None
    # Anything that decodes is a valid message that re-encodes to the same bytes.
    else:
        assert encode_message(decode_message(data)) == data


@given(st.sampled_from(SAMPLES), st.data())
def test_mutated_messages_only_raise_decode_error(message: object, data: st.DataObject) -> None:
    wire = bytearray(encode_message(message))  # type: ignore[arg-type]
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        position = data.draw(st.integers(0, max(0, len(wire) - 1)))
        if action == "flip" and wire:
            wire[position] ^= data.draw(st.integers(1, 255))
        elif action == "cut":
            del wire[position:position + data.draw(st.integers(1, 8))]
        else:
            wire[position:position] = data.draw(st.binary(min_size=1, max_size=8))
    try:
        decoded = decode_message(bytes(wire))
    except DecodeError:
        return
    assert encode_message(decoded) == bytes(wire)


@pytest.mark.parametrize("build", [
    lambda: AdvertiseKeys(round_id=1, sender=1, cipher_public_key=KEY_A, mask_public_key=KEY_A),
    lambda: AdvertiseKeys(round_id=-1, sender=1, cipher_public_key=KEY_A, mask_public_key=KEY_B),
    lambda: AdvertiseKeys(round_id=1, sender=2**32, cipher_public_key=KEY_A, mask_public_key=KEY_B),
    lambda: KeysBroadcast(round_id=1, recipient=1, keys=(PublicKeys(1, KEY_A, KEY_B), PublicKeys(1, KEY_B, KEY_A))),
    lambda: UnmaskRequest(round_id=1, recipient=1, survivors=(1, 1)),
    lambda: MaskedInput(round_id=1, sender=1, vector=np.zeros(3, dtype=np.int32)),
    lambda: ShareValue(owner=1, value=2**257),
    lambda: EncryptedShare(peer=1, envelope=b""),
    lambda: EncryptedInput(round_id=1, sender=1, ciphertexts=b"", proof=b"k", signature=b"s" * 64),
    lambda: EncryptedInput(round_id=1, sender=1, ciphertexts=b"c", proof=b"k", signature=b"s" * 63),
    lambda: EncryptedInput(round_id=1, sender=1, ciphertexts=b"c", proof=b"", signature=b"s" * 64),
    lambda: AggregateRequest(round_id=1, recipient=1, aggregate=b"a", commitments=(), contributions=(
        EncryptedInput(round_id=1, sender=1, ciphertexts=b"c", proof=b"k", signature=b"s" * 64),) * 2),
    lambda: AggregateRequest(round_id=1, recipient=1, aggregate=b"a", commitments=(), contributions=(
        EncryptedInput(round_id=2, sender=1, ciphertexts=b"c", proof=b"k", signature=b"s" * 64),)),
    lambda: DecryptionRequest(round_id=1, recipient=1, aggregate=b"a", contributors=(4, 1), approvals=()),
    lambda: DecryptionRequest(round_id=1, recipient=1, aggregate=b"a", contributors=(1, 4),
                              approvals=(SurvivorSignature(1, b"s" * 64),) * 2),
    lambda: AggregateApproval(round_id=1, sender=1, signature=b"s" * 63),
    lambda: RevealRequest(round_id=1, recipient=1, commitments=(Commitment(4, b"h" * 32, b"s" * 64),
                                                               Commitment(1, b"h" * 32, b"s" * 64))),
    lambda: CiphertextCommitment(round_id=1, sender=1, digest=b"h" * 31, signature=b"s" * 64),
    lambda: DecryptedAggregate(round_id=1, sender=1, contributors=(1, 1), plaintexts=b"m", randomness=b"r"),
    lambda: DecryptedAggregate(round_id=1, sender=1, contributors=(1, 2), plaintexts=b"", randomness=b"r"),
    lambda: PartialDecryption(round_id=1, sender=1, aggregate_digest=b"g" * 31, partials=b"p", proof=b"z"),
    lambda: PartialDecryption(round_id=1, sender=1, aggregate_digest=b"g" * 32, partials=b"p", proof=b""),
])
def test_messages_validate_their_fields(build) -> None:
    with pytest.raises(ValueError):
        build()


def test_share_values_are_hidden_from_repr() -> None:
    assert "123456789" not in repr(ShareValue(owner=1, value=123456789))


def test_share_lists_keep_their_wire_layout() -> None:
    # A known answer: after the header and the seed commitment, a u32 count, then per envelope its peer (u32),
    # its length (u16) and its bytes, all little-endian. Changing this breaks every deployed peer.
    message = SAMPLES[3]
    expected_tail = (b"\x02\x00\x00\x00" + b"\x02\x00\x00\x00" + b"\x5e\x00" + b"e" * 94
                     + b"\x05\x00\x00\x00" + b"\x5e\x00" + b"f" * 94)
    data = encode_message(message)  # type: ignore[arg-type]
    assert data.endswith(b"c" * 32 + expected_tail)
    delivery = encode_message(SAMPLES[4])  # type: ignore[arg-type]
    assert delivery.endswith(b"\x01\x00\x00\x00" + b"\x01\x00\x00\x00" + b"\x5e\x00" + b"e" * 94)
    # An envelope length running past the end is refused by name, not read short.
    with pytest.raises(DecodeError) as info:
        decode_message(data[:-1])
    assert info.value.fault is PeerFault.MALFORMED and info.value.peer == 1
