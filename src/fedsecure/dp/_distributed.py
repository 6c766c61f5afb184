"""Distributed DP under secure aggregation: every client noises its own integer vector before masking.

Each client (Kairouz, Liu, Steinke, ICML 2021, Algorithm 1; Agarwal et al. 2021):

1. clips its update to L2 norm ``clip`` and multiplies it by ``scale``;
2. rotates it with a randomised Walsh-Hadamard transform (a public sign flip
   drawn per round, then H / sqrt(d), d padded to a power of two), which
   spreads any vector's mass evenly over the coordinates so that each is
   sub-Gaussian with variance proxy ||x||^2 / d;
3. rounds it stochastically, again and again until the rounded vector's norm is
   at most the conditional-rounding bound for ``beta`` (Proposition 22), so the
   L2 sensitivity stays bounded;
4. adds discrete Gaussian (exact sampler) or Skellam noise of the local
   variance, and reduces into the ring Z_(2^bits).

The server only ever sees masked vectors and the noised ring sum, which it maps
back by centring the ring, undoing the rotation and dividing by the scale.
:func:`plan_distributed` picks the scale so that the noised sum of up to
``max_clients`` inputs wraps the ring with probability below ``wrap_probability``,
a Chernoff bound over every coordinate, and refuses a ring too small for the
noise plus the data.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._errors import ConfigurationError, InvalidUpdateError
from ..crypto import MaskExpander, Purpose, derive_key
from ..encoding import EncodedUpdate, Ring
from ..encoding import clip_l2 as _clip_l2
from ._accounting import (
    GAUSSIAN_ORDERS,
    INTEGER_ORDERS,
    Mechanism,
    calibrate,
    ddgauss_rdp,
    rdp_to_epsilon,
    rounded_l1_bound,
    rounded_l2_bound,
    skellam_rdp,
    subsampled_without_replacement_rdp,
)
from ._sampling import VECTOR_VARIANCE_LIMIT, RandomSource, discrete_gaussian, skellam

__all__ = ["DistributedPlan", "DistributedDPEncoding", "plan_distributed", "hadamard", "distributed_rdp",
           "distributed_orders", "calibrate_distributed", "distributed_encoding_digest"]

DEFAULT_BETA = math.exp(-0.5)
DEFAULT_WRAP_PROBABILITY = 1e-6
#: The largest Skellam local variance a plan uses (each Poisson mean stays exact in float64).
SKELLAM_VARIANCE_LIMIT = float(2**50)


def hadamard(values: np.ndarray) -> np.ndarray:
    """The orthonormal Walsh-Hadamard transform H x / sqrt(d) of a power-of-two-long vector (its own inverse)."""
    out = np.array(values, dtype=np.float64, copy=True)
    size = out.size
    if size & (size - 1):
        raise ValueError("the Hadamard transform needs a power-of-two length")
    half = 1
    while half < size:
        blocks = out.reshape(-1, 2, half)
        left = blocks[:, 0, :].copy()
        blocks[:, 0, :] += blocks[:, 1, :]
        blocks[:, 1, :] = left - blocks[:, 1, :]
        half *= 2
    return out / math.sqrt(size)


def _padded(dimension: int) -> int:
    return 1 << max(0, (dimension - 1).bit_length())


def distributed_orders(mechanism: Mechanism) -> tuple[float, ...]:
    """The Rényi orders a distributed mechanism is accounted at: the DDGauss bound (Proposition 14) holds at
    every real order above 1; Skellam's (Agarwal et al. 2021, Corollary 3.6) is used at integer orders only."""
    return GAUSSIAN_ORDERS if mechanism is Mechanism.DDGAUSS else tuple(float(a) for a in INTEGER_ORDERS)


