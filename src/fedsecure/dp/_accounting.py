"""Privacy accounting: Rényi DP curves, subsampling, composition, conversion and calibration.

* Gaussian (central DP-FedAvg): Opacus' RDP analysis of the sampled Gaussian
  mechanism (Mironov, Talwar, Zhang 2019) and Opacus' PRV accountant (Gopi,
  Lee, Wutschitz 2021).
* Distributed discrete Gaussian: Kairouz, Liu, Steinke, "The Distributed
  Discrete Gaussian Mechanism for Federated Learning with Secure Aggregation",
  ICML 2021. The sum of n discrete Gaussians N_Z(0, s^2) is close to N_Z(0, n s^2);
  Theorem 1 bounds the gap by tau = 10 sum_{k=1}^{n-1} exp(-2 pi^2 s^2 k/(k+1)),
  and Proposition 14 gives the RDP curve of the summed noise at order a:
  min(a D2^2/2 + tau d, a/2 (D2^2 + 2 D1 tau + tau^2 d), a/2 (D2 + sqrt(d) tau)^2)
  with D1, D2 the L1, L2 sensitivities divided by the standard deviation sqrt(n) s.
* Skellam: Agarwal, Kairouz, Liu, NeurIPS 2021, Corollary 3.6: for total variance
  mu and integer sensitivities, a D2^2/(2 mu) + min(((2a-1) D2^2 + 6 D1)/(4 mu^2), 3 D1/(2 mu)).
* Subsampling for those two: the general Poisson-subsampled RDP bound of Zhu and
  Wang (ICML 2019, Theorem 5), at integer orders, never worse than no subsampling;
  and for cohorts of a fixed size drawn without replacement, the general bound of
  Wang, Balle and Kasiviswanathan (AISTATS 2019, Theorem 9), which holds under
  replace-one adjacency of the population, at integer orders.
* Conversion to (epsilon, delta): Opacus' ``get_privacy_spent`` (Balle et al. 2020).
* Stochastic rounding inflates the L2 sensitivity of a scaled vector of norm c in
  d dimensions to min(c + sqrt(d), sqrt(c^2 + d/4 + sqrt(2 ln(1/beta)) (c + sqrt(d)/2)))
  under conditional rounding with parameter beta (DDGauss, Theorem 1 and Proposition 22).
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Mechanism",
    "Accountant",
    "INTEGER_ORDERS",
    "rdp_to_epsilon",
    "gaussian_epsilon",
    "gaussian_rdp",
    "ddgauss_tau",
    "ddgauss_rdp",
    "skellam_rdp",
    "subsampled_rdp",
    "subsampled_without_replacement_rdp",
    "rounded_l2_bound",
    "rounded_l1_bound",
    "calibrate",
    "Calibration",
    "GAUSSIAN_ORDERS",
]

#: Integer Rényi orders for the mechanisms whose subsampled curve needs integers.
INTEGER_ORDERS: tuple[int, ...] = tuple(range(2, 129)) + (160, 192, 256)
#: Orders for the Gaussian: Opacus' defaults (1.1 to 10.9, then 12 to 63) plus a few large ones.
GAUSSIAN_ORDERS: tuple[float, ...] = tuple([1 + x / 10.0 for x in range(1, 100)] + [float(a) for a in range(12, 64)]
                                           + [80.0, 128.0, 256.0])


class Mechanism(enum.Enum):
    """The noise a DP level adds."""

    GAUSSIAN = "gaussian"
    DDGAUSS = "ddgauss"
    SKELLAM = "skellam"


class Accountant(enum.Enum):
    """How epsilon is computed for the Gaussian mechanism."""

    RDP = "rdp"
    PRV = "prv"


def rdp_to_epsilon(orders: Sequence[float], rdp: Sequence[float] | np.ndarray, delta: float) -> float:
    """The smallest epsilon for ``delta`` over the orders (Opacus' conversion, Balle et al. 2020)."""
    import warnings

    from opacus.accountants.analysis.rdp import get_privacy_spent

    with warnings.catch_warnings():
        # Opacus warns when the best order is an end of the grid; the bound is still valid, only looser.
        warnings.simplefilter("ignore", UserWarning)
        epsilon, _ = get_privacy_spent(orders=list(orders), rdp=list(rdp), delta=delta)
    # The conversion's correction terms can take a tiny divergence below zero at large delta; no epsilon is.
    return max(0.0, float(epsilon))


def gaussian_rdp(noise_multiplier: float, sample_rate: float, steps: int,
                 orders: Sequence[float] = GAUSSIAN_ORDERS) -> np.ndarray:
    """RDP of ``steps`` compositions of the Poisson-sampled Gaussian (Opacus' analysis)."""
    from opacus.accountants.analysis.rdp import compute_rdp

    return np.asarray(compute_rdp(q=sample_rate, noise_multiplier=noise_multiplier, steps=steps,
                                  orders=list(orders)), dtype=float)


def gaussian_epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float,
                     accountant: Accountant = Accountant.RDP) -> float:
    """Epsilon of the sampled Gaussian mechanism run ``steps`` times, by Opacus' RDP or PRV accountant."""
    if not noise_multiplier > 0:
        return math.inf
    if not math.isfinite(noise_multiplier):
        return 0.0
    if steps == 0:
        return 0.0
    if accountant is Accountant.PRV:
        from opacus.accountants import PRVAccountant

        prv = PRVAccountant()
        prv.history = [(noise_multiplier, sample_rate, steps)]
        return float(prv.get_epsilon(delta))
    return rdp_to_epsilon(GAUSSIAN_ORDERS, gaussian_rdp(noise_multiplier, sample_rate, steps), delta)


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def subsampled_rdp(order: int, sample_rate: float, rdp: Callable[[int], float]) -> float:
    """Zhu and Wang (ICML 2019), Theorem 5: RDP at integer ``order`` after Poisson sampling at ``sample_rate``.

    ``rdp(j)`` is the mechanism's RDP at integer order j. The bound is never
    worse than ``rdp(order)`` (the minimum of the two is returned).
    """
    if sample_rate >= 1:
        return rdp(order)
    if sample_rate <= 0:
        return 0.0
    q = sample_rate
    terms = [(0.0, ((1 - q) ** (order - 1)) * (order * q - q + 1)),
             (rdp(2), math.comb(order, 2) * q * q * (1 - q) ** (order - 2))]
    for j in range(3, order + 1):
        terms.append(((j - 1) * rdp(j) + _log_comb(order, j) + (order - j) * math.log1p(-q) + j * math.log(q), 3.0))
    exponents = np.array([t[0] for t in terms])
    weights = np.array([t[1] for t in terms])
    top = float(np.max(exponents))
    value = top + math.log(float(np.sum(weights * np.exp(exponents - top))))
    return min(value / (order - 1), rdp(order))


