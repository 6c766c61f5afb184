"""Noise samplers for differential privacy, driven by a CSPRNG (AES-256-CTR keyed from the OS).

* :func:`discrete_gaussian` is the *exact* sampler of Canonne, Kamath and Steinke
  ("The Discrete Gaussian for Differential Privacy", NeurIPS 2020, Algorithms 1-3):
  a discrete Laplace proposal accepted with probability exp(-gamma) for a
  rational gamma, every Bernoulli decided by comparing a uniform integer (drawn
  by rejection from keystream words, so exactly uniform) with an integer
  threshold. No floating point touches the output distribution. It is
  vectorised with numpy over int64; the few draws whose integers would not fit
  (the far tails, or variances beyond 2^27) take the same algorithm in Python
  integers.
* :func:`skellam` is the difference of two Poisson draws (Agarwal, Kairouz and
  Liu, NeurIPS 2021). The Poisson draws use Hörmann's PTRS transformed
  rejection (1993) for means of 10 and more, and inversion below, on 53-bit
  uniforms from the same keystream: floating point, as in every Poisson
  sampler shipped with numerical libraries, but never a non-cryptographic generator.
  Its acceptance test evaluates the log-probability around the mean, accurate at
  the largest means a plan uses (2^49).
* :func:`gaussian` gives float64 standard normals by the Box-Muller transform of
  keystream uniforms, for callers who want continuous noise. fedsecure's own
  central DP does not use it: it adds :func:`discrete_gaussian` to the integer sum.
"""

from __future__ import annotations

import math
import os
import secrets
from typing import NoReturn

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["RandomSource", "discrete_gaussian", "skellam", "gaussian"]

# Vectorised int64 arithmetic needs 2 v t^2 * k < 2^63 for the series counter k; beyond this variance
# (sigma above 2^13.5) every draw takes the same algorithm in Python integers.
VECTOR_VARIANCE_LIMIT = 1 << 27
_WORDS_PER_REFILL = 1 << 16
# A series with this many elements or fewer still running finishes in Python integers.
_PYTHON_TAIL = 8


