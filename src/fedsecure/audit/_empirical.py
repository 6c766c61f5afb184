"""An empirical lower bound on epsilon from one run, with canaries (Steinke, Nasr, Jagielski, NeurIPS 2023).

"Privacy Auditing with One (1) Training Run" inserts m canaries, each included
independently with probability 1/2, runs the mechanism once, and guesses which
canaries were included from a score: "in" for the k+ highest scores, "out" for
the k- lowest, abstaining on the rest. If the mechanism is (epsilon, delta)-DP,
the number of correct guesses among the r = k+ + k- made is stochastically
dominated by Binomial(r, e^eps / (1 + e^eps)), up to a term in m*delta (their
Theorem 3 and Appendix D). An epsilon for which v correct guesses would be
less likely than the significance level is rejected; the largest rejected one is
the lower bound. k+ and k- are fixed before the run, so the confidence level
holds as stated.

Here the mechanism is one release of fedsecure's differentially private sum,
run through fedsecure's own code: central DP-FedAvg (the clipped sum plus
Gaussian noise drawn from AES-CTR keystream) or distributed DP (every canary
client runs :meth:`~fedsecure.dp.DistributedDPEncoding.encode`, noise share
included, and the server decodes the ring sum). Canary i is the i-th basis
vector scaled to the clip norm, so canaries do not interfere; its score is
coordinate i of the release. A mechanism whose noise is smaller than its
accounting claims shows up as a lower bound above the claimed epsilon.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["CanaryAudit", "DEFAULT_CANARIES", "canary_audit", "epsilon_lower_bound", "guesses_for",
           "one_run_p_value"]


def _binomial_pmf(r: int, epsilon: float) -> np.ndarray:
    # Bin(r, q) with q = e^eps / (1 + e^eps), in log space: log q and log(1 - q) are computed from epsilon
    # directly, so that q never rounds to 1 for large epsilon and tiny tails keep their precision.
    k = np.arange(r + 1)
    log_choose = np.array([math.lgamma(r + 1) - math.lgamma(i + 1) - math.lgamma(r - i + 1) for i in range(r + 1)])
    log_q = -math.log1p(math.exp(-epsilon))
    log_not_q = -epsilon + log_q
    pmf: np.ndarray = np.exp(log_choose + k * log_q + (r - k) * log_not_q)
    return pmf


def one_run_p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """P[at least v of r guesses correct] under (epsilon, delta)-DP with m randomised canaries.

    Steinke, Nasr, Jagielski 2023, Theorem 3 with the delta term of their
    Appendix D: P[Bin(r, q) >= v] + 2 m delta max_i P[v - i <= Bin(r, q) < v] / i,
    where q = e^eps / (1 + e^eps) is the accuracy of eps-DP randomised response.
    """
    if not 0 <= v <= r <= m:
        raise ValueError("need 0 <= v <= r <= m")
    pmf = _binomial_pmf(r, epsilon)
    tail = float(pmf[v:][::-1].sum())
    if delta == 0 or v == 0:
        return min(tail, 1.0)
    steps = np.arange(1, v + 1)
    # P[v - i <= Bin < v] for i = 1..v, as a running sum of the pmf below v.
    below = np.cumsum(pmf[v - steps])
    return min(tail + 2 * m * delta * float(np.max(below / steps)), 1.0)


def epsilon_lower_bound(m: int, r: int, v: int, delta: float, *, significance: float = 0.05) -> float:
    """The largest epsilon that ``v`` correct guesses of ``r`` reject at ``significance`` (0 if none is rejected).

    With probability at least ``1 - significance`` over the canaries'
    inclusion, a mechanism that is (epsilon, delta)-DP yields a bound no larger than epsilon.
    """
    if not 0 < significance < 1:
        raise ValueError("significance must lie in (0, 1)")
    if one_run_p_value(m, r, v, 0.0, delta) >= significance:
        return 0.0
    low, high = 0.0, 1.0
    while one_run_p_value(m, r, v, high, delta) < significance:
        low, high = high, 2 * high
        if high > 1e3:
            return math.inf
    for _ in range(60):
        middle = (low + high) / 2
        if one_run_p_value(m, r, v, middle, delta) < significance:
            low = middle
        else:
            high = middle
    return low


@dataclass(frozen=True)
class CanaryAudit:
    """One audit: what the mechanism claims, what the canaries show, and whether the claim is contradicted."""

    level: str
    claimed_epsilon: float
    delta: float
    noise_multiplier: float
    claimed_noise_multiplier: float
    canaries: int
    guesses: int
    correct: int
    confidence: float
    empirical_epsilon_lower_bound: float

    @property
    def violation(self) -> bool:
        """True when the canaries prove the mechanism is not (claimed epsilon, delta)-DP at the stated confidence."""
        return self.empirical_epsilon_lower_bound > self.claimed_epsilon

    def to_json(self) -> dict[str, Any]:
        return {"level": self.level, "claimed_epsilon": self.claimed_epsilon, "delta": self.delta,
                "noise_multiplier": self.noise_multiplier, "claimed_noise_multiplier": self.claimed_noise_multiplier,
                "canaries": self.canaries, "guesses": self.guesses, "correct": self.correct,
                "confidence": self.confidence, "empirical_epsilon_lower_bound": self.empirical_epsilon_lower_bound,
                "violation": self.violation}


def _included(canaries: int) -> np.ndarray:
    # Fair coins from the OS: the auditor's randomness must be unpredictable to the mechanism.
    bits = np.unpackbits(np.frombuffer(os.urandom((canaries + 7) // 8), dtype=np.uint8))[:canaries]
    included: np.ndarray = bits.astype(bool)
    return included


def _central_release(included: np.ndarray, clip: float, noise_multiplier: float) -> np.ndarray:
    """The release of fedsecure's central DP on the canaries' sum, through the pipeline's own code.

    The aggregate is what the secure protocol unmasks: the integer ring sum of the included canaries, each a basis
    vector of L2 norm ``clip`` quantised at the encoding's scale. :meth:`fedsecure.pipeline.CentralDP.release`,
    which ``Federation`` calls on every round's sum, adds its exact discrete Gaussian noise and divides by the
    public denominator; the sum is recovered from the released mean.
    """
    from ..dp import DPConfig, PrivacyLevel
    from ..pipeline import round_privacy
    from ..protocols import ProtocolKind

    m = included.size
    privacy = round_privacy(DPConfig(level=PrivacyLevel.CENTRAL, delta=0.5 / m, noise_multiplier=noise_multiplier),
                            protocol=ProtocolKind.SECAGG_PLUS, dimension=m, clip=clip, ring_bits=62, max_weight=1,
                            population=m)
    encoding = privacy.encoding(m)
    scale = encoding.scale  # type: ignore[union-attr]
    # Each canary quantised as the clients' quantiser does it: clip * scale, rounded stochastically.
    exact = clip * scale
    rounding = np.random.default_rng(int.from_bytes(os.urandom(16), "big"))  # noqa: csprng-ok (stochastic rounding)
    canary = math.floor(exact) + (rounding.random(m) < exact - math.floor(exact))
    ring_sum = encoding.ring.from_signed(np.where(included, canary, 0).astype(np.int64))
    release = privacy.release(0, encoding, ring_sum, range(m))
    if release.mean is None:  # pragma: no cover - a release without a mean is refused above
        raise RuntimeError("central DP released nothing")
    total: np.ndarray = release.mean * privacy.denominator  # type: ignore[attr-defined]
    return total


def _distributed_release(included: np.ndarray, clip: float, noise_multiplier: float, bits: int) -> np.ndarray:
    from ..dp import Mechanism, plan_distributed

    m = included.size
    plan = plan_distributed(mechanism=Mechanism.DDGAUSS, dimension=m, clip=clip, bits=bits, expected_clients=m,
                            max_clients=m, noise_multiplier=noise_multiplier)
    encoding = plan.encoding(os.urandom(32))
    total = np.zeros(plan.padded_dimension, dtype=encoding.ring.dtype)
    for client in range(m):
        # Every canary client takes part and adds its noise share; an excluded canary sends zeros.
        update = np.zeros(m)
        if included[client]:
            update[client] = clip
        np.add(total, encoding.encode(update).values, out=total)
    release: np.ndarray = encoding.decode_sum(encoding.ring.reduce(total))
    return release


def _calibrated_noise(level: str, epsilon: float, delta: float, canaries: int, bits: int) -> float:
    from ..dp import DPConfig, Mechanism, PrivacyLedger, PrivacyLevel, calibrate, plan_distributed

    if level == "central":
        # One release, no sampling, zero-out (add/remove of one client): as the pipeline's ledger accounts it.
        ledger = PrivacyLedger(DPConfig(level=PrivacyLevel.CENTRAL, delta=delta, noise_multiplier=1.0),
                               sample_rate=1.0)
        return calibrate(lambda z: ledger.planned_epsilon(z, 1), epsilon).noise

    def distributed_epsilon(z: float) -> float:
        plan = plan_distributed(mechanism=Mechanism.DDGAUSS, dimension=canaries, clip=1.0, bits=bits,
                                expected_clients=canaries, max_clients=canaries, noise_multiplier=z)
        return plan.epsilon(survivors=canaries, rounds=1, delta=delta)

    return calibrate(distributed_epsilon, epsilon, low=0.05, high=50.0).noise


#: Canaries per level by default: the central mechanism is one cheap release; every distributed canary is a client
#: that samples a noise share for every canary's coordinate (canaries squared draws).
DEFAULT_CANARIES = {"central": 30_000, "distributed": 1000}


def guesses_for(canaries: int, epsilon: float, delta: float, confidence: float) -> int:
    """The guesses per side, fixed from the claim before the run: the fewest (from 250 up) with which a perfect
    score would certify at least twice the claimed epsilon, or every canary if none would."""
    for per_side in (250, 500, 1000, 2000, 5000, 15_000):
        if 2 * per_side > canaries:
            break
        if epsilon_lower_bound(canaries, 2 * per_side, 2 * per_side, delta, significance=1 - confidence) \
                >= 2 * epsilon:
            return per_side
    return canaries // 2


def canary_audit(level: str, *, epsilon: float = 2.0, delta: float = 1e-5, canaries: int | None = None,
                 guesses_per_side: int | None = None, confidence: float = 0.95, noise_scale: float = 1.0,
                 bits: int = 32) -> CanaryAudit:
    """Audit one release of ``level`` ("central" or "distributed") calibrated for (``epsilon``, ``delta``).

    ``noise_scale`` multiplies the calibrated noise multiplier: 1 audits the
    mechanism as fedsecure runs it; 0.5 or 0.1 is a deliberately miscalibrated one.
    The central release goes through the pipeline's :class:`~fedsecure.pipeline.CentralDP`; the distributed one
    through every canary client's :meth:`~fedsecure.dp.DistributedDPEncoding.encode` under zero-out adjacency
    (an excluded canary sends a zero update and still adds its noise share), which is what the accounting
    claims. ``canaries`` defaults to :data:`DEFAULT_CANARIES`; the guesses are the ``guesses_per_side`` highest
    and lowest scores, by default :func:`guesses_for` the claim. With 30,000 canaries a perfect score certifies
    epsilon above 8; 1000 distributed canaries certify at most about 5.
    """
    if level not in ("central", "distributed"):
        raise ValueError("level must be 'central' or 'distributed'")
    canaries = canaries or DEFAULT_CANARIES[level]
    guesses_per_side = guesses_per_side or guesses_for(canaries, epsilon, delta, confidence)
    if not 0 < 2 * guesses_per_side <= canaries:
        raise ValueError("need 0 < 2 * guesses_per_side <= canaries")
    claimed = _calibrated_noise(level, epsilon, delta, canaries, bits)
    noise = claimed * noise_scale
    included = _included(canaries)
    clip = 1.0
    if level == "central":
        release = _central_release(included, clip, noise)
    else:
        release = _distributed_release(included, clip, noise, bits)
    order = np.argsort(release)
    top, bottom = order[-guesses_per_side:], order[:guesses_per_side]
    correct = int(included[top].sum() + (~included[bottom]).sum())
    bound = epsilon_lower_bound(canaries, 2 * guesses_per_side, correct, delta, significance=1 - confidence)
    return CanaryAudit(level, epsilon, delta, noise, claimed, canaries, 2 * guesses_per_side, correct, confidence,
                       bound)