def distributed_rdp(mechanism: Mechanism, order: float, *, l2_sensitivity: float, l1_sensitivity: float,
                    local_variance: float, clients: int, dim: int) -> float:
    """RDP at ``order`` of ``clients`` noise shares of ``local_variance`` each (integer units)."""
    if mechanism is Mechanism.DDGAUSS:
        return ddgauss_rdp(order, l2_sensitivity, l1_sensitivity, local_variance, clients, dim)
    if mechanism is Mechanism.SKELLAM:
        return skellam_rdp(order, l2_sensitivity, l1_sensitivity, clients * local_variance)
    raise ValueError(f"{mechanism.value} is not a distributed mechanism")


@dataclass(frozen=True)
class DistributedPlan:
    """Public parameters of distributed DP for a federation: scale, per-client noise, sensitivities.

    ``noise_multiplier`` is the standard deviation of the summed noise of
    ``expected_clients`` shares divided by the L2 sensitivity after rounding.
    ``wrap_bound`` bounds the probability that the noised sum of ``max_clients``
    inputs leaves the ring in any coordinate.
    """

    mechanism: Mechanism
    dimension: int
    padded_dimension: int
    clip: float
    bits: int
    scale: float
    local_variance: float
    beta: float
    expected_clients: int
    max_clients: int
    noise_multiplier: float
    l2_sensitivity: float
    l1_sensitivity: float
    wrap_bound: float

    def noise_multiplier_for(self, survivors: int) -> float:
        """The noise multiplier of a sum of ``survivors`` shares: its standard deviation over the L2 sensitivity."""
        return math.sqrt(survivors * self.local_variance) / self.l2_sensitivity

    @property
    def orders(self) -> tuple[float, ...]:
        """The Rényi orders this plan's mechanism is accounted at without amplification."""
        return distributed_orders(self.mechanism)

    def orders_for(self, sample_rate: float) -> tuple[float, ...]:
        """The Rényi orders of :meth:`rdp` at ``sample_rate``: integer ones once amplification is claimed."""
        return self.orders if sample_rate >= 1 else tuple(float(a) for a in INTEGER_ORDERS)

    def rdp(self, survivors: int, *, adjacency: Any = None, sample_rate: float = 1.0) -> np.ndarray:
        """The RDP curve (at :meth:`orders_for` ``sample_rate``) of one round in which ``survivors`` shares of
        noise were summed.

        Under zero-out adjacency (the default) the neighbouring sums differ by one client's rounded update,
        its noise share being kept: the per-client L2 and L1 sensitivities. Under replace-one adjacency they
        differ by two rounded updates: twice both. Every client contributes a noise share on both sides, so the
        number of shares, which the total's variance reveals, is the same.

        At ``sample_rate`` 1 no amplification is claimed: that is the guarantee against the server, which
        knows every cohort. Below 1 the cohort is a fixed-size subset of the population drawn uniformly without
        replacement, at this share, and hidden from whoever sees only the released model. Against such an
        observer each order's bound is the smaller of the unamplified one and Wang, Balle and Kasiviswanathan's
        (Theorem 9), whose mechanism on the subset is taken under replace-one adjacency (twice the sensitivity),
        as their analysis requires.
        """
        from ._config import Adjacency

        factor = Adjacency(adjacency or Adjacency.ZERO_OUT).sensitivity_factor
        orders = self.orders_for(sample_rate)
        if survivors < 1:
            return np.full(len(orders), math.inf)

        def curve(order: float, sensitivity_factor: float) -> float:
            return distributed_rdp(self.mechanism, order, l2_sensitivity=sensitivity_factor * self.l2_sensitivity,
                                   l1_sensitivity=sensitivity_factor * self.l1_sensitivity,
                                   local_variance=self.local_variance, clients=survivors,
                                   dim=self.padded_dimension)

        plain = np.array([curve(order, factor) for order in orders])
        if sample_rate >= 1:
            return plain
        replace_one = functools.cache(lambda j: curve(float(j), 2.0))
        amplified = np.array([subsampled_without_replacement_rdp(int(order), sample_rate, replace_one)
                              for order in orders])
        smaller: np.ndarray = np.minimum(plain, amplified)
        return smaller

    def epsilon(self, *, survivors: int, rounds: int, delta: float, adjacency: Any = None,
                sample_rate: float = 1.0) -> float:
        """Epsilon after ``rounds`` rounds with ``survivors`` noise shares each, under ``adjacency``, with cohorts
        drawn without replacement at ``sample_rate`` (1: no amplification, the guarantee against the server)."""
        rdp = self.rdp(survivors, adjacency=adjacency, sample_rate=sample_rate)
        epsilon = rdp_to_epsilon(self.orders_for(sample_rate), rounds * rdp, delta)
        if sample_rate < 1:
            # Without amplification the bound holds too, at real orders; over many rounds at a small rate it can
            # be the smaller (Theorem 9's higher-order terms do not shrink with the noise).
            epsilon = min(epsilon, self.epsilon(survivors=survivors, rounds=rounds, delta=delta, adjacency=adjacency))
        return epsilon

    def encoding(self, rotation_seed: bytes) -> DistributedDPEncoding:
        """The encoding of one round, with the round's public rotation seed."""
        return DistributedDPEncoding(self, rotation_seed)

    def to_json(self) -> str:
        """The plan as the JSON object :meth:`from_json` reads (how it travels to a client)."""
        fields = {name: getattr(self, name) for name in _PLAN_FIELDS}
        return json.dumps(fields | {"mechanism": self.mechanism.value})

    @classmethod
    def from_json(cls, text: object, *, max_dimension: int) -> DistributedPlan:
        """Parse a plan a server sent, checking every field's type and range before anything is allocated.

        Threat model: the plan comes from the server. A dimension above
        ``max_dimension``, a padded dimension other than the next power of two,
        a non-finite or negative number, a noise multiplier that is not what the
        local variance gives (see :meth:`check_consistent`), or an unknown or
        missing field raises :class:`ConfigurationError` naming the field.
        """
        def bad(name: str, why: str) -> ConfigurationError:
            return ConfigurationError(f"the distributed-DP plan's {name} {why}", parameter=name)

        if not isinstance(text, str) or len(text) > 4096:
            raise bad("text", "is not a short JSON string")
        try:
            fields = json.loads(text)
        except (ValueError, RecursionError):
            raise bad("text", "is not JSON") from None
        if not isinstance(fields, dict) or set(fields) != set(_PLAN_FIELDS) | {"mechanism"}:
            raise bad("fields", f"must be exactly {sorted(set(_PLAN_FIELDS) | {'mechanism'})}")
        try:
            mechanism = Mechanism(fields["mechanism"])
        except ValueError:
            raise bad("mechanism", "is unknown") from None
        if mechanism is Mechanism.GAUSSIAN:
            raise bad("mechanism", "must be ddgauss or skellam")
        values: dict[str, Any] = {"mechanism": mechanism}
        for name in _PLAN_FIELDS:
            value = fields[name]
            if name in _PLAN_INTEGERS:
                if type(value) is not int or not 1 <= value <= 2**62:
                    raise bad(name, "must be a positive integer")
            elif type(value) not in (int, float) or abs(value) > 1e300 or not math.isfinite(value) or value < 0:
                raise bad(name, "must be a finite non-negative number")
            values[name] = value if name in _PLAN_INTEGERS else float(value)
        if values["dimension"] > max_dimension:
            raise bad("dimension", f"exceeds this client's limit of {max_dimension}")
        if values["padded_dimension"] != _padded(values["dimension"]):
            raise bad("padded_dimension", "is not the dimension rounded up to a power of two")
        if not 2 <= values["bits"] <= 62 or not values["expected_clients"] <= values["max_clients"]:
            raise bad("bits", "or expected_clients out of range")
        if not values["clip"] > 0 or not values["scale"] > 0 or not 0 <= values["beta"] < 1 \
                or values["local_variance"] > 2.0**62:
            raise bad("clip", "scale, beta or local_variance out of range")
        if mechanism is Mechanism.SKELLAM and values["local_variance"] > SKELLAM_VARIANCE_LIMIT:
            raise bad("local_variance", "exceeds 2^50, beyond which Skellam's Poisson draws are not exact")
        if mechanism is Mechanism.DDGAUSS and values["local_variance"] > VECTOR_VARIANCE_LIMIT:
            # plan_distributed never makes one: larger variances take the exact sampler's slow path for every
            # coordinate, a way to keep a client busy for half an hour.
            raise bad("local_variance", f"exceeds {VECTOR_VARIANCE_LIMIT}, the largest a plan uses")
        plan = cls(**values)
        try:
            plan.check_consistent()
        except ConfigurationError:
            raise
        except (OverflowError, ZeroDivisionError, ValueError) as error:
            raise bad("parameters", f"give no finite sensitivity ({type(error).__name__})") from None
        return plan

    def check_consistent(self) -> None:
        """Refuse a plan whose derived figures are not what its own parameters give.

        The sensitivities follow from clip, scale, padded dimension and beta; the
        noise multiplier from the local variance each client adds and the
        expected number of shares. A client checks this, so the noise it is told
        it adds is the noise it actually adds.
        """
        l2 = rounded_l2_bound(self.clip * self.scale, self.padded_dimension, self.beta)
        expected = {"l2_sensitivity": l2, "l1_sensitivity": rounded_l1_bound(l2, self.padded_dimension),
                    "noise_multiplier": math.sqrt(self.expected_clients * self.local_variance) / l2}
        for name, value in expected.items():
            if not math.isclose(getattr(self, name), value, rel_tol=1e-9, abs_tol=0.0):
                raise ConfigurationError(f"the distributed-DP plan's {name} is {getattr(self, name):.6g}, but its "
                                         f"parameters give {value:.6g}", parameter=name)
        if self.mechanism is Mechanism.DDGAUSS and self.local_variance != math.floor(self.local_variance):
            raise ConfigurationError("a discrete Gaussian plan's local variance must be an integer",
                                     parameter="local_variance")


