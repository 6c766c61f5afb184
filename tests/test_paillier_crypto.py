"""Paillier primitives: phe interoperability, DJN encryption, CRT decryption, packing, threshold decryption.

Fast tests use deliberately tiny keys; every such key is named INSECURE. One
2048-bit round trip is marked slow.
"""

from __future__ import annotations

import secrets

import gmpy2
import numpy as np
import phe
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsecure import ConfigurationError, CryptoError, InvalidUpdateError
from fedsecure.crypto import (
    PaillierDecryptor,
    PaillierEncryptor,
    ciphertexts_from_bytes,
    ciphertexts_to_bytes,
    combine_partial_decryptions,
    deal_threshold_paillier,
    generate_paillier_keypair,
    multiply_ciphertexts,
    safe_prime,
)
from fedsecure.encoding import SlotLayout

INSECURE_KEY_BITS = 512


@pytest.fixture(scope="module")
def insecure_keypair() -> tuple[phe.PaillierPublicKey, phe.PaillierPrivateKey]:
    return generate_paillier_keypair(INSECURE_KEY_BITS)


@pytest.fixture(scope="module")
def insecure_threshold_key():  # type: ignore[no-untyped-def]
    return deal_threshold_paillier(INSECURE_KEY_BITS, holders=[2, 3, 5, 7, 11], threshold=3)


def test_fedsecure_ciphertexts_decrypt_with_phe_and_back(insecure_keypair) -> None:  # type: ignore[no-untyped-def]
    public, private = insecure_keypair
    values = [0, 1, 42, public.n - 1, secrets.randbelow(public.n)]
    ours = PaillierEncryptor(public).encrypt(values)
    assert [private.raw_decrypt(int(c)) for c in ours] == values
    assert [private.decrypt(phe.EncryptedNumber(public, int(c))) for c in ours[:3]] == values[:3]
    theirs = [public.raw_encrypt(v) for v in values]
    assert PaillierDecryptor(private).decrypt(theirs) == values
    # A phe EncryptedNumber made by phe's own encode path decrypts here too.
    assert PaillierDecryptor(private).decrypt([public.encrypt(17).ciphertext()]) == [17]


def test_encryption_is_randomised_and_homomorphic(insecure_keypair) -> None:  # type: ignore[no-untyped-def]
    public, private = insecure_keypair
    encryptor = PaillierEncryptor(public)
    first, second = encryptor.encrypt([5, 5])
    assert first != second
    product = multiply_ciphertexts([[first], [second]], public)
    assert PaillierDecryptor(private).decrypt(product) == [10]
    with pytest.raises(CryptoError):
        encryptor.encrypt([public.n])
    with pytest.raises(CryptoError):
        encryptor.encrypt([-1])


def test_keys_and_randomness_refuse_pickling_and_hide_in_repr(insecure_keypair) -> None:  # type: ignore[no-untyped-def]
    import pickle

    public, private = insecure_keypair
    for secret_holder in (PaillierEncryptor(public), PaillierDecryptor(private)):
        with pytest.raises(TypeError):
            pickle.dumps(secret_holder)
        assert str(private.p) not in repr(secret_holder)


def test_ciphertext_wire_format_round_trip_and_refusals(insecure_keypair) -> None:  # type: ignore[no-untyped-def]
    public, _ = insecure_keypair
    ciphertexts = PaillierEncryptor(public).encrypt([1, 2, 3])
    data = ciphertexts_to_bytes(ciphertexts, public)
    assert ciphertexts_from_bytes(data, public, count=3) == ciphertexts
    width = len(data) // 3
    with pytest.raises(CryptoError, match="expected 2"):
        ciphertexts_from_bytes(data, public, count=2)
    with pytest.raises(CryptoError, match="multiple"):
        ciphertexts_from_bytes(data[:-1], public)
    for bad in (0, public.nsquare, public.n):  # zero, out of range, shares a factor with n
        with pytest.raises(CryptoError, match="unit"):
            ciphertexts_from_bytes((bad % 2 ** (8 * width)).to_bytes(width, "little"), public)


