"""Differential privacy that composes with secure aggregation: local, central and distributed.

* samplers driven by a CSPRNG: the exact discrete Gaussian, Skellam, Gaussian;
* accounting: Opacus' RDP and PRV accountants for the Gaussian, the DDGauss and
  Skellam RDP bounds with Poisson subsampling, calibration that never overshoots;
* distributed DP: rotation, conditional rounding, ring sizing with a wrap bound;
* local DP through Opacus, and a privacy ledger per round and per client.
"""

from ._accounting import (
    Accountant,
    Calibration,
    Mechanism,
    calibrate,
    ddgauss_rdp,
    gaussian_epsilon,
    gaussian_rdp,
    rdp_to_epsilon,
    rounded_l1_bound,
    rounded_l2_bound,
    skellam_rdp,
    subsampled_rdp,
    subsampled_without_replacement_rdp,
)
from ._config import LOCAL_ADJACENCY, Adjacency, DPConfig, PrivacyLevel
from ._distributed import DistributedDPEncoding, DistributedPlan, calibrate_distributed, hadamard, plan_distributed
from ._ledger import LedgerEntry, PrivacyLedger
from ._local import LocalPrivacy, local_noise_multiplier
from ._sampling import RandomSource, discrete_gaussian, gaussian, skellam

__all__ = [
    "Accountant",
    "Adjacency",
    "LOCAL_ADJACENCY",
    "Calibration",
    "calibrate_distributed",
    "DPConfig",
    "DistributedDPEncoding",
    "DistributedPlan",
    "LedgerEntry",
    "LocalPrivacy",
    "Mechanism",
    "PrivacyLedger",
    "PrivacyLevel",
    "RandomSource",
    "calibrate",
    "ddgauss_rdp",
    "discrete_gaussian",
    "gaussian",
    "gaussian_epsilon",
    "gaussian_rdp",
    "hadamard",
    "local_noise_multiplier",
    "plan_distributed",
    "rdp_to_epsilon",
    "rounded_l1_bound",
    "rounded_l2_bound",
    "skellam",
    "skellam_rdp",
    "subsampled_rdp",
    "subsampled_without_replacement_rdp",
]