_PLAN_FIELDS = ("dimension", "padded_dimension", "clip", "bits", "scale", "local_variance", "beta",
                "expected_clients", "max_clients", "noise_multiplier", "l2_sensitivity", "l1_sensitivity",
                "wrap_bound")
_PLAN_INTEGERS = frozenset({"dimension", "padded_dimension", "bits", "expected_clients", "max_clients"})


def _wrap_bound(*, signal_proxy: float, noise_variance: float, mechanism: Mechanism, half_ring: float,
                dim: int) -> float:
    # Chernoff: P(|Z_j| >= a) <= 2 min_l exp(l^2 S / 2 + K(l) - l a), with K the noise's log-MGF:
    # discrete Gaussian l^2 s^2 / 2 (sub-Gaussian, CKS 2020), Skellam v (cosh l - 1). Union over d coordinates.
    def log_bound(lam: float) -> float:
        noise = lam * lam * noise_variance / 2 if mechanism is Mechanism.DDGAUSS else (
            noise_variance * (math.cosh(lam) - 1) if lam < 700 else math.inf)
        return lam * lam * signal_proxy / 2 + noise - lam * half_ring

    # The minimiser solves l S + K'(l) = a, so it lies below a / S and below the noise's own root:
    # a / v for the Gaussian, asinh(a / v) for Skellam (K' = v sinh l).
    high = half_ring / max(signal_proxy, 1e-12)
    if noise_variance > 0:
        high = min(high, half_ring / noise_variance if mechanism is Mechanism.DDGAUSS
                   else math.asinh(half_ring / noise_variance))
    low = 0.0
    for _ in range(200):  # golden-section search on a convex function
        a, b = low + 0.382 * (high - low), low + 0.618 * (high - low)
        if log_bound(a) < log_bound(b):
            high = b
        else:
            low = a
    best = min(0.0, log_bound((low + high) / 2))
    return min(1.0, 2 * dim * math.exp(best))