@pytest.mark.parametrize("clients", [1, 2, 3, 7, 8, 33])
def test_packing_round_trip_with_negative_values_and_maximal_headroom(insecure_keypair, clients: int) -> None:  # type: ignore[no-untyped-def]
    public, private = insecure_keypair
    max_coordinate = 1000
    layout = SlotLayout.create(max_coordinate=max_coordinate, clients=clients,
                               plaintext_bits=int(public.n).bit_length() - 1)
    rng = np.random.default_rng(clients)  # noqa: csprng-ok (test data)
    length = 3 * layout.slots + 5
    # Every client at +M, then every client at -M: the extremes of the slot sum; plus random vectors.
    cases = [np.full((clients, length), max_coordinate), np.full((clients, length), -max_coordinate),
             rng.integers(-max_coordinate, max_coordinate + 1, size=(clients, length))]
    encryptor, decryptor = PaillierEncryptor(public), PaillierDecryptor(private)
    for inputs in cases:
        columns = [encryptor.encrypt(layout.pack(row.astype(np.int64))) for row in inputs]
        total = decryptor.decrypt(multiply_ciphertexts(columns, public))
        decoded = layout.unpack_sum(total, length=length, contributors=clients)
        np.testing.assert_array_equal(decoded, inputs.sum(axis=0))


def test_packing_refuses_what_could_overflow() -> None:
    with pytest.raises(ConfigurationError) as raised:
        SlotLayout.create(max_coordinate=2**40, clients=1000, plaintext_bits=50)
    assert raised.value.parameter == "ring_bits"
    layout = SlotLayout.create(max_coordinate=10, clients=4, plaintext_bits=100)
    # 4 clients need ceil(log2 4) + 1 = 3 bits of headroom over the 5 bits of 2M = 20.
    assert (layout.value_bits, layout.headroom_bits, layout.slots) == (5, 3, 12)
    with pytest.raises(ConfigurationError, match="headroom for at most 4"):
        layout.unpack_sum([0], length=3, contributors=5)
    with pytest.raises(InvalidUpdateError, match="outside"):
        layout.pack(np.array([11], dtype=np.int64))
    with pytest.raises(InvalidUpdateError, match="outside"):
        layout.pack(np.array([-11], dtype=np.int64))
    # A "sum" with more bits than its slots (a forged aggregate) is refused, not misread.
    with pytest.raises(ValueError, match="more bits"):
        layout.unpack_sum([1 << 100], length=12, contributors=1)


