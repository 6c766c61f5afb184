"""Each differential-privacy level as one object the aggregation pipeline calls at fixed points.

The pipeline asks a level four things, whoever drives the round: how clients encode (:meth:`RoundPrivacy.encoding`),
which cohort to draw (:meth:`RoundPrivacy.sample`), how few survivors a round may keep
(:meth:`RoundPrivacy.minimum_survivors`), and what the server releases from an aggregate or from a round without
one (:meth:`RoundPrivacy.release`, :meth:`RoundPrivacy.no_aggregate`), which the level also records in its ledger.

* :class:`NoPrivacy`: weighted mean of the updates, weights inside the protected vector.
* :class:`LocalDP`: as above; each client runs DP-SGD (Opacus) and its own accountant's epsilon is recorded.
* :class:`CentralDP`: user-level DP-FedAvg (McMahan et al., ICLR 2018): unweighted clipped updates, exact discrete
  Gaussian noise added by the server to the integer sum, a fixed public denominator, Poisson cohorts drawn from the OS.
* :class:`DistributedDP`: each client adds a discrete Gaussian or Skellam share in the ring before masking
  (Kairouz et al., ICML 2021; Agarwal et al., NeurIPS 2021); fixed-size cohorts drawn from the OS.
"""

from __future__ import annotations

import math
import os
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from .._errors import ConfigurationError
from ..dp import (
    Accountant,
    Adjacency,
    DistributedDPEncoding,
    DistributedPlan,
    DPConfig,
    LocalPrivacy,
    PrivacyLedger,
    PrivacyLevel,
    calibrate,
    calibrate_distributed,
    discrete_gaussian,
    local_noise_multiplier,
    Mechanism,
    plan_distributed,
)
from ..encoding import ClipMode, EncodingConfig, Quantizer
from ..protocols import ProtocolKind

__all__ = ["RoundEncoding", "Release", "RoundPrivacy", "NoPrivacy", "LocalDP", "CentralDP", "DistributedDP",
           "round_privacy", "dp_config_for"]

#: What a round's clients encode with: the quantizer's parameters, or distributed DP's plan and rotation.
RoundEncoding = EncodingConfig | DistributedDPEncoding
T = TypeVar("T")


def _quantized(encoding: RoundEncoding) -> EncodingConfig:
    if not isinstance(encoding, EncodingConfig):
        raise ConfigurationError("this DP level decodes a quantised sum, not a distributed-DP one",
                                 parameter="encoding")
    return encoding


def _mechanism(config: DPConfig) -> Mechanism:
    if config.mechanism is None:  # DPConfig always sets one
        raise ConfigurationError("the DP configuration names no mechanism", parameter="mechanism")
    return config.mechanism


#: The largest noise multiplier a checkpoint may record (beyond it, accounting overflows and means nothing).
_MAX_RECORDED_NOISE = 1e6