def plan_distributed(
    *,
    mechanism: Mechanism,
    dimension: int,
    clip: float,
    bits: int,
    expected_clients: int,
    max_clients: int,
    noise_multiplier: float,
    beta: float = DEFAULT_BETA,
    wrap_probability: float = DEFAULT_WRAP_PROBABILITY,
) -> DistributedPlan:
    """The largest scale for which ``max_clients`` noised inputs stay in a ``bits``-bit ring.

    Each client adds noise of variance ``noise_multiplier^2 * L2^2 / expected_clients``
    (rounded up to an integer for the discrete Gaussian), so that the sum of
    ``expected_clients`` shares has standard deviation ``noise_multiplier`` times
    the rounded L2 sensitivity. Raises :class:`ConfigurationError` naming
    ``bits`` when no scale fits.
    """
    if mechanism is Mechanism.GAUSSIAN:
        raise ConfigurationError("distributed DP uses ddgauss or skellam", parameter="mechanism")
    # The scale search and the rounded sensitivity bounds work in float64: the clip and the noise must leave them
    # room (an update's L2 norm of 1e-9 or 1e9 is already far outside any model's).
    if not (math.isfinite(clip) and 1e-9 <= clip <= 1e9):
        raise ConfigurationError(f"distributed DP needs an L2 clip in [1e-9, 1e9], not {clip:g}", parameter="clip")
    if not (math.isfinite(noise_multiplier) and 0 < noise_multiplier <= 1e12):
        raise ConfigurationError(f"noise_multiplier must lie in (0, 1e12], not {noise_multiplier:g}",
                                 parameter="noise_multiplier")
    if not 1 <= expected_clients <= max_clients:
        raise ConfigurationError("expected_clients must lie in [1, max_clients]", parameter="expected_clients")
    if not 2 <= bits <= 62:
        raise ConfigurationError("bits must lie in [2, 62]", parameter="bits")
    padded = _padded(dimension)
    half_ring = float(2 ** (bits - 1))

    def build(scale: float) -> DistributedPlan:
        l2 = rounded_l2_bound(clip * scale, padded, beta)
        variance = noise_multiplier**2 * l2**2 / expected_clients
        if mechanism is Mechanism.DDGAUSS:
            variance = float(max(1, math.ceil(variance)))
        signal = (max_clients * clip * scale) ** 2 / padded + max_clients / 4
        wrap = _wrap_bound(signal_proxy=signal, noise_variance=max_clients * variance, mechanism=mechanism,
                           half_ring=half_ring, dim=padded)
        return DistributedPlan(mechanism=mechanism, dimension=dimension, padded_dimension=padded, clip=clip,
                               bits=bits, scale=scale, local_variance=variance, beta=beta,
                               expected_clients=expected_clients, max_clients=max_clients,
                               noise_multiplier=math.sqrt(expected_clients * variance) / l2,
                               l2_sensitivity=l2, l1_sensitivity=rounded_l1_bound(l2, padded), wrap_bound=wrap)

    low, high = 1e-9, half_ring / clip
    # Cap each client's variance. The discrete Gaussian's stays within the exact sampler's vectorised range (2^27,
    # sigma about 11585 ring units): a larger scale would only shrink the rounding error further, already
    # negligible at that noise. Skellam's stays at 2^50: its Poisson draws are exact only while their mean is far
    # below 2^53 (float64's integers); beyond it every draw shares a factor and the noise stops hiding the sum's
    # low bits.
    limit = VECTOR_VARIANCE_LIMIT if mechanism is Mechanism.DDGAUSS else SKELLAM_VARIANCE_LIMIT
    cap_low, cap_high = low, high
    while cap_high / cap_low > 1 + 1e-6:
        middle = math.sqrt(cap_low * cap_high)
        if build(middle).local_variance <= limit:
            cap_low = middle
        else:
            cap_high = middle
    high = max(low * (1 + 1e-6), cap_low)
    if build(low).local_variance > limit:
        raise ConfigurationError(
            f"noise multiplier {noise_multiplier:.3g} over {expected_clients} clients needs a per-client variance "
            f"above the {mechanism.value} sampler's exact range (2^{math.log2(limit):.0f}) at any scale: lower "
            f"the noise multiplier or the cohort", parameter="noise_multiplier")
    if build(low).wrap_bound > wrap_probability:
        raise ConfigurationError(
            f"a {bits}-bit ring cannot hold the noise for noise multiplier {noise_multiplier:.3g} over "
            f"{max_clients} clients and {padded} coordinates: raise `bits` (or lower the noise or the cohort)",
            parameter="bits")
    for _ in range(200):
        middle = math.sqrt(low * high)
        if build(middle).wrap_bound <= wrap_probability:
            low = middle
        else:
            high = middle
        if high / low < 1 + 1e-6:
            break
    return build(low)