def test_safe_prime_is_safe() -> None:
    for bits in (16, 64, 128):
        p = safe_prime(bits)
        assert p.bit_length() == bits
        assert gmpy2.is_prime(p) and gmpy2.is_prime((p - 1) // 2)


def test_threshold_any_t_partials_decrypt_and_t_minus_1_do_not(insecure_threshold_key) -> None:  # type: ignore[no-untyped-def]
    key, shares = insecure_threshold_key
    public = key.public_key
    values = [0, 7, secrets.randbelow(public.n)]
    ciphertexts = PaillierEncryptor(public).encrypt(values)
    partials = {h: share.partial_decrypt(ciphertexts) for h, share in shares.items()}
    for subset in ([2, 3, 5], [3, 7, 11], [2, 5, 7, 11], [2, 3, 5, 7, 11]):
        assert combine_partial_decryptions(key, {h: partials[h] for h in subset}) == values
    with pytest.raises(CryptoError, match="3 needed"):
        combine_partial_decryptions(key, {h: partials[h] for h in [2, 3]})
    # t-1 honest partials completed by a guess for the missing share do not decrypt.
    guessed = {h: partials[h] for h in [2, 3]}
    guessed[5] = [gmpy2.powmod(c, 2 * key.delta * secrets.randbelow(public.n), public.nsquare) for c in ciphertexts]
    with pytest.raises(CryptoError, match="do not combine"):
        combine_partial_decryptions(key, guessed)


def test_threshold_combination_skips_a_garbage_partial_when_others_suffice(insecure_threshold_key) -> None:  # type: ignore[no-untyped-def]
    key, shares = insecure_threshold_key
    ciphertexts = PaillierEncryptor(key.public_key).encrypt([11, 22])
    partials = {h: shares[h].partial_decrypt(ciphertexts) for h in [2, 3, 5, 7]}
    partials[2] = [gmpy2.mpz(secrets.randbelow(key.public_key.nsquare)) | 1 for _ in ciphertexts]
    assert combine_partial_decryptions(key, partials) == [11, 22]


def test_threshold_combination_finds_honest_holders_past_a_garbage_lowest_id() -> None:
    key, shares = deal_threshold_paillier(INSECURE_KEY_BITS, holders=list(range(10)), threshold=6)
    ciphertexts = PaillierEncryptor(key.public_key).encrypt([5, 6, 7])
    partials = {h: shares[h].partial_decrypt(ciphertexts) for h in range(10)}
    partials[0] = [gmpy2.mpz(3)] * 3  # every one of the first 126 subsets contains holder 0
    assert combine_partial_decryptions(key, partials) == [5, 6, 7]


def test_threshold_key_works_with_phe_encryption(insecure_threshold_key) -> None:  # type: ignore[no-untyped-def]
    key, shares = insecure_threshold_key
    ciphertext = key.public_key.raw_encrypt(123456)
    partials = {h: shares[h].partial_decrypt([ciphertext]) for h in [3, 5, 11]}
    assert combine_partial_decryptions(key, partials) == [123456]
    assert "secret" not in repr(shares[3]) and str(shares[3]._secret) not in repr(shares[3])


@pytest.mark.slow
def test_2048_bit_keys_round_trip_packed() -> None:
    public, private = generate_paillier_keypair(2048)
    layout = SlotLayout.create(max_coordinate=2**15, clients=10, plaintext_bits=2047)
    values = np.arange(-500, 500, dtype=np.int64)
    encryptor = PaillierEncryptor(public)
    columns = [encryptor.encrypt(layout.pack(values)) for _ in range(10)]
    total = PaillierDecryptor(private).decrypt(multiply_ciphertexts(columns, public))
    np.testing.assert_array_equal(layout.unpack_sum(total, length=values.size, contributors=10), 10 * values)
    key, shares = deal_threshold_paillier(2048, holders=list(range(5)), threshold=3)
    ciphertexts = PaillierEncryptor(key.public_key).encrypt([99])
    assert combine_partial_decryptions(key, {h: shares[h].partial_decrypt(ciphertexts) for h in [0, 2, 4]}) == [99]


@settings(max_examples=60, deadline=None)
@given(max_coordinate=st.integers(1, 2**59), clients=st.integers(1, 300), plaintext_bits=st.integers(70, 3000),
       data=st.data())
def test_packing_sum_property(max_coordinate: int, clients: int, plaintext_bits: int, data: st.DataObject) -> None:
    # Adding packed plaintexts as integers (what Paillier's homomorphism does) decodes to the exact sum.
    try:
        layout = SlotLayout.create(max_coordinate=max_coordinate, clients=clients, plaintext_bits=plaintext_bits)
    except ConfigurationError:
        assert (2 * max_coordinate).bit_length() + (clients - 1).bit_length() + 1 > plaintext_bits
        return
    contributors = data.draw(st.integers(1, min(clients, 8)))
    length = data.draw(st.integers(1, 3 * layout.slots))
    values = st.integers(-max_coordinate, max_coordinate)
    rows = [np.array(data.draw(st.lists(values, min_size=length, max_size=length)), dtype=np.int64)
            for _ in range(contributors)]
    packed = [layout.pack(row) for row in rows]
    total = [sum(column) for column in zip(*packed)]
    assert all(p.bit_length() <= plaintext_bits for p in total)
    np.testing.assert_array_equal(layout.unpack_sum(total, length=length, contributors=contributors),
                                  np.sum(rows, axis=0))
