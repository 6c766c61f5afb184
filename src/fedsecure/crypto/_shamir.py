"""Shamir t-of-n secret sharing (Shamir, CACM 1979) of 256-bit secrets.

Shares live in the prime field GF(p) with p = 2^256 + 297, the smallest prime
above 2^256, so any 32-byte string (a self-mask seed or a raw X25519 private
key, as SecAgg needs; Bonawitz et al., CCS 2017, §4) is one field element.
Share x-coordinates are client ids plus one; share values serialise to
:data:`SHARE_BYTES` little-endian bytes.

Secrecy: any t-1 shares are uniformly distributed and independent of the
secret, provided the polynomial's coefficients are uniform; they are drawn from
the OS CSPRNG with 128 extra bits before reduction, so their distance from
uniform is below 2^-128.

Vectorised: several secrets are shared at once as one product of a coefficient
matrix and a (cached) Vandermonde matrix, evaluated by numpy over Python
integers, which removes the interpreter from the inner loop.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence

import gmpy2
import numpy as np

from .._errors import CryptoError

__all__ = [
    "FIELD_PRIME",
    "SHARE_BYTES",
    "SECRET_BYTES",
    "split_secrets",
    "reconstruct_secret",
    "lagrange_coefficients_at_zero",
    "share_to_bytes",
    "share_from_bytes",
]

FIELD_PRIME = 2**256 + 297
SECRET_BYTES = 32
SHARE_BYTES = 33
_SAMPLE_BYTES = 48  # 384 bits reduced mod a 257-bit prime: statistical distance < 2^-127.


def _random_field_elements(count: int) -> list[int]:
    pool = os.urandom(_SAMPLE_BYTES * count)
    return [
        int.from_bytes(pool[i : i + _SAMPLE_BYTES], "little") % FIELD_PRIME
        for i in range(0, _SAMPLE_BYTES * count, _SAMPLE_BYTES)
    ]


@functools.lru_cache(maxsize=16_384)
def _powers(x: int, threshold: int) -> tuple[int, ...]:
    # 1, x, x^2, ... x^(t-1) mod p: one Vandermonde row. SecAgg+ clients share with different neighbour sets,
    # so whole matrices rarely repeat, but each client id's row recurs in every round it is a neighbour.
    row = [1]
    for _ in range(threshold - 1):
        row.append(row[-1] * x % FIELD_PRIME)
    return tuple(row)


@functools.lru_cache(maxsize=64)
def _vandermonde(xs: tuple[int, ...], threshold: int) -> np.ndarray:
    rows = [_powers(x, threshold) for x in xs]
    return np.array(rows, dtype=object).reshape(len(xs), threshold)


def _check_parameters(threshold: int, xs: Sequence[int]) -> tuple[int, ...]:
    xs_tuple = tuple(int(x) for x in xs)
    if threshold < 1:
        raise ValueError("threshold must be at least 1")
    if len(xs_tuple) < threshold:
        raise ValueError(f"cannot deal {len(xs_tuple)} shares with threshold {threshold}")
    if len(set(xs_tuple)) != len(xs_tuple) or any(not 0 < x < FIELD_PRIME for x in xs_tuple):
        raise ValueError("share x-coordinates must be distinct, non-zero field elements")
    return xs_tuple


def _split_with_coefficients(coefficients: np.ndarray, xs: Sequence[int]) -> list[list[int]]:
    """Evaluate each row's polynomial (constant term first) at every x.

    Private deterministic hook for known-answer tests; production code draws
    the coefficients from the OS in :func:`split_secrets`.
    """
    threshold = coefficients.shape[1]
    vandermonde = _vandermonde(_check_parameters(threshold, xs), threshold)
    values = (coefficients @ vandermonde.T) % FIELD_PRIME
    return [[int(v) for v in row] for row in values]


def split_secrets(secrets: Sequence[bytes], *, threshold: int, xs: Sequence[int]) -> list[list[int]]:
    """Share each 32-byte secret t-of-len(xs); returns ``shares[secret][point]``.

    Threat model: fewer than ``threshold`` shares reveal nothing about a
    secret; ``threshold`` shares reveal it entirely.
    """
    coefficients = np.empty((len(secrets), threshold), dtype=object)
    randomness = _random_field_elements(len(secrets) * (threshold - 1))
    for row, secret in enumerate(secrets):
        if len(secret) != SECRET_BYTES:
            raise ValueError(f"secrets are {SECRET_BYTES} bytes")
        coefficients[row, 0] = int.from_bytes(secret, "little")
        coefficients[row, 1:] = randomness[row * (threshold - 1) : (row + 1) * (threshold - 1)]
    return _split_with_coefficients(coefficients, xs)


def lagrange_coefficients_at_zero(xs: Sequence[int]) -> list[int]:
    """The Lagrange basis values at 0 for the points ``xs`` in GF(p)."""
    if len(set(xs)) != len(xs):
        raise ValueError("x-coordinates must be distinct")
    return list(_lagrange_at_zero(tuple(int(x) for x in xs)))


@functools.lru_cache(maxsize=4096)
def _lagrange_at_zero(xs: tuple[int, ...]) -> tuple[int, ...]:
    # In SecAgg all reconstructions of a round usually use the same responders,
    # so the O(t^2) coefficients are computed once per responder set.
    points = [gmpy2.mpz(x) for x in xs]
    coefficients = []
    for i, xi in enumerate(points):
        numerator = gmpy2.mpz(1)
        denominator = gmpy2.mpz(1)
        for j, xj in enumerate(points):
            if i != j:
                numerator = numerator * xj % FIELD_PRIME
                denominator = denominator * (xj - xi) % FIELD_PRIME
        coefficients.append(int(numerator * gmpy2.invert(denominator, FIELD_PRIME) % FIELD_PRIME))
    return tuple(coefficients)


def reconstruct_secret(shares: Sequence[tuple[int, int]], *, threshold: int) -> bytes:
    """Recover a 32-byte secret from at least ``threshold`` (x, y) shares.

    Uses the first ``threshold`` shares. Raises :class:`CryptoError` when there
    are too few shares or the interpolated value does not fit in 32 bytes.
    Shamir sharing does not authenticate shares: a corrupted share usually yields
    a wrong 32-byte value, so callers must check the result against a
    commitment (SecAgg checks seeds against their commitment and private keys
    against their advertised public key).
    """
    if len(shares) < threshold:
        raise CryptoError("not enough shares to reconstruct")
    chosen = list(shares[:threshold])
    xs = [x for x, _ in chosen]
    lagrange = lagrange_coefficients_at_zero(xs)
    value = sum(c * y for c, (_, y) in zip(lagrange, chosen)) % FIELD_PRIME
    if value >= 2 ** (8 * SECRET_BYTES):
        raise CryptoError("shares are inconsistent")
    return value.to_bytes(SECRET_BYTES, "little")


def share_to_bytes(value: int) -> bytes:
    """Serialise a share value (a field element) to :data:`SHARE_BYTES` bytes."""
    return value.to_bytes(SHARE_BYTES, "little")


def share_from_bytes(data: bytes) -> int:
    """Parse a share value; raises :class:`CryptoError` if it is not a field element."""
    if len(data) != SHARE_BYTES:
        raise CryptoError("malformed share")
    value = int.from_bytes(data, "little")
    if value >= FIELD_PRIME:
        raise CryptoError("malformed share")
    return value
