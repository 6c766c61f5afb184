"""Zero-knowledge proofs and verifiable decryption for Paillier, over gmpy2.

Three checks let every party of a Paillier round verify the others instead of trusting them:

* **Proof of plaintext knowledge** (:class:`PlaintextKnowledgeProof`): the
  Σ-protocol of Damgård, Jurik and Nielsen ("A generalization of Paillier's
  public-key system with applications to electronic voting", IJIS 2010, §6,
  proof that a ciphertext encrypts a value the prover knows), batched over all
  L ciphertexts of one contribution and made non-interactive by Fiat–Shamir.
  The prover sends A = (1 + x n) s^n mod n^2; the challenge is a vector of
  128-bit integers e_1..e_L hashed from the context, A and the ciphertexts; the
  answer is z = x + sum(e_i m_i) mod n and w = s prod(r_i^e_i) mod n. The
  verifier checks (1 + z n) w^n = A prod(c_i^e_i) mod n^2. Two accepting
  answers to different challenge vectors give an opening of
  prod(c_i^(e_i - e'_i)); L + 1 of them, with challenge differences invertible
  mod n (they are below 2^128, far below n's prime factors), give an opening of
  every c_i, which is the knowledge extractor. The context binds the proof to
  the round configuration and the sender, so a replayed or re-randomised
  ciphertext of someone else cannot be proven: that would need its plaintext.
  The proof is perfect honest-verifier zero-knowledge (s uniform in Z_n^*).
* **Proof of correct partial decryption** (:class:`PartialDecryptionProof`):
  Shoup's proof of equality of discrete logarithms ("Practical threshold
  signatures", EUROCRYPT 2000, §2.3, as Damgård and Jurik use it for threshold
  Paillier, PKC 2001, §4.1) that log_(c^4)(c_i^2) = log_v(v_i), batched over
  the aggregate's ciphertexts with 128-bit coefficients hashed from the
  ciphertexts and partials (the small-exponent test of Bellare, Garay and
  Rabin, EUROCRYPT 1998). Squaring removes the group's elements of order 2, the
  only small order there is when n is a product of safe primes.
* **Verifiable decryption** (:func:`verify_decryption`): the key holder returns
  each plaintext m_i with the randomness r_i such that c_i = (1 + m_i n) r_i^n
  mod n^2 (it can compute r_i from the factorisation). Anyone checks all of them
  at once with random 128-bit weights t_i from the OS: (1 + (sum t_i m_i) n)
  (prod r_i^t_i)^n = prod c_i^t_i mod n^2. A wrong plaintext passes with
  probability at most 2^-128.

Products of many powers with short exponents use a bucket multi-exponentiation
(Pippenger), about 20 modular multiplications per base for 128-bit exponents.
"""

from __future__ import annotations

import hashlib
import secrets
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import gmpy2
import phe
from gmpy2 import mpz

from .._errors import CryptoError

__all__ = [
    "CHALLENGE_BITS",
    "PlaintextKnowledgeProof",
    "PartialDecryptionProof",
    "multi_power",
    "plaintext_challenges",
    "verify_plaintext_knowledge",
    "verify_decryption",
]

#: Bits of each Fiat–Shamir challenge and batching coefficient: soundness error 2^-128 per attempt.
CHALLENGE_BITS = 128
_CHALLENGE_BYTES = CHALLENGE_BITS // 8
_PLAINTEXT_LABEL = b"fedsecure/v1/paillier-plaintext-knowledge"
_PARTIAL_BATCH_LABEL = b"fedsecure/v1/paillier-partial-batch"
_PARTIAL_CHALLENGE_LABEL = b"fedsecure/v1/paillier-partial-challenge"


def _width(value: int) -> int:
    return (int(value).bit_length() + 7) // 8


def _bytes(value: int, width: int) -> bytes:
    return int(value).to_bytes(width, "little")