def _recorded_rounds(meta: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A checkpoint's privacy rounds, each checked for its fields' types and ranges before any is replayed
    (a ledger is restored whole or not at all). Raises ValueError naming the first bad one."""
    rounds = meta.get("privacy", {}).get("rounds", [])
    if not isinstance(rounds, list):
        raise ValueError("the privacy rounds are not a list")
    for entry in rounds:
        participants = entry.get("participants") if isinstance(entry, dict) else None
        noise, contributors = (entry.get("noise_multiplier"), entry.get("contributors")) \
            if isinstance(entry, dict) else (None, None)
        if not (isinstance(entry, dict) and isinstance(entry.get("round"), int)
                and isinstance(entry.get("refused"), bool) and isinstance(participants, list)
                and all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in participants)
                and isinstance(contributors, int) and 0 <= contributors <= len(participants)
                and isinstance(noise, (int, float)) and math.isfinite(noise) and 0 <= noise <= _MAX_RECORDED_NOISE):
            raise ValueError(f"a privacy round is malformed: {str(entry)[:200]}")
    return rounds


@dataclass(frozen=True)
class Release:
    """What the server releases from one round.

    ``mean`` is the update the model moves by (None: the model stays as it is); ``aborted`` says the round had
    no aggregate (central DP still releases noise then); ``noise`` the noise multiplier actually released (None:
    none was); ``epsilon`` the ledger's total after the round (None without DP).
    """

    mean: np.ndarray | None
    aborted: bool
    reason: str | None = None
    noise: float | None = None
    epsilon: float | None = None


class RoundPrivacy:
    """The interface every DP level offers the pipeline; this base is also :class:`NoPrivacy`.

    ``dimension`` is the model's length; ``clip`` the L2 bound of each update; ``ring_bits`` the ring;
    ``max_weight`` the largest example count a client may report (public: it sizes the ring);
    ``population`` how many clients there are; ``fraction`` the share of them drawn each round; ``dropout``
    the share of a cohort expected to drop (user-level DP plans its denominator and noise shares for it).
    """

    level: PrivacyLevel | None = None
    #: Weighted means carry each client's example count in the vector; user-level DP needs plain sums.
    weighted = True

    def __init__(self, *, dimension: int, clip: float, ring_bits: int, max_weight: int, population: int,
                 fraction: float = 1.0, dropout: float = 0.0, config: DPConfig | None = None) -> None:
        self.dimension = dimension
        self.clip = clip
        self.ring_bits = ring_bits
        self.max_weight = max_weight
        self.population = population
        self.fraction = fraction
        self.dropout = dropout
        self.config = config
        self.ledger: PrivacyLedger | None = None

    # ---- what clients encode with ---------------------------------------------------------------------
    def encoding(self, cohort: int) -> RoundEncoding:
        """The encoding of a round over ``cohort`` clients: the scale leaves room for that many weighted sums."""
        return EncodingConfig.fit_scale(dimension=self.dimension, clients=max(2, cohort), clip=self.clip,
                                        ring_bits=self.ring_bits, clip_mode=ClipMode.L2,
                                        max_weight=self.max_weight if self.weighted else None)

    @property
    def samples_population(self) -> bool:
        """Whether :meth:`sample` must be given the whole population, present or not, because the accounting
        amplifies by a draw from exactly that population (clients that cannot answer then drop out)."""
        return False

    def sample(self, clients: Sequence[T], seed: int, round_index: int) -> list[T]:
        """The round's cohort: ``round(fraction * population)`` clients, reproducible from ``seed``."""
        if not clients:
            return []
        size = max(1, round(self.fraction * len(clients)))
        rng = np.random.default_rng([seed, round_index, 1])  # noqa: csprng-ok (client sampling)
        return [clients[i] for i in sorted(rng.choice(len(clients), size=size, replace=False).tolist())]

    def minimum_survivors(self, cohort: int) -> int | None:
        """The fewest survivors a round of ``cohort`` may unmask (0: no constraint; None: no number will do)."""
        return 0

    def counts_clipping(self) -> bool:
        """Whether how many updates were clipped may be reported (it depends on the data)."""
        return True

    # ---- what the server releases ---------------------------------------------------------------------
    def release(self, round_index: int, encoding: RoundEncoding, ring_sum: np.ndarray,
                survivors: Iterable[int]) -> Release:
        """Decode the survivors' ring sum into the mean update this level releases, and record it."""
        decoded = Quantizer(_quantized(encoding)).decode_sum(ring_sum)
        if not decoded.total_weight:
            return Release(None, True, "the survivors' total weight is zero")
        return Release(decoded.mean(), False)

    def no_aggregate(self, round_index: int, cohort: Iterable[int], reason: str) -> Release:
        """A round that produced no aggregate: the model stays as it is, and the round spends nothing."""
        return Release(None, True, reason, epsilon=self._refused(round_index, cohort))

    def record_local(self, round_index: int, epsilons: Mapping[int, float]) -> float | None:
        """Local DP: record the clients' own epsilons after the round (other levels: nothing to record)."""
        return None

    def _refused(self, round_index: int, cohort: Iterable[int]) -> float | None:
        if self.ledger is None:
            return None
        if self.level is not PrivacyLevel.LOCAL:
            self.ledger.record_refused(round_index, cohort)
        return self.ledger.epsilon

    # ---- records --------------------------------------------------------------------------------------
    def transcript_record(self, noise: float | None, epsilon: float | None = None) -> dict[str, Any] | None:
        """A round's DP record for its transcript (``fedsecure audit``'s dp-accounted check); None without DP."""
        return None

    def fingerprint(self) -> dict[str, Any] | None:
        """What a checkpoint must match to resume under this level (None without DP)."""
        config = self.config
        if config is None:
            return None
        return {"level": config.level.value, "delta": config.delta,
                "mechanism": config.mechanism.value if config.mechanism else None,
                "noise_multiplier": config.noise_multiplier, "target_epsilon": config.target_epsilon,
                "rounds": config.rounds, "bits": config.bits, "beta": config.beta,
                "wrap_probability": config.wrap_probability, "max_grad_norm": config.max_grad_norm,
                "clip": self.clip, "accountant": config.accountant.value if config.accountant else None,
                "adjacency": config.adjacency.value,
                "refuse_over_budget": config.refuse_over_budget, "dropout": self.dropout,
                "local_variance": None, "scale": None}

    def restore(self, meta: Mapping[str, Any]) -> None:
        """Replay a checkpoint's recorded rounds into the ledger, so a resumed run keeps composing."""


class NoPrivacy(RoundPrivacy):
    """No differential privacy: the weighted mean of the survivors' updates."""


class _UserLevel(RoundPrivacy):
    """What central and distributed DP share: unweighted clipped sums over a fixed, public denominator."""

    weighted = False
    ledger: PrivacyLedger

    def __init__(self, *, config: DPConfig, **settings: Any) -> None:
        super().__init__(config=config, **settings)
        self.dp = config
        config.check_population(self.population)
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise ConfigurationError("user-level DP needs every update clipped: set a finite `clip`",
                                     parameter="clip")

    def encoding(self, cohort: int) -> RoundEncoding:
        # One scale for every round, whatever the cohort, so the sensitivity bound holds.
        return EncodingConfig.fit_scale(dimension=self.dimension, clients=max(2, self.population), clip=self.clip,
                                        ring_bits=self.ring_bits, clip_mode=ClipMode.L2)

    def counts_clipping(self) -> bool:
        return False

    @property
    def denominator(self) -> float:
        """What the noised sum is divided by: the expected number of contributors, fixed and public (McMahan et
        al.'s fixed-denominator estimator), so the released model does not reveal how many there were."""
        return max(1.0, self.fraction * self.population * (1 - self.dropout))

    def _record(self, round_index: int, survivors: Iterable[int], noise: float) -> float:
        members = sorted(survivors)
        return self.ledger.record(round_index, members, contributors=len(members), noise_multiplier=noise).epsilon

    def _over_budget(self, noise: float, contributors: int) -> bool:
        config = self.dp
        return (config.refuse_over_budget and config.target_epsilon is not None
                and self.ledger.preview(noise, contributors) > config.target_epsilon)

    def _base_record(self, noise: float | None, epsilon: float | None, mechanism: str) -> dict[str, Any]:
        config = self.dp
        return {"level": config.level.value, "mechanism": mechanism, "noise_multiplier": noise,
                "adjacency": config.adjacency_name, "accountant": self.ledger.accountant_name,
                "sample_rate": self.ledger.sample_rate,
                "epsilon": epsilon if epsilon is not None else self.ledger.epsilon,
                "target_epsilon": config.target_epsilon, "delta": config.delta}

    def restore(self, meta: Mapping[str, Any]) -> None:
        for entry in _recorded_rounds(meta):
            if entry["refused"]:
                self.ledger.record_refused(entry["round"], entry["participants"])
            else:
                self.ledger.record(entry["round"], entry["participants"], contributors=entry["contributors"],
                                   noise_multiplier=entry["noise_multiplier"])


class CentralDP(_UserLevel):
    """User-level central DP: the server adds discrete Gaussian noise to the integer sum of clipped, unweighted updates.

    Threat model: the server sees the exact sum before it adds noise; the guarantee holds against everyone who
    sees only the released model. Cohorts are Poisson samples drawn from the OS, which amplification by sampling
    assumes; the ledger counts rounds at ``fraction``.
    """

    level = PrivacyLevel.CENTRAL

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        config = self.dp
        factor = config.adjacency.sensitivity_factor
        if factor > 1 and self.fraction < 1:
            raise ConfigurationError("replace-one adjacency is accounted for central DP without sampling only: use "
                                     "fraction 1, or zero-out adjacency (add/remove of one client)",
                                     parameter="adjacency")
        self.ledger = PrivacyLedger(config, sample_rate=self.fraction)
        if config.noise_multiplier is not None:
            self.noise_multiplier = config.noise_multiplier
        else:
            rounds, target, ledger = config.rounds or 1, config.target_epsilon or 0.0, self.ledger
            self.noise_multiplier = calibrate(lambda z: ledger.planned_epsilon(z, rounds), target, high=1e3).noise

    def sample(self, clients: Sequence[T], seed: int, round_index: int) -> list[T]:
        # Each client joins independently with probability `fraction` (Poisson sampling, from the OS): a cohort
        # may even be empty, and it is not reproducible from the seed.
        draw = secrets.SystemRandom()
        return [c for c in clients if draw.random() < self.fraction]

    def integer_sensitivity(self, size: int) -> float:
        """The L2 sensitivity of the integer sum, in ring units: a clipped update scaled by the encoding's scale
        and rounded stochastically is at most clip * scale + sqrt(d) long (DDGauss, Theorem 1)."""
        return self.clip * _quantized(self.encoding(self.population)).scale + math.sqrt(size)

    def sensitivity(self, size: int) -> float:
        """The same sensitivity in the model's units (the integer one divided by the scale)."""
        return self.integer_sensitivity(size) / _quantized(self.encoding(self.population)).scale

    def integer_noise(self, size: int) -> np.ndarray:
        """Exact discrete Gaussian noise for an integer sum of ``size`` values (CKS 2020, from the OS's randomness).

        Its variance is (noise multiplier x integer sensitivity)^2 rounded up to an integer, so the noise is never
        below what the accounting assumes. The discrete Gaussian's Rényi divergence between shifts by an integer
        vector of L2 norm D is at most alpha D^2 / (2 sigma^2), the continuous Gaussian's (Canonne, Kamath, Steinke
        2020, Proposition 5); it is sampled with integer arithmetic alone, so no floating-point artefact of the
        noise can reveal the sum (Mironov 2012), and its tails are not truncated.
        """
        variance = math.ceil((self.noise_multiplier * self.integer_sensitivity(size)) ** 2)
        drawn: np.ndarray = discrete_gaussian(variance, size)
        # Beyond the vectorised range the draws are Python integers (an object array), kept exact: int64 could
        # overflow.
        return drawn if drawn.dtype == object else drawn.astype(np.int64)

    def noise(self, size: int) -> np.ndarray:
        """One draw of the noise added to a sum of ``size`` values, in the model's units."""
        scaled: np.ndarray = self.integer_noise(size).astype(np.float64) / _quantized(
            self.encoding(self.population)).scale
        return scaled

    def release(self, round_index: int, encoding: RoundEncoding, ring_sum: np.ndarray,
                survivors: Iterable[int]) -> Release:
        members = sorted(survivors)
        if self._over_budget(self.noise_multiplier, len(members)):
            # Refused: no noise is released and the round spends nothing.
            return Release(None, True, "this round would take epsilon above the budget",
                           epsilon=self._refused(round_index, members))
        quantized = _quantized(encoding)
        # The noise is added to the integer aggregate itself, outside the ring (so it cannot wrap), before the one
        # division that turns it into floats.
        signed = quantized.ring.to_signed(np.asarray(ring_sum)).astype(np.int64)
        noise = self.integer_noise(signed.size)
        if noise.dtype == object or quantized.ring.bits >= 62:
            # Wide rings: the sum plus the noise may leave int64, so it is formed in Python integers and rounded
            # to float once, a function of the noised integer alone.
            noised = np.array([float(int(a) + int(b)) for a, b in zip(signed.tolist(), noise.tolist())])
        else:
            noised = (signed + noise).astype(np.float64)
        mean = noised / quantized.scale / self.denominator
        return Release(mean, False, noise=self.noise_multiplier,
                       epsilon=self._record(round_index, members, self.noise_multiplier))

    def no_aggregate(self, round_index: int, cohort: Iterable[int], reason: str) -> Release:
        # With Poisson cohorts a round that cannot aggregate (an empty or tiny cohort, an aborted protocol) still
        # releases noise, so that whether anything is released never depends on who was sampled; it is
        # accounted as any other round. Without sampling (fraction 1) no amplification is claimed, and such a
        # round releases nothing and spends nothing.
        if self.fraction >= 1:
            return super().no_aggregate(round_index, cohort, reason)
        return Release(self.noise(self.dimension) / self.denominator, True, reason, noise=self.noise_multiplier,
                       epsilon=self._record(round_index, [], self.noise_multiplier))

    def transcript_record(self, noise: float | None, epsilon: float | None = None) -> dict[str, Any] | None:
        return self._base_record(noise, epsilon, "gaussian")


class DistributedDP(_UserLevel):
    """User-level distributed DP: each client adds a noise share in the ring; only the noised total is unmasked.

    The noise is planned (and, from a target epsilon, calibrated) for the expected number of shares, a cohort of
    ``round(fraction * population)`` less ``dropout``; the ledger records each round's actual noise, that of the
    survivors' shares. With ``refuse_over_budget`` the threshold is raised so that clients never unmask a sum
    with too few shares. Cohorts have a fixed size and are drawn uniformly without replacement from the OS.

    Two guarantees follow. Against the server, which knows every cohort, no amplification holds: each client's
    epsilon over the rounds it joined (the ledger's ``epsilon_without_amplification``). Against whoever sees
    only the released models, the cohort is hidden and amplification by sampling without replacement holds (the
    ledger's ``epsilon``, what a target epsilon calibrates, as under central DP).
    """

    level = PrivacyLevel.DISTRIBUTED

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        config = self.dp
        mechanism = _mechanism(config)
        # Cohorts have exactly this size (see `sample`), so the ring needs room for this many noised inputs.
        self.cohort = max(1, round(self.fraction * self.population))
        self.expected = max(1, round(self.cohort * (1 - self.dropout)))

        def plan_for(z: float) -> DistributedPlan:
            return plan_distributed(mechanism=mechanism, dimension=self.dimension, clip=self.clip, bits=config.bits,
                                    expected_clients=self.expected, max_clients=self.cohort, noise_multiplier=z,
                                    beta=config.beta, wrap_probability=config.wrap_probability)

        if config.noise_multiplier is not None:
            self.plan = plan_for(config.noise_multiplier)
        else:
            rounds, target = config.rounds or 1, config.target_epsilon or 0.0
            self.plan = calibrate_distributed(
                plan_for, lambda plan: plan.epsilon(survivors=self.expected, rounds=rounds, delta=config.delta,
                                                    adjacency=config.adjacency, sample_rate=self.sample_rate),
                target)
        self.ledger = PrivacyLedger(config, sample_rate=self.sample_rate, plan=self.plan)

    @property
    def sample_rate(self) -> float:
        """The cohort's share of the population: the without-replacement sampling rate amplification uses."""
        return min(1.0, self.cohort / self.population)

    @property
    def samples_population(self) -> bool:
        return self.sample_rate < 1

    def encoding(self, cohort: int) -> RoundEncoding:
        # A fresh public rotation every round; the plan was calibrated once for the whole run.
        return self.plan.encoding(os.urandom(32))

    def sample(self, clients: Sequence[T], seed: int, round_index: int) -> list[T]:
        # Exactly `cohort` clients, uniformly without replacement from the OS: the cohort must be unpredictable,
        # and amplification is accounted for exactly this size out of exactly this population. Without sampling
        # (fraction 1, as over Flower, where the strategy picks the clients) every client given takes part.
        if self.sample_rate >= 1:
            return list(clients)
        if len(clients) != self.population:
            raise ConfigurationError(f"distributed DP was planned for {self.population} clients, not {len(clients)}",
                                     parameter="population")
        chosen = set(secrets.SystemRandom().sample(range(len(clients)), self.cohort))
        return [client for index, client in enumerate(clients) if index in chosen]

    def minimum_survivors(self, cohort: int) -> int | None:
        config, ledger = self.dp, self.ledger
        if not config.refuse_over_budget or config.target_epsilon is None:
            return 0
        target = config.target_epsilon

        def within(survivors: int) -> bool:
            return ledger.preview(self.plan.noise_multiplier_for(survivors), survivors) <= target

        if not within(cohort):
            return None
        low, high = 0, cohort  # within(high) holds; epsilon only falls as survivors (noise shares) grow
        while high - low > 1:
            middle = (low + high) // 2
            if within(middle):
                high = middle
            else:
                low = middle
        return high

    def release(self, round_index: int, encoding: RoundEncoding, ring_sum: np.ndarray,
                survivors: Iterable[int]) -> Release:
        if not isinstance(encoding, DistributedDPEncoding):
            raise ConfigurationError("distributed DP decodes a distributed-DP sum", parameter="encoding")
        members = sorted(survivors)
        # The noise actually in the sum is that of the survivors' shares, not the planned amount.
        noise = self.plan.noise_multiplier_for(len(members))
        mean = encoding.decode_sum(ring_sum) / self.denominator
        return Release(mean, False, noise=noise, epsilon=self._record(round_index, members, noise))

    def transcript_record(self, noise: float | None, epsilon: float | None = None) -> dict[str, Any] | None:
        config, plan = self.dp, self.plan
        return self._base_record(noise, epsilon, _mechanism(config).value) | {
            "bits": plan.bits, "scale": plan.scale, "local_variance": plan.local_variance,
            "wrap_bound": plan.wrap_bound, "wrap_probability": config.wrap_probability,
            # The whole public plan, so an auditor can recompute each round's privacy loss.
            "plan": plan.to_json()}

    def fingerprint(self) -> dict[str, Any] | None:
        return (super().fingerprint() or {}) | {"local_variance": self.plan.local_variance, "scale": self.plan.scale}


class LocalDP(RoundPrivacy):
    """Record-level local DP: each client trains with DP-SGD (Opacus) and accounts for itself.

    The aggregate is the weighted mean, as without DP. In one process :attr:`local` holds every client's Opacus
    accountant; over Flower each client keeps its own and reports its epsilon, which :meth:`record_local` records.
    """

    level = PrivacyLevel.LOCAL
    ledger: PrivacyLedger

    def __init__(self, *, config: DPConfig, min_examples: int = 1, **settings: Any) -> None:
        super().__init__(config=config, **settings)
        self.dp = config
        config.check_population(min_examples)
        if config.noise_multiplier is None:
            raise ConfigurationError("local DP takes a noise_multiplier (fedsecure.dp.local_noise_multiplier "
                                     "calibrates one for a target epsilon)", parameter="noise_multiplier")
        self.noise_multiplier = config.noise_multiplier
        self.ledger = PrivacyLedger(config, sample_rate=self.fraction)
        self.local = LocalPrivacy(noise_multiplier=config.noise_multiplier, max_grad_norm=config.max_grad_norm,
                                  accountant=self.ledger.accountant)

    def record_local(self, round_index: int, epsilons: Mapping[int, float]) -> float | None:
        # Every client that trained spent record-level privacy, whatever happened to the round.
        if epsilons:
            self.ledger.record_local(round_index, sorted(epsilons), epsilons, self.noise_multiplier)
        return self.ledger.epsilon

    def epsilons(self, clients: Iterable[int]) -> dict[int, float]:
        """The in-process clients' epsilons so far, from their own accountants."""
        return {client: self.local.epsilon(client, self.dp.delta) for client in clients}

    def transcript_record(self, noise: float | None, epsilon: float | None = None) -> dict[str, Any] | None:
        config = self.dp
        return {"level": "local", "mechanism": "gaussian (DP-SGD, per client)",
                "adjacency": config.adjacency_name, "accountant": self.ledger.accountant_name,
                "noise_multiplier": self.noise_multiplier,
                "epsilon": epsilon if epsilon is not None else self.ledger.epsilon,
                "target_epsilon": config.target_epsilon, "delta": config.delta}

    def restore(self, meta: Mapping[str, Any]) -> None:
        rounds = _recorded_rounds(meta)
        self.local.load_state({int(c): h for c, h in meta.get("local_accountants", {}).items()})
        for entry in rounds:
            if entry["refused"]:
                self.ledger.record_refused(entry["round"], entry["participants"])
            else:
                epsilons = self.epsilons(entry["participants"])
                self.ledger.record_local(entry["round"], entry["participants"], epsilons, entry["noise_multiplier"])

    def state(self) -> dict[str, Any]:
        """The clients' accountant histories, for a checkpoint."""
        return {str(c): h for c, h in self.local.state().items()}


def round_privacy(config: DPConfig | None, *, protocol: ProtocolKind, dimension: int, clip: float,
                  ring_bits: int, max_weight: int, population: int, fraction: float = 1.0, dropout: float = 0.0,
                  min_examples: int = 1) -> RoundPrivacy:
    """The level object for ``config`` (None: :class:`NoPrivacy`), set up and calibrated once for a run.

    ``protocol`` is checked against the level: distributed DP's noise lives in the SecAgg ring, and its
    ``refuse_over_budget`` needs SecAgg's complete graph. ``min_examples`` is the smallest client's example count
    (local DP checks delta against it).
    """
    if config is not None and config.level is PrivacyLevel.DISTRIBUTED:
        if protocol not in (ProtocolKind.SECAGG, ProtocolKind.SECAGG_PLUS):
            raise ConfigurationError("distributed DP adds noise in the SecAgg ring: use secagg or secagg+",
                                     parameter="protocol")
        if config.refuse_over_budget and protocol is not ProtocolKind.SECAGG:
            raise ConfigurationError("refuse_over_budget raises the unmasking threshold, which only the complete "
                                     "graph of secagg turns into a count of all survivors", parameter="protocol")
    settings: dict[str, Any] = dict(dimension=dimension, clip=clip, ring_bits=ring_bits, max_weight=max_weight,
                                    population=population, fraction=fraction, dropout=dropout, config=config)
    if config is None:
        return NoPrivacy(**settings)
    if config.level is PrivacyLevel.LOCAL:
        return LocalDP(min_examples=min_examples, **settings)
    if config.level is PrivacyLevel.CENTRAL:
        return CentralDP(**settings)
    return DistributedDP(**settings)


def dp_config_for(experiment: Any, *, level: Any, epsilon: float, delta: float, rounds: int,
                  mechanism: Any = None, bits: int = 20, max_grad_norm: float = 1.0,
                  name: str = "this", adjacency: Any = Adjacency.ZERO_OUT) -> Any:
    """The :class:`~fedsecure.dp.DPConfig` spending (``epsilon``, ``delta``) over ``rounds`` rounds of ``experiment``
    (an object with a ``federation`` and, for local DP, ``local_epochs``: :class:`fedsecure.fl.examples.Experiment`).

    Central and distributed DP are calibrated by the federation itself. Local
    DP-SGD is calibrated here for every client (its own sampling rate and step
    count) and the largest noise multiplier is used, so that every client stays
    within the target.
    """
    if level is not PrivacyLevel.LOCAL:
        return DPConfig(level=level, delta=delta, target_epsilon=epsilon, rounds=rounds, mechanism=mechanism,
                        bits=bits, adjacency=adjacency)
    if experiment.local_epochs is None:
        raise ConfigurationError(f"the {name} example does not train with DP-SGD; use central or distributed DP",
                                 parameter="dp")
    noise = 0.0
    # Clients with the same number of batches need the same noise: calibrate once for each number.
    for batches in sorted({len(client.data) for client in experiment.federation.clients}):
        # Opacus' Poisson loader samples each example with probability 1 / (batches per epoch).
        noise = max(noise, local_noise_multiplier(target_epsilon=epsilon, delta=delta, sample_rate=1.0 / batches,
                                                  steps=rounds * experiment.local_epochs * batches,
                                                  accountant=Accountant.PRV))
    return DPConfig(level=level, delta=delta, noise_multiplier=noise, max_grad_norm=max_grad_norm)
