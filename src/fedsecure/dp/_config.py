"""Which differential privacy a federation runs, validated before any round.

Three levels (what each protects is in SECURITY.md):

* ``LOCAL``: record-level DP-SGD inside each client's training, through Opacus'
  ``PrivacyEngine``; each client's epsilon comes from its own Opacus accountant.
* ``CENTRAL``: user-level DP-FedAvg (McMahan et al., ICLR 2018): updates clipped to
  L2 norm C, Gaussian noise of standard deviation ``noise_multiplier`` times the
  sensitivity added to the decoded sum by the aggregator.
* ``DISTRIBUTED``: each client adds discrete Gaussian or Skellam noise in the ring
  before SecAgg masking; only the noised total is ever unmasked.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from .._errors import ConfigurationError
from ._accounting import Accountant, Mechanism
from ._distributed import DEFAULT_BETA, DEFAULT_WRAP_PROBABILITY

__all__ = ["Adjacency", "PrivacyLevel", "DPConfig"]


class PrivacyLevel(enum.Enum):
    LOCAL = "local"
    CENTRAL = "central"
    DISTRIBUTED = "distributed"


class Adjacency(enum.Enum):
    """Which two runs count as neighbours: whose privacy epsilon bounds, against what change.

    * ``ZERO_OUT``: one client's update is replaced by the zero update while everything else, its noise share
      included, stays (dp-accounting's ``NeighboringRelation.REPLACE_SPECIAL``; Kairouz et al., ICML 2021, DP-FTRL
      Definition 1.1). It fits distributed DP, where a client's absence would also remove its noise share. It is
      sound here because a zeroed client still adds its full share, a zero update encodes to exactly zero, and
      cohorts and dropouts do not depend on the data. Under central DP it equals add/remove of one client.
    * ``REPLACE_ONE``: one client's update is replaced by any other: twice the sensitivity, so about four times
      the Rényi divergence at the same noise.

    Local DP-SGD is always accounted by Opacus for adding or removing one example (record level).
    """

    ZERO_OUT = "zero-out"
    REPLACE_ONE = "replace-one"

    @property
    def sensitivity_factor(self) -> int:
        """How many clipped updates apart the two neighbouring sums can be."""
        return 2 if self is Adjacency.REPLACE_ONE else 1


#: How outputs name local DP's adjacency, which Opacus' accountants fix.
LOCAL_ADJACENCY = "add/remove one example"


@dataclass(frozen=True)
class DPConfig:
    """Differential privacy for a :class:`~fedsecure.fl.Federation`.

    Give either ``noise_multiplier`` or ``target_epsilon`` with ``rounds`` (the
    horizon the budget is for; the noise is then calibrated so that the
    *planned* epsilon after ``rounds`` rounds, with the expected number of
    contributors, never exceeds the target). Under distributed DP, rounds with
    fewer survivors than expected carry less noise: the ledger records their
    actual epsilon, which can then end above the target unless
    ``refuse_over_budget`` is set. ``mechanism`` defaults to
    the Gaussian for local and central DP and to the distributed discrete
    Gaussian for distributed DP. ``bits`` is the ring size for distributed DP.
    ``max_grad_norm`` is the per-example clip of local DP-SGD. ``adjacency`` is the
    neighbouring relation central and distributed DP are accounted under (zero-out
    by default; see :class:`Adjacency`). ``accountant`` (None: the level's default)
    is how a Gaussian's epsilon is computed: Opacus' PRV accountant for local
    DP-SGD, as Opacus itself defaults to, and RDP otherwise. With
    ``refuse_over_budget`` a round whose actual epsilon would take the total
    above ``target_epsilon`` does not happen: under distributed DP the SecAgg
    threshold is raised so that clients refuse to unmask too few noise shares;
    under central DP the aggregator discards the round.
    """

    level: PrivacyLevel
    delta: float
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    rounds: int | None = None
    mechanism: Mechanism | None = None
    accountant: Accountant | None = None
    bits: int = 20
    beta: float = DEFAULT_BETA
    wrap_probability: float = DEFAULT_WRAP_PROBABILITY
    max_grad_norm: float = 1.0
    refuse_over_budget: bool = False
    adjacency: Adjacency = Adjacency.ZERO_OUT

    def __post_init__(self) -> None:
        if not isinstance(self.level, PrivacyLevel):
            try:
                object.__setattr__(self, "level", PrivacyLevel(self.level))  # "central" as well as the enum
            except ValueError:
                raise ConfigurationError(f"level must be one of {', '.join(p.value for p in PrivacyLevel)}, got "
                                         f"{self.level!r}", parameter="level") from None
        try:
            object.__setattr__(self, "adjacency", Adjacency(self.adjacency))
        except ValueError:
            raise ConfigurationError(f"adjacency must be one of {', '.join(a.value for a in Adjacency)}, got "
                                     f"{self.adjacency!r}", parameter="adjacency") from None
        if self.level is PrivacyLevel.LOCAL and self.adjacency is not Adjacency.ZERO_OUT:
            raise ConfigurationError("local DP-SGD is accounted by Opacus for adding or removing one example; "
                                     "it takes no adjacency", parameter="adjacency")
        accountant = self.accountant if self.accountant is not None else (
            Accountant.PRV if self.level is PrivacyLevel.LOCAL else Accountant.RDP)
        object.__setattr__(self, "accountant", Accountant(accountant))
        if not 0 < self.delta < 1:
            raise ConfigurationError("delta must lie in (0, 1)", parameter="delta")
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ConfigurationError("give exactly one of noise_multiplier and target_epsilon",
                                     parameter="noise_multiplier")
        if self.noise_multiplier is not None and not (math.isfinite(self.noise_multiplier)
                                                      and self.noise_multiplier > 0):
            raise ConfigurationError(
                f"noise_multiplier {self.noise_multiplier} gives no privacy (epsilon is infinite); use a positive "
                "noise multiplier or a target epsilon", parameter="noise_multiplier")
        if self.target_epsilon is not None:
            if not (math.isfinite(self.target_epsilon) and self.target_epsilon > 0):
                raise ConfigurationError("target_epsilon must be positive and finite", parameter="target_epsilon")
            if self.rounds is None or self.rounds < 1:
                raise ConfigurationError("a target epsilon needs the number of rounds it must last",
                                         parameter="rounds")
        if self.refuse_over_budget and self.target_epsilon is None:
            raise ConfigurationError("refuse_over_budget needs a target_epsilon (the budget)",
                                     parameter="refuse_over_budget")
        mechanism = self.mechanism or (Mechanism.DDGAUSS if self.level is PrivacyLevel.DISTRIBUTED
                                       else Mechanism.GAUSSIAN)
        if (self.level is PrivacyLevel.DISTRIBUTED) == (mechanism is Mechanism.GAUSSIAN):
            raise ConfigurationError(
                f"{self.level.value} DP uses " + ("ddgauss or skellam" if self.level is PrivacyLevel.DISTRIBUTED
                                                  else "the gaussian mechanism"), parameter="mechanism")
        object.__setattr__(self, "mechanism", mechanism)
        if self.level is not PrivacyLevel.LOCAL and self.accountant is Accountant.PRV:
            raise ConfigurationError(f"{self.level.value} DP adds discrete noise, accounted with Rényi bounds; the "
                                     "PRV accountant is for local DP-SGD's continuous Gaussian",
                                     parameter="accountant")
        if self.level is PrivacyLevel.LOCAL and not (math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0):
            raise ConfigurationError("DP-SGD without per-example clipping has no bounded sensitivity: set a "
                                     "finite max_grad_norm", parameter="max_grad_norm")
        if not 0 <= self.beta < 1:
            raise ConfigurationError("beta must lie in [0, 1)", parameter="beta")
        if not isinstance(self.bits, int) or not 2 <= self.bits <= 62:
            raise ConfigurationError("bits must be an integer in [2, 62]", parameter="bits")
        if not 0 < self.wrap_probability < 1:
            raise ConfigurationError("wrap_probability must lie in (0, 1)", parameter="wrap_probability")

    @property
    def adjacency_name(self) -> str:
        """The neighbouring relation this level is accounted under, as outputs print it."""
        return LOCAL_ADJACENCY if self.level is PrivacyLevel.LOCAL else self.adjacency.value

    def check_population(self, population: int) -> None:
        """Refuse a delta that would allow leaking one client's data outright (delta >= 1/population)."""
        if self.delta >= 1.0 / population:
            raise ConfigurationError(
                f"delta {self.delta:g} is at least 1/{population}: a mechanism could then reveal one client's data "
                f"in full and still meet it; use delta < {1.0 / population:g}", parameter="delta")