def subsampled_without_replacement_rdp(order: int, sample_rate: float, rdp: Callable[[int], float]) -> float:
    """Wang, Balle and Kasiviswanathan (AISTATS 2019), Theorem 9: RDP at integer ``order`` of a mechanism run on
    a uniformly random subset of fixed size, a ``sample_rate`` = size / population share, drawn without replacement.

    ``rdp(j)`` is the mechanism's RDP at integer order j *on the subset, under replace-one adjacency* (two subsets
    differ in one member's data, replaced by any other's): for a sum of clipped updates that is twice the
    clip. The bound then holds under replace-one adjacency of the population, and so under zero-out, its special
    case. With epsilon(infinity) unbounded (every Gaussian-like mechanism), Theorem 9 reads

        1/(a-1) log(1 + q^2 C(a,2) min(4 (e^rdp(2) - 1), 2 e^rdp(2)) + sum_{j=3..a} 2 q^j C(a,j) e^((j-1) rdp(j))).

    Threat model: the amplification holds only against an observer who does not learn which clients were drawn.
    """
    if order < 2:
        raise ValueError("the bound is for integer orders of 2 and more")
    if sample_rate >= 1:
        return rdp(order)
    if sample_rate <= 0:
        return 0.0
    q = sample_rate
    second = rdp(2)
    # log(e^x - 1): directly while e^x is finite (exact for tiny x too), as x + log(1 - e^-x) beyond.
    if second <= 0:
        log_expm1 = -math.inf
    elif second < 700:
        log_expm1 = math.log(math.expm1(second))
    else:
        log_expm1 = second + math.log1p(-math.exp(-second))
    log_terms = [0.0, 2 * math.log(q) + _log_comb(order, 2) + min(math.log(4) + log_expm1, math.log(2) + second)]
    for j in range(3, order + 1):
        log_terms.append(math.log(2) + (j - 1) * rdp(j) + j * math.log(q) + _log_comb(order, j))
    # log(1 + sum of the other terms): through log1p while they are small, so a tiny divergence is not rounded away.
    rest = np.array(log_terms[1:])
    top = float(np.max(rest))
    if math.isnan(top) or top == math.inf:
        return math.inf
    if top == -math.inf:
        return 0.0
    if top < 0:
        return math.log1p(math.exp(top) * float(np.sum(np.exp(rest - top)))) / (order - 1)
    return (top + math.log(math.exp(-top) + float(np.sum(np.exp(rest - top))))) / (order - 1)