def calibrate_distributed(plan_for: Callable[[float], DistributedPlan], epsilon_of: Callable[[DistributedPlan], float],
                          target_epsilon: float, *, low: float = 0.05, high: float = 200.0) -> DistributedPlan:
    """The plan with the smallest noise multiplier whose ``epsilon_of`` meets ``target_epsilon``, within the ring.

    More noise needs more room, so when ``plan_for`` refuses the upper end of the search (the ring cannot hold
    it), the search stops at the largest noise the ring holds. If even that misses the target, the refusal names
    ``bits`` and says how far the ring falls short, rather than quoting the search's bound.
    """
    try:
        plan_for(high)
    except ConfigurationError:
        try:
            widest = plan_for(low)
        except ConfigurationError as error:
            # The multiplier in plan_distributed's refusal is the search's lower end, not one the caller chose.
            raise ConfigurationError(
                f"target epsilon {target_epsilon:g} cannot be calibrated: the ring holds no noise multiplier the "
                f"search tries, not even its smallest ({low:g}): {error}", parameter=error.parameter) from None
        fits, refused = low, high
        while refused / fits > 1 + 1e-3:
            middle = math.sqrt(fits * refused)
            try:
                widest = plan_for(middle)
                fits = middle
            except ConfigurationError:
                refused = middle
        reached = epsilon_of(widest)
        if reached > target_epsilon:
            raise ConfigurationError(
                f"a {widest.bits}-bit ring holds noise multiplier {widest.noise_multiplier:.3g} at most over "
                f"{widest.max_clients} clients and {widest.padded_dimension} coordinates, which gives epsilon "
                f"{reached:.3g}, above the target {target_epsilon:g}: raise `bits` (or the target)",
                parameter="bits") from None
        high = fits
    return plan_for(calibrate(lambda z: epsilon_of(plan_for(z)), target_epsilon, low=low, high=high).noise)