class RandomSource:
    """Uniform 64-bit words from AES-256-CTR under a fresh key from ``os.urandom``.

    One source per sampling job; never seeded by the caller, never pickled.
    """

    __slots__ = ("_context", "_buffer", "_position")

    def __init__(self) -> None:
        self._context = Cipher(algorithms.AES(os.urandom(32)), modes.CTR(bytes(16))).encryptor()
        self._buffer = np.empty(0, dtype=np.uint64)
        self._position = 0

    def words(self, count: int) -> np.ndarray:
        """``count`` independent uniform uint64 words."""
        out = np.empty(count, dtype=np.uint64)
        filled = 0
        while filled < count:
            if self._position >= self._buffer.size:
                size = max(_WORDS_PER_REFILL, count - filled)
                self._buffer = np.frombuffer(self._context.update(bytes(8 * size)), dtype="<u8").copy()
                self._position = 0
            take = min(count - filled, self._buffer.size - self._position)
            out[filled : filled + take] = self._buffer[self._position : self._position + take]
            self._position += take
            filled += take
        return out

    def below(self, bounds: np.ndarray) -> np.ndarray:
        """One exactly uniform integer in [0, m) for each m of ``bounds`` (int64, 1 <= m < 2^63)."""
        bounds = np.asarray(bounds, dtype=np.int64)
        if bounds.size and int(bounds.min()) < 1:
            raise ValueError("bounds must be positive")
        m = bounds.astype(np.uint64)
        # Accept w < floor((2^64 - 1) / m) * m, a multiple of m: then w mod m is exactly uniform.
        limit = (np.uint64(2**64 - 1) // m) * m
        out = np.empty(bounds.size, dtype=np.int64)
        pending = np.arange(bounds.size)
        while pending.size:
            draws = self.words(pending.size)
            accepted = draws < limit[pending]
            out[pending[accepted]] = (draws[accepted] % m[pending[accepted]]).astype(np.int64)
            pending = pending[~accepted]
        return out

    def uniform(self, count: int) -> np.ndarray:
        """``count`` floats uniform in (0, 1), 53 random bits each."""
        return ((self.words(count) >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53

    def __reduce__(self) -> NoReturn:
        raise TypeError("a RandomSource holds a key and cannot be pickled")


def _bernoulli_ratio(source: RandomSource, numerators: np.ndarray, denominators: np.ndarray) -> np.ndarray:
    """Bernoulli(a/b) for each pair, exactly: a uniform integer below b compared with a."""
    return source.below(denominators) < numerators


def _bernoulli_exp_minus_one(source: RandomSource, count: int) -> np.ndarray:
    """``count`` independent Bernoulli(exp(-1)) draws, the series method run on all of them at once.

    The series' first draw, Bernoulli(1/1), always succeeds, so every element starts at its second.
    """
    ones = np.ones(count, dtype=np.int64)
    return _series(source, ones, ones, start=2)


# Integer parts of gamma up to this many take their Bernoulli(exp(-1)) factors from one pooled series; larger ones
# (far-tail proposals, probability below exp(-64)) draw theirs one factor at a time and stop at the first failure.
_POOLED_WHOLE_LIMIT = 64


def _bernoulli_exp(source: RandomSource, numerators: np.ndarray, denominators: np.ndarray) -> np.ndarray:
    """Bernoulli(exp(-a/b)) for each pair with a >= 0, b >= 1 (CKS 2020, Algorithm 1).

    exp(-gamma) = exp(-1)^floor(gamma) * exp(-(gamma - floor(gamma))); each factor by the
    series method: draw Bernoulli(g/k) for k = 1, 2, ... until one fails; the result is
    1 when the number of draws K is odd. The floor(gamma) factors Bernoulli(exp(-1)) of every
    element come from one series run over all of them: each element owns a block of exactly
    floor(gamma) fresh independent draws, fixed before any is drawn, so their conjunction has
    probability exp(-floor(gamma)) exactly.
    """
    a = np.asarray(numerators, dtype=np.int64)
    b = np.asarray(denominators, dtype=np.int64)
    result = np.ones(a.size, dtype=bool)
    whole, fraction = np.divmod(a, b)
    pooled = np.flatnonzero((whole > 0) & (whole <= _POOLED_WHOLE_LIMIT))
    if pooled.size:
        blocks = whole[pooled]
        failures = (~_bernoulli_exp_minus_one(source, int(blocks.sum()))).astype(np.int64)
        starts = np.cumsum(blocks) - blocks
        result[pooled] = np.add.reduceat(failures, starts) == 0
    # Integer part beyond the pool: floor(gamma) independent Bernoulli(exp(-1)), all of which must succeed.
    remaining = np.where(whole > _POOLED_WHOLE_LIMIT, whole, 0)
    while True:
        active = np.flatnonzero(result & (remaining > 0))
        if not active.size:
            break
        result[active] = _bernoulli_exp_minus_one(source, active.size)
        remaining[active] -= 1
    active = np.flatnonzero(result)
    if active.size:
        result[active] = _series(source, fraction[active], b[active])
    return result


def _geometric_exp_minus_one(source: RandomSource, count: int) -> np.ndarray:
    """``count`` independent draws of V ~ Geometric(1 - exp(-1)): successes of Bernoulli(exp(-1)) before a failure.

    One stream of Bernoulli(exp(-1)) draws is cut at its failures; the i-th draw is the length of the i-th run of
    successes. The stream goes on (a run left open at the end of one batch continues into the next) until
    ``count`` runs are complete, so the first ``count`` runs of an endless independent stream are returned:
    independent and exactly geometric.
    """
    runs: list[np.ndarray] = [np.empty(0, dtype=np.int64)]
    have = 0
    carried = 0
    while have < count:
        # A run has mean length 1 / (1 - exp(-1)) = 1.58 draws; 1.75 per run needed finishes most calls at once.
        size = (7 * (count - have)) // 4 + 32
        bits = _bernoulli_exp_minus_one(source, size)
        failures = np.flatnonzero(~bits)
        if not failures.size:
            carried += bits.size
            continue
        lengths = np.diff(failures, prepend=-1) - 1
        lengths[0] += carried
        carried = bits.size - 1 - int(failures[-1])
        runs.append(lengths)
        have += lengths.size
    return np.concatenate(runs)[:count]


def _series(source: RandomSource, a: np.ndarray, b: np.ndarray, *, start: int = 1) -> np.ndarray:
    """Bernoulli(exp(-a/b)) for 0 <= a/b <= 1 (CKS 2020, Algorithm 1, the series method).

    ``start`` skips draws known to succeed: 2 where every a equals b, whose first draw is Bernoulli(1).
    """
    k = np.full(a.size, start, dtype=np.int64)
    running = np.arange(a.size)
    while running.size:
        # Bernoulli(gamma / k) = Bernoulli(a / (b k)). Where b k could leave int64 (only for huge k, whose
        # probability is below 1/k!), that element finishes the same series in Python integers; so do the last
        # few elements still running, for which a numpy pass costs more than the Python loop.
        overflow = k[running] > (2**62) // b[running]
        if running.size <= _PYTHON_TAIL:
            overflow[:] = True
        for i in running[overflow]:
            kk = int(k[i])
            while secrets.randbelow(int(b[i]) * kk) < int(a[i]):
                kk += 1
            k[i] = kk
        running = running[~overflow]
        success = _bernoulli_ratio(source, a[running], b[running] * k[running])
        k[running[success]] += 1
        running = running[success]
    result: np.ndarray = (k % 2) == 1
    return result


def _discrete_laplace(source: RandomSource, scale: int, count: int) -> np.ndarray:
    """``count`` draws with P(y) proportional to exp(-|y|/scale), integer scale >= 1 (CKS 2020, Algorithm 2).

    Each pass draws more proposals than still needed (about 63% of them are kept) and keeps the accepted ones
    in the order drawn: accepted proposals are independent draws of the target, so taking the first ``count``
    of them leaves the distribution exact while most calls finish in one pass.
    """
    t = np.int64(scale)
    accepted: list[np.ndarray] = [np.empty(0, dtype=np.int64)]
    have = 0
    while have < count:
        size = 2 * (count - have) + 16
        u = source.below(np.full(size, t))
        keep = _bernoulli_exp(source, u, np.full(size, t))
        # V ~ Geometric(1 - exp(-1)): count successes of Bernoulli(exp(-1)) before the first failure.
        v = np.zeros(size, dtype=np.int64)
        alive = np.flatnonzero(keep)
        v[alive] = _geometric_exp_minus_one(source, alive.size)
        x = u + t * v
        negative = (source.words(size) & np.uint64(1)).astype(bool)
        keep &= ~(negative & (x == 0))
        values = np.where(negative, -x, x)[keep]
        accepted.append(values)
        have += values.size
    return np.concatenate(accepted)[:count]


def _discrete_gaussian_python(variance: int) -> int:
    """One exact draw in Python integers: for variances or tails where int64 would overflow."""
    t = math.isqrt(variance) + 1
    while True:
        u = secrets.randbelow(t)
        if not _bernoulli_exp_python(u, t):
            continue
        v = 0
        while _bernoulli_exp_python(1, 1):
            v += 1
        x = u + t * v
        negative = secrets.randbits(1) == 1
        if negative and x == 0:
            continue
        y = -x if negative else x
        # Accept with probability exp(-(|y| - sigma^2/t)^2 / (2 sigma^2)) = exp(-(|y| t - v)^2 / (2 v t^2)).
        if _bernoulli_exp_python((abs(y) * t - variance) ** 2, 2 * variance * t * t):
            return y


def _bernoulli_exp_python(a: int, b: int) -> bool:
    whole, fraction = divmod(a, b)
    for _ in range(whole):
        if not _series_python(1, 1):
            return False
    return _series_python(fraction, b)


def _series_python(a: int, b: int) -> bool:
    k = 1
    while secrets.randbelow(b * k) < a:
        k += 1
    return k % 2 == 1


def discrete_gaussian(variance: int, size: int, *, source: RandomSource | None = None) -> np.ndarray:
    """``size`` exact draws from the discrete Gaussian N_Z(0, variance) (CKS 2020, Algorithm 3).

    ``variance`` is sigma^2 and must be a positive integer (callers round the
    variance they need *up*, which only adds privacy). Returns int64.
    """
    if not isinstance(variance, (int, np.integer)) or variance < 1:
        raise ValueError("variance must be a positive integer")
    variance = int(variance)
    source = source or RandomSource()
    if variance > VECTOR_VARIANCE_LIMIT:
        return np.array([_discrete_gaussian_python(variance) for _ in range(size)], dtype=object)
    t = math.isqrt(variance) + 1
    denominator = 2 * variance * t * t
    accepted: list[np.ndarray] = [np.empty(0, dtype=np.int64)]
    have = 0
    while have < size:
        # About 70% of proposals are accepted; drawing half as many again as still needed finishes most calls
        # in one pass. Accepted proposals are independent exact draws, taken in the order drawn.
        proposals = (3 * (size - have)) // 2 + 16
        y = _discrete_laplace(source, t, proposals)
        distance = np.abs(y) * t - variance
        # Accept with probability exp(-(|y| - v/t)^2 / (2v)) = exp(-(|y| t - v)^2 / (2 v t^2)). The square must
        # fit int64: far-tail proposals (beyond 2^31 / t, about 2^17 sigma) take Python integers instead.
        safe = np.abs(distance) < 2**31
        accept = np.zeros(proposals, dtype=bool)
        index = np.flatnonzero(safe)
        accept[index] = _bernoulli_exp(source, distance[index] ** 2, np.full(index.size, denominator))
        for i in np.flatnonzero(~safe):
            accept[i] = _bernoulli_exp_python(int(distance[i]) ** 2, denominator)
        values = y[accept]
        accepted.append(values)
        have += values.size
    out: np.ndarray = np.concatenate(accepted)[:size]
    return out


def _poisson(mean: float, size: int, source: RandomSource) -> np.ndarray:
    out = np.empty(size, dtype=np.int64)
    if mean <= 0:
        out[:] = 0
        return out
    if mean < 10:
        # Inversion: count uniforms until their product falls below exp(-mean).
        limit = math.exp(-mean)
        product = np.ones(size)
        count = np.zeros(size, dtype=np.int64)
        running = np.arange(size)
        while running.size:
            product[running] *= source.uniform(running.size)
            done = product[running] <= limit
            count[running[~done]] += 1
            running = running[~done]
        return count
    # PTRS (Hörmann 1993, "The transformed rejection method for generating Poisson random variables").
    slam = math.sqrt(mean)
    b = 0.931 + 2.53 * slam
    a = -0.059 + 0.02483 * b
    inverse_alpha = 1.1239 + 1.1328 / (b - 3.4)
    v_r = 0.9277 - 3.6224 / (b - 2)
    pending = np.arange(size)
    while pending.size:
        u = source.uniform(pending.size) - 0.5
        v = source.uniform(pending.size)
        us = 0.5 - np.abs(u)
        k = np.floor((2 * a / us + b) * u + mean + 0.43)
        quick = (us >= 0.07) & (v <= v_r)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_accept = (np.log(v) + np.log(inverse_alpha) - np.log(a / (us * us) + b)) <= _log_poisson(k, mean)
        valid = (k >= 0) & ~((us < 0.013) & (v > us))
        accept = quick | (valid & log_accept)
        out[pending[accept]] = k[accept].astype(np.int64)
        pending = pending[~accept]
    return out


def _log_poisson(k: np.ndarray, mean: float) -> np.ndarray:
    """log P(K = k) for K ~ Poisson(mean), accurate to about 1e-9 however large the mean.

    The textbook -mean + k log(mean) - lgamma(k + 1) subtracts terms near mean log(mean): at a mean of 2^48 their
    rounding error is several units, which bends the accepted distribution (its spread drifts by percents). With
    x = k - mean and Stirling's series for lgamma, it is -k log1p(x / mean) + x - log(2 pi k) / 2 - c(k), every
    term of the size of x or smaller; c(k) = 1/(12k) - 1/(360k^3) + 1/(1260k^5) is within 1e-9 for k >= 10.
    """
    out = np.full(k.shape, -np.inf)
    small = (k >= 0) & (k < 10)
    out[small] = [-mean + x * math.log(mean) - math.lgamma(x + 1.0) for x in k[small].tolist()]
    large = k >= 10
    kk = k[large]
    x = kk - mean
    out[large] = (-kk * np.log1p(x / mean) + x - 0.5 * np.log(2 * np.pi * kk)
                  - (1 / (12 * kk) - 1 / (360 * kk**3) + 1 / (1260 * kk**5)))
    return out


def skellam(variance: float, size: int, *, source: RandomSource | None = None) -> np.ndarray:
    """``size`` draws of Poisson(variance/2) - Poisson(variance/2): symmetric Skellam with the given variance."""
    if not variance > 0:
        raise ValueError("variance must be positive")
    source = source or RandomSource()
    draws: np.ndarray = _poisson(variance / 2, size, source) - _poisson(variance / 2, size, source)
    return draws


def gaussian(size: int, *, source: RandomSource | None = None) -> np.ndarray:
    """``size`` float64 standard normals by the Box-Muller transform of keystream uniforms."""
    source = source or RandomSource()
    pairs = (size + 1) // 2
    u1, u2 = source.uniform(pairs), source.uniform(pairs)
    radius = np.sqrt(-2.0 * np.log(u1))
    normals: np.ndarray = np.concatenate([radius * np.cos(2 * np.pi * u2), radius * np.sin(2 * np.pi * u2)])
    return normals[:size]