def multi_power(bases: Sequence[int], exponents: Sequence[int], modulus: int) -> mpz:
    """prod(bases[i]^exponents[i]) mod modulus for non-negative exponents, by Pippenger's bucket method.

    Each window of c exponent bits costs one multiplication per base plus 2^(c+1)
    for the buckets, instead of one square-and-multiply chain per base.
    """
    if len(bases) != len(exponents):
        raise CryptoError("as many exponents as bases are needed")
    modulus = mpz(modulus)
    if not bases:
        return mpz(1)
    if any(e < 0 for e in exponents):
        raise CryptoError("multi_power takes non-negative exponents")
    bits = max(int(e).bit_length() for e in exponents)
    if bits == 0:
        return mpz(1)
    count = len(bases)
    window = max(1, min(12, (count.bit_length() - 2)))
    mask = (1 << window) - 1
    exponents = [int(e) for e in exponents]
    bases = [mpz(b) for b in bases]
    result = mpz(1)
    for shift in range(((bits - 1) // window) * window, -1, -window):
        if result != 1:
            for _ in range(window):
                result = gmpy2.f_mod(result * result, modulus)
        buckets: dict[int, mpz] = {}
        for base, exponent in zip(bases, exponents):
            digit = (exponent >> shift) & mask
            if digit:
                held = buckets.get(digit)
                buckets[digit] = base if held is None else gmpy2.f_mod(held * base, modulus)
        # sum over d of d * bucket[d], as a running product of running products.
        running, total = mpz(1), mpz(1)
        for digit in range(mask, 0, -1):
            held = buckets.get(digit)
            if held is not None:
                running = gmpy2.f_mod(running * held, modulus)
            if running != 1:
                total = gmpy2.f_mod(total * running, modulus)
        result = gmpy2.f_mod(result * total, modulus)
    return result


def _ciphertext_digest(ciphertexts: Sequence[int], width: int) -> bytes:
    digest = hashlib.sha256()
    for c in ciphertexts:
        digest.update(_bytes(c, width))
    return digest.digest()


def plaintext_challenges(public_key: phe.PaillierPublicKey, context: bytes, commitment: int,
                         ciphertexts: Sequence[int]) -> list[int]:
    """The Fiat–Shamir challenge vector of a plaintext-knowledge proof: 128 bits per ciphertext."""
    n = int(public_key.n)
    width = 2 * _width(n)
    seed = b"".join((_PLAINTEXT_LABEL, struct.pack("<I", len(context)), context, _bytes(n, _width(n)),
                     _bytes(commitment, width), struct.pack("<Q", len(ciphertexts)),
                     _ciphertext_digest(ciphertexts, width)))
    stream = hashlib.shake_256(seed).digest(_CHALLENGE_BYTES * len(ciphertexts))
    return [int.from_bytes(stream[i : i + _CHALLENGE_BYTES], "little")
            for i in range(0, len(stream), _CHALLENGE_BYTES)]


@dataclass(frozen=True, slots=True)
class PlaintextKnowledgeProof:
    """A batched, non-interactive proof that the prover knows every plaintext (and randomiser) of its ciphertexts.

    ``commitment`` is A in Z_(n^2), ``response`` is z in Z_n and ``randomness`` is w in Z_n^*. It reveals
    nothing about the plaintexts (honest-verifier zero-knowledge, in the random-oracle model).
    """

    commitment: int
    response: int
    randomness: int

    @staticmethod
    def size(public_key: phe.PaillierPublicKey) -> int:
        """Wire size: one element of Z_(n^2) and two of Z_n."""
        return 4 * _width(public_key.n)

    def to_bytes(self, public_key: phe.PaillierPublicKey) -> bytes:
        width = _width(public_key.n)
        return _bytes(self.commitment, 2 * width) + _bytes(self.response, width) + _bytes(self.randomness, width)

    @classmethod
    def from_bytes(cls, data: bytes, public_key: phe.PaillierPublicKey) -> PlaintextKnowledgeProof:
        width = _width(public_key.n)
        if len(data) != 4 * width:
            raise CryptoError(f"a plaintext-knowledge proof is {4 * width} bytes, not {len(data)}")
        return cls(commitment=int.from_bytes(data[: 2 * width], "little"),
                   response=int.from_bytes(data[2 * width : 3 * width], "little"),
                   randomness=int.from_bytes(data[3 * width :], "little"))


def verify_plaintext_knowledge(public_key: phe.PaillierPublicKey, ciphertexts: Sequence[int],
                               proof: PlaintextKnowledgeProof, context: bytes) -> None:
    """Check a :class:`PlaintextKnowledgeProof` for ``ciphertexts`` under ``context``; raise :class:`CryptoError`.

    ``context`` must be what the prover used: the round configuration's digest and the sender's id, so a
    proof made for one round or sender fails for any other.
    """
    n = mpz(public_key.n)
    n_square = n * n
    a, z, w = mpz(proof.commitment), mpz(proof.response), mpz(proof.randomness)
    if not 0 < a < n_square or gmpy2.gcd(a, n) != 1 or not 0 <= z < n or not 0 < w < n or gmpy2.gcd(w, n) != 1:
        raise CryptoError("a plaintext-knowledge proof has a value out of range")
    challenges = plaintext_challenges(public_key, context, int(a), ciphertexts)
    right = gmpy2.f_mod(a * multi_power(ciphertexts, challenges, n_square), n_square)
    left = gmpy2.f_mod((1 + z * n) * gmpy2.powmod(w, n, n_square), n_square)
    if left != right:
        raise CryptoError("the plaintext-knowledge proof does not verify")


def prove_plaintext_knowledge(public_key: phe.PaillierPublicKey, ciphertexts: Sequence[int],
                              plaintexts: Sequence[int], base: int, exponents: Sequence[int],
                              context: bytes) -> PlaintextKnowledgeProof:
    """The prover's side, for ciphertexts c_i = (1 + m_i n) (base^a_i)^n mod n^2 (the DJN randomiser).

    Sharp: ``base`` and ``exponents`` are the encryptor's secrets; :class:`PaillierEncryptor` calls this.
    """
    n = mpz(public_key.n)
    n_square = n * n
    x = mpz(secrets.randbelow(int(n)))
    while True:
        s = mpz(secrets.randbelow(int(n) - 2) + 2)
        if gmpy2.gcd(s, n) == 1:
            break
    commitment = gmpy2.f_mod((1 + x * n) * gmpy2.powmod(s, n, n_square), n_square)
    challenges = plaintext_challenges(public_key, context, int(commitment), ciphertexts)
    response = gmpy2.f_mod(x + sum(e * int(m) for e, m in zip(challenges, plaintexts)), n)
    exponent = sum(e * int(a) for e, a in zip(challenges, exponents))
    randomness = gmpy2.f_mod(s * gmpy2.powmod(mpz(base), exponent, n), n)
    return PlaintextKnowledgeProof(int(commitment), int(response), int(randomness))


@dataclass(frozen=True, slots=True)
class PartialDecryptionProof:
    """Shoup's proof that a holder raised the ciphertexts to its own share: the challenge and the response."""

    challenge: int
    response: int

    def to_bytes(self) -> bytes:
        response = int(self.response)
        return _bytes(self.challenge, _CHALLENGE_BYTES) + _bytes(response, max(1, _width(response)))

    @classmethod
    def from_bytes(cls, data: bytes, *, max_bytes: int) -> PartialDecryptionProof:
        if not _CHALLENGE_BYTES < len(data) <= _CHALLENGE_BYTES + max_bytes:
            raise CryptoError("a partial-decryption proof has the wrong size")
        return cls(challenge=int.from_bytes(data[:_CHALLENGE_BYTES], "little"),
                   response=int.from_bytes(data[_CHALLENGE_BYTES:], "little"))


def partial_batch(n_square: mpz, ciphertexts: Sequence[int], partials: Sequence[int], context: bytes,
                  holder: int) -> tuple[mpz, mpz]:
    """(C^4, P^2) for C = prod c_j^rho_j and P = prod p_j^rho_j, rho from a hash of everything: one statement."""
    if len(ciphertexts) != len(partials) or not ciphertexts:
        raise CryptoError("as many partial decryptions as ciphertexts are needed")
    width = _width(n_square)
    seed = b"".join((_PARTIAL_BATCH_LABEL, struct.pack("<I", len(context)), context, struct.pack("<I", holder),
                     _bytes(n_square, width), _ciphertext_digest(ciphertexts, width),
                     _ciphertext_digest(partials, width)))
    stream = hashlib.shake_256(seed).digest(_CHALLENGE_BYTES * len(ciphertexts))
    weights = [int.from_bytes(stream[i : i + _CHALLENGE_BYTES], "little")
               for i in range(0, len(stream), _CHALLENGE_BYTES)]
    combined = multi_power(ciphertexts, weights, n_square)
    combined_partial = multi_power(partials, weights, n_square)
    return gmpy2.powmod(combined, 4, n_square), gmpy2.powmod(combined_partial, 2, n_square)


def partial_challenge(n_square: mpz, context: bytes, holder: int, values: Sequence[int]) -> int:
    width = _width(n_square)
    seed = b"".join((_PARTIAL_CHALLENGE_LABEL, struct.pack("<I", len(context)), context, struct.pack("<I", holder),
                     *(_bytes(v, width) for v in values)))
    return int.from_bytes(hashlib.shake_256(seed).digest(_CHALLENGE_BYTES), "little")


def verify_decryption(public_key: phe.PaillierPublicKey, ciphertexts: Sequence[int], plaintexts: Sequence[int],
                      randomness: Sequence[int]) -> None:
    """Check that ``ciphertexts[i] = (1 + plaintexts[i] n) randomness[i]^n mod n^2`` for all i; raise otherwise.

    Batched with fresh 128-bit weights from the OS, so a key holder cannot aim at them: a wrong plaintext
    passes with probability at most 2^-128.
    """
    if not len(ciphertexts) == len(plaintexts) == len(randomness) or not ciphertexts:
        raise CryptoError("a decryption needs one plaintext and one randomness per ciphertext")
    n = mpz(public_key.n)
    n_square = n * n
    if any(not 0 <= m < n for m in plaintexts) or any(not 0 < r < n or gmpy2.gcd(r, n) != 1 for r in randomness):
        raise CryptoError("a decrypted value or its randomness is out of range")
    weights = [secrets.randbits(CHALLENGE_BITS) for _ in ciphertexts]
    message = gmpy2.f_mod(sum(t * int(m) for t, m in zip(weights, plaintexts)), n)
    left = gmpy2.f_mod((1 + message * n) * gmpy2.powmod(multi_power(randomness, weights, n), n, n_square), n_square)
    if left != multi_power(ciphertexts, weights, n_square):
        raise CryptoError("the decryption does not match the ciphertexts")