def distributed_encoding_digest(plan: DistributedPlan, rotation_seed: bytes) -> bytes:
    """The encoding digest of a round that runs ``plan`` under ``rotation_seed``, without building its rotation.

    An auditor recomputes it from a transcript's plan and public seed, in constant memory whatever the plan's
    dimension.
    """
    packed = struct.pack("<BQQdBddQQ", list(Mechanism).index(plan.mechanism), plan.dimension,
                         plan.padded_dimension, plan.clip, plan.bits, plan.scale, plan.local_variance,
                         plan.expected_clients, plan.max_clients)
    derived = struct.pack("<ddddd", plan.beta, plan.noise_multiplier, plan.l2_sensitivity, plan.l1_sensitivity,
                          plan.wrap_bound)
    return hashlib.sha256(b"fedsecure/v2/distributed-dp" + packed + derived + rotation_seed).digest()


class DistributedDPEncoding:
    """One round's distributed-DP encoding: what clients run before masking, and how the server decodes.

    It offers what :meth:`RoundConfig.create` needs from an encoding
    (``clients``, ``vector_length``, ``ring``, ``digest()``), so SecAgg and
    SecAgg+ carry it unchanged. The rotation seed is public.
    """

    def __init__(self, plan: DistributedPlan, rotation_seed: bytes) -> None:
        if len(rotation_seed) != 32:
            raise ValueError("rotation_seed must be 32 bytes")
        self.plan = plan
        self.rotation_seed = rotation_seed
        self.ring = Ring(plan.bits)
        key = derive_key(rotation_seed, purpose=Purpose.DP_ROTATION, salt=b"", round_id=0,
                         context=(plan.padded_dimension,))
        words = MaskExpander(plan.padded_dimension, np.uint32).expand(key)
        self._signs = np.where(words & np.uint32(1), 1.0, -1.0)

    @property
    def clients(self) -> int:
        return self.plan.max_clients

    @property
    def vector_length(self) -> int:
        return self.plan.padded_dimension

    @property
    def dimension(self) -> int:
        return self.plan.dimension

    @property
    def max_coordinate(self) -> int:
        raise ConfigurationError("distributed DP runs under SecAgg or SecAgg+, not Paillier", parameter="protocol")

    def digest(self) -> bytes:
        """SHA-256 over every field of the plan and the rotation seed: the whole plan is bound into the round."""
        return distributed_encoding_digest(self.plan, self.rotation_seed)

    def rotate(self, vector: np.ndarray) -> np.ndarray:
        padded = np.zeros(self.plan.padded_dimension)
        padded[: vector.size] = vector
        return hadamard(self._signs * padded)

    def unrotate(self, rotated: np.ndarray) -> np.ndarray:
        vector: np.ndarray = (self._signs * hadamard(rotated))[: self.plan.dimension]
        return vector

    def encode(self, update: np.ndarray) -> EncodedUpdate:
        """Clip, scale, rotate, round conditionally and add this client's noise share; refuse NaN/Inf first."""
        plan = self.plan
        vector = np.asarray(update, dtype=np.float64)
        if vector.shape != (plan.dimension,):
            raise InvalidUpdateError(f"update has shape {vector.shape}, expected ({plan.dimension},)")
        if not np.all(np.isfinite(vector)):
            raise InvalidUpdateError("update contains NaN or Inf")
        rounded = self.round_conditionally(self.rotate(_clip_l2(vector, plan.clip) * plan.scale))
        source = RandomSource()
        if plan.mechanism is Mechanism.DDGAUSS:
            noise = discrete_gaussian(int(plan.local_variance), plan.padded_dimension, source=source)
        else:
            noise = skellam(plan.local_variance, plan.padded_dimension, source=source)
        integers = rounded.astype(np.int64) + noise.astype(np.int64)
        return EncodedUpdate(values=self.ring.from_signed(integers), ring=self.ring, encoding_digest=self.digest(),
                             # Noise is unbounded in principle: any signed ring word can occur.
                             max_coordinate=self.ring.modulus // 2)

    def round_conditionally(self, scaled: np.ndarray) -> np.ndarray:
        """Stochastic rounding, repeated until the norm is within the conditional-rounding bound (Prop. 22)."""
        plan = self.plan
        bound = rounded_l2_bound(plan.clip * plan.scale, plan.padded_dimension, plan.beta)
        rounding = np.random.default_rng(secrets.randbits(128))  # noqa: csprng-ok (stochastic rounding, not a secret)
        floor = np.floor(scaled)
        for _ in range(10_000):
            rounded: np.ndarray = floor + (rounding.random(scaled.size) < scaled - floor)
            if float(np.dot(rounded, rounded)) <= bound * bound:
                return rounded
        raise InvalidUpdateError("conditional rounding did not meet its norm bound")  # pragma: no cover

    def decode_sum(self, ring_sum: np.ndarray) -> np.ndarray:
        """The noised float sum of the survivors' clipped updates (length ``dimension``)."""
        values = np.asarray(ring_sum)
        if values.shape != (self.plan.padded_dimension,) or values.dtype != self.ring.dtype:
            raise InvalidUpdateError("ring sum of the wrong shape or dtype")
        total: np.ndarray = self.unrotate(self.ring.to_signed(values).astype(np.float64) / self.plan.scale)
        return total
