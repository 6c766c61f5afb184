"""The privacy ledger: what each round spent, for the population and for each client.

Two views are kept, because they answer different questions:

* ``epsilon`` (population): the guarantee for any client over the whole run,
  composed over rounds with the round's *actual* noise (under distributed DP the
  noise of the survivors who actually contributed, never the planned amount).
  It includes amplification by sampling of the cohort at ``sample_rate``: Poisson
  sampling under central DP, a fixed-size cohort drawn without replacement under
  distributed DP (there, never more than the same rounds without amplification,
  which bound it too). That holds only against observers who do not learn who
  was sampled: the server knows, and so does anyone who reads this ledger.
* ``epsilon_without_amplification``: the largest per-client epsilon, the
  guarantee against an observer of the released models who also knows every
  cohort. Under distributed DP that includes the server. Under central DP the
  server sees the exact sum before it adds noise, so nothing holds against it.
* ``client_epsilon`` (per client): the loss of one client composed over the
  rounds it took part in, without amplification (a client that sat out a round
  spends nothing in it). For local DP it is the client's own Opacus accountant.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ._accounting import (
    GAUSSIAN_ORDERS,
    INTEGER_ORDERS,
    Accountant,
    Mechanism,
    gaussian_rdp,
    rdp_to_epsilon,
    subsampled_rdp,
)
from ._config import DPConfig, PrivacyLevel
from ._distributed import DistributedPlan, distributed_orders

__all__ = ["PrivacyLedger", "LedgerEntry", "central_rdp"]


def central_rdp(noise_multiplier: float, sample_rate: float, orders: tuple[float, ...]) -> np.ndarray:
    """RDP of one round of central DP's discrete Gaussian at ``orders``.

    The discrete Gaussian's Rényi divergence between integer shifts of L2 norm D is at most alpha D^2 / (2 sigma^2)
    (Canonne, Kamath, Steinke 2020), the continuous Gaussian's, so without sampling it is accounted as the
    Gaussian. With Poisson sampling at ``sample_rate`` below 1 the continuous Gaussian's tight analysis does not
    carry over, and the general Poisson-subsampling bound of Zhu and Wang (ICML 2019), at integer orders, is used.
    """
    if sample_rate >= 1:
        return gaussian_rdp(noise_multiplier, 1.0, 1, orders)
    return np.array([subsampled_rdp(int(order), sample_rate, lambda j: j / (2 * noise_multiplier**2))
                     for order in orders])


@dataclass
class LedgerEntry:
    """One round as the ledger saw it."""

    round: int
    participants: list[int]
    contributors: int
    noise_multiplier: float
    epsilon_round: float
    epsilon: float
    refused: bool = False


@dataclass
class PrivacyLedger:
    """Per-round and cumulative epsilon, population-wide and per client, at ``delta``."""

    config: DPConfig
    sample_rate: float
    plan: DistributedPlan | None = None
    entries: list[LedgerEntry] = field(default_factory=list)
    _population_rdp: np.ndarray | None = field(default=None, repr=False)
    _unamplified_rdp: np.ndarray | None = field(default=None, repr=False)
    _client_rdp: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    _prv_history: list[tuple[float, float, int]] = field(default_factory=list, repr=False)
    _local_epsilon: dict[int, float] = field(default_factory=dict, repr=False)

    @property
    def orders(self) -> tuple[float, ...]:
        """The Rényi orders of the population's curve."""
        mechanism = self.config.mechanism or Mechanism.GAUSSIAN
        if mechanism is not Mechanism.GAUSSIAN:
            return self.plan.orders_for(self.sample_rate) if self.plan is not None else distributed_orders(mechanism)
        if self.config.level is PrivacyLevel.CENTRAL and self.sample_rate < 1:
            return tuple(float(a) for a in INTEGER_ORDERS)  # the general subsampling bound needs integer orders
        return GAUSSIAN_ORDERS

    @property
    def client_orders(self) -> tuple[float, ...]:
        """The Rényi orders of each client's curve (no amplification)."""
        if self.config.level is PrivacyLevel.DISTRIBUTED and self.plan is not None:
            return self.plan.orders
        return self.orders

    def planned_epsilon(self, noise_multiplier: float, rounds: int) -> float:
        """Epsilon after ``rounds`` rounds at this noise multiplier (central DP's calibration)."""
        return self._epsilon(rounds * self._round_rdp(noise_multiplier, 0, self.sample_rate))

    @property
    def accountant(self) -> Accountant:
        """How the Gaussian's epsilon is computed (the configuration's choice, or its level's default)."""
        return self.config.accountant or Accountant.RDP

    def _round_rdp(self, noise_multiplier: float, contributors: int, sample_rate: float) -> np.ndarray:
        if self.config.level is PrivacyLevel.DISTRIBUTED:
            if self.plan is None:
                raise ValueError("distributed DP needs its plan")
            # Fixed-size cohorts drawn without replacement (at 1: no amplification).
            return self.plan.rdp(contributors, adjacency=self.config.adjacency, sample_rate=sample_rate)
        # Central DP: a noise multiplier is relative to one clipped update; replace-one doubles the sensitivity.
        effective = self._effective(noise_multiplier)
        if self.config.level is PrivacyLevel.CENTRAL:
            return central_rdp(effective, sample_rate, self.orders)
        return gaussian_rdp(effective, sample_rate, 1)

    def _epsilon(self, rdp: np.ndarray) -> float:
        return rdp_to_epsilon(self.orders, rdp, self.config.delta)

    def _population_epsilon(self, rdp: np.ndarray, unamplified: np.ndarray) -> float:
        # Under distributed DP both the amplified composition and the composition of every round without
        # amplification bound the population's epsilon; at small rates and many rounds Theorem 9's integer orders
        # can lose to the latter's real ones, so the smaller holds.
        epsilon = self._epsilon(rdp)
        if self.config.level is PrivacyLevel.DISTRIBUTED and self.sample_rate < 1:
            epsilon = min(epsilon, rdp_to_epsilon(self.client_orders, unamplified, self.config.delta))
        return epsilon

    def preview(self, noise_multiplier: float, contributors: int) -> float:
        """The population epsilon if one more round with this noise and these contributors were recorded."""
        rdp = self._round_rdp(noise_multiplier, contributors, self.sample_rate)
        total = rdp if self._population_rdp is None else self._population_rdp + rdp
        if self.config.mechanism is Mechanism.GAUSSIAN and self.accountant is Accountant.PRV:
            return _prv_epsilon([*self._prv_history, (self._effective(noise_multiplier), self.sample_rate, 1)],
                                self.config.delta)
        alone = self._round_rdp(noise_multiplier, contributors, 1.0)
        return self._population_epsilon(total, alone if self._unamplified_rdp is None else self._unamplified_rdp + alone)

    def record(self, round_index: int, participants: Iterable[int], *, contributors: int,
               noise_multiplier: float) -> LedgerEntry:
        """Record a round in which ``contributors`` inputs were aggregated with the given actual noise."""
        members = sorted(participants)
        rdp = self._round_rdp(noise_multiplier, contributors, self.sample_rate)
        self._population_rdp = rdp if self._population_rdp is None else self._population_rdp + rdp
        self._prv_history.append((self._effective(noise_multiplier), self.sample_rate, 1))
        alone = self._round_rdp(noise_multiplier, contributors, 1.0)
        self._unamplified_rdp = alone if self._unamplified_rdp is None else self._unamplified_rdp + alone
        for client in members:
            self._client_rdp[client] = self._client_rdp.get(client, 0) + alone
        entry = LedgerEntry(round=round_index, participants=members, contributors=contributors,
                            noise_multiplier=noise_multiplier,
                            epsilon_round=rdp_to_epsilon(self.client_orders, alone, self.config.delta),
                            epsilon=self.epsilon)
        self.entries.append(entry)
        return entry

    def record_refused(self, round_index: int, participants: Iterable[int]) -> LedgerEntry:
        """A round that released nothing (refused over budget, or aborted): it spends nothing."""
        entry = LedgerEntry(round=round_index, participants=sorted(participants), contributors=0,
                            noise_multiplier=0.0, epsilon_round=0.0, epsilon=self.epsilon, refused=True)
        self.entries.append(entry)
        return entry

    def record_local(self, round_index: int, participants: Iterable[int], epsilons: Mapping[int, float],
                     noise_multiplier: float) -> LedgerEntry:
        """Local DP: each participant's cumulative epsilon from its own Opacus accountant."""
        self._local_epsilon.update(epsilons)
        entry = LedgerEntry(round=round_index, participants=sorted(participants), contributors=len(epsilons),
                            noise_multiplier=noise_multiplier, epsilon_round=float("nan"), epsilon=self.epsilon)
        self.entries.append(entry)
        return entry

    def _effective(self, noise_multiplier: float) -> float:
        return noise_multiplier / self.config.adjacency.sensitivity_factor

    @property
    def epsilon(self) -> float:
        """The population-wide epsilon so far (local DP: the largest client epsilon)."""
        if self.config.level is PrivacyLevel.LOCAL:
            return max(self._local_epsilon.values(), default=0.0)
        if self._population_rdp is None or self._unamplified_rdp is None:
            return 0.0
        if self.config.mechanism is Mechanism.GAUSSIAN and self.accountant is Accountant.PRV:
            return _prv_epsilon(self._prv_history, self.config.delta)
        return self._population_epsilon(self._population_rdp, self._unamplified_rdp)

    @property
    def epsilon_without_amplification(self) -> float:
        """The largest per-client epsilon: what holds even against an observer who knows the cohorts."""
        clients = set(self._client_rdp) | set(self._local_epsilon)
        return max((self.client_epsilon(c) for c in clients), default=0.0)

    def client_epsilon(self, client: int) -> float:
        """One client's epsilon over the rounds it took part in (0 if it never did)."""
        if self.config.level is PrivacyLevel.LOCAL:
            return self._local_epsilon.get(client, 0.0)
        rdp = self._client_rdp.get(client)
        return 0.0 if rdp is None else rdp_to_epsilon(self.client_orders, rdp, self.config.delta)

    @property
    def accountant_name(self) -> str:
        """The accountant as outputs print it: Opacus' PRV or RDP, or the distributed mechanism's Rényi bound."""
        if self.config.level is PrivacyLevel.DISTRIBUTED:
            mechanism = (self.config.mechanism or Mechanism.DDGAUSS).value
            if self.sample_rate < 1:
                return f"rdp ({mechanism} bound, amplified by sampling without replacement)"
            return f"rdp ({mechanism} bound, no amplification)"
        if self.config.level is PrivacyLevel.LOCAL:
            return f"opacus {self.accountant.value} (per client)"
        return self.accountant.value

    def to_json(self) -> dict[str, Any]:
        clients = sorted(set(self._client_rdp) | set(self._local_epsilon))
        plan = None if self.plan is None else {
            "bits": self.plan.bits, "scale": self.plan.scale, "local_variance": self.plan.local_variance,
            "noise_multiplier": self.plan.noise_multiplier, "expected_clients": self.plan.expected_clients,
            "l2_sensitivity": self.plan.l2_sensitivity, "wrap_probability_bound": self.plan.wrap_bound}
        return {"distributed_plan": plan, "level": self.config.level.value,
                "mechanism": (self.config.mechanism or Mechanism.GAUSSIAN).value,
                "adjacency": self.config.adjacency_name, "accountant": self.accountant_name,
                "delta": self.config.delta,
                "sample_rate": self.sample_rate, "epsilon": self.epsilon,
                "epsilon_without_amplification": self.epsilon_without_amplification,
                "client_epsilon": {str(c): self.client_epsilon(c) for c in clients},
                "rounds": [asdict(e) for e in self.entries]}


def _prv_epsilon(history: list[tuple[float, float, int]], delta: float) -> float:
    from opacus.accountants import PRVAccountant

    accountant = PRVAccountant()
    accountant.history = list(history)
    return float(accountant.get_epsilon(delta))