@functools.lru_cache(maxsize=4096)
def ddgauss_tau(local_variance: float, clients: int) -> float:
    """tau of DDGauss Theorem 1 for ``clients`` shares of variance ``local_variance`` (integer units).

    It does not depend on the Rényi order, so a curve over many orders computes it once.
    """
    return 10.0 * sum(math.exp(-2.0 * math.pi**2 * local_variance * k / (k + 1)) for k in range(1, clients))


def ddgauss_rdp(order: float, l2_sensitivity: float, l1_sensitivity: float, local_variance: float,
                clients: int, dim: int) -> float:
    """RDP of the sum of ``clients`` discrete Gaussian shares (DDGauss, Proposition 14)."""
    std = math.sqrt(clients * local_variance)
    l2, l1 = l2_sensitivity / std, l1_sensitivity / std
    tau = ddgauss_tau(local_variance, clients)
    return min(order / 2 * l2**2 + tau * dim,
               order / 2 * (l2**2 + 2 * l1 * tau + tau**2 * dim),
               order / 2 * (l2 + math.sqrt(dim) * tau) ** 2)


def skellam_rdp(order: float, l2_sensitivity: float, l1_sensitivity: float, total_variance: float) -> float:
    """RDP of Skellam noise of variance ``total_variance`` per coordinate (Agarwal et al. 2021, Cor. 3.6)."""
    mu, l2sq, l1 = total_variance, l2_sensitivity**2, l1_sensitivity
    return order * l2sq / (2 * mu) + min(((2 * order - 1) * l2sq + 6 * l1) / (4 * mu**2), 3 * l1 / (2 * mu))


def rounded_l2_bound(scaled_norm: float, dim: int, beta: float) -> float:
    """L2 norm bound of a vector of norm ``scaled_norm`` after (conditional) stochastic rounding."""
    plain = scaled_norm + math.sqrt(dim)
    if beta <= 0:
        return plain
    conditional = math.sqrt(scaled_norm**2 + dim / 4
                            + math.sqrt(2 * math.log(1 / beta)) * (scaled_norm + math.sqrt(dim) / 2))
    return min(plain, conditional)


def rounded_l1_bound(l2_bound: float, dim: int) -> float:
    """L1 bound of an integer vector of L2 norm at most ``l2_bound``: min(sqrt(d), L2) * L2."""
    return l2_bound * min(math.sqrt(dim), l2_bound)


@dataclass(frozen=True)
class Calibration:
    """The result of :func:`calibrate`: the noise parameter and the epsilon it gives (never above the target)."""

    noise: float
    epsilon: float


def calibrate(epsilon_of: Callable[[float], float], target_epsilon: float, *, low: float = 1e-3,
              high: float = 1e4, relative_tolerance: float = 1e-4) -> Calibration:
    """The smallest noise (to ``relative_tolerance``) whose epsilon does not exceed ``target_epsilon``.

    ``epsilon_of`` must decrease as the noise grows. Bisection keeps the upper
    end, which always meets the target, so the result never overshoots it.
    """
    from .._errors import ConfigurationError

    if not (math.isfinite(target_epsilon) and target_epsilon > 0):
        raise ConfigurationError("target epsilon must be positive and finite", parameter="target_epsilon")
    if epsilon_of(high) > target_epsilon:
        raise ConfigurationError(f"even a noise multiplier of {high:g} does not reach epsilon {target_epsilon:g}: "
                                 "raise the target, or lower the rounds or the sampling rate",
                                 parameter="target_epsilon")
    if epsilon_of(low) <= target_epsilon:
        return Calibration(low, epsilon_of(low))
    while high - low > relative_tolerance * high:
        middle = math.sqrt(low * high) if high / low > 4 else (low + high) / 2
        if epsilon_of(middle) <= target_epsilon:
            high = middle
        else:
            low = middle
    return Calibration(high, epsilon_of(high))
