"""Adjacency: zero-out (default) and replace-one, for central and distributed DP, against an independent reference."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest

pytest.importorskip("opacus")

from fedsecure import ConfigurationError  # noqa: E402
from fedsecure.dp import (  # noqa: E402
    Accountant,
    Adjacency,
    DPConfig,
    Mechanism,
    PrivacyLedger,
    PrivacyLevel,
    gaussian_epsilon,
    plan_distributed,
)
from fedsecure.dp._accounting import GAUSSIAN_ORDERS  # noqa: E402
from fedsecure.pipeline import round_privacy  # noqa: E402
from fedsecure.protocols import ProtocolKind  # noqa: E402

import dp_accounting  # noqa: E402  (the independent reference)


def _plan(z: float, bits: int = 24, clients: int = 100, dim: int = 10_000) -> object:
    return plan_distributed(mechanism=Mechanism.DDGAUSS, dimension=dim, clip=1.0, bits=bits, expected_clients=clients,
                            max_clients=clients, noise_multiplier=z)


@pytest.mark.parametrize("z, rounds", [(1.0, 100), (0.7, 10), (3.0, 300)])
def test_ddgauss_under_zero_out_is_within_five_percent_of_central_and_never_below_it(z: float, rounds: int) -> None:
    central = gaussian_epsilon(z, 1.0, rounds, 1e-5)
    plan = _plan(z)
    distributed = plan.epsilon(survivors=100, rounds=rounds, delta=1e-5)
    # The continuous Gaussian of the same noise multiplier bounds a DDGauss sum's privacy from below (the
    # discrete noise can only add to it); the sum's noise multiplier is relative to the rounded sensitivity.
    exact_lower_bound = gaussian_epsilon(plan.noise_multiplier, 1.0, rounds, 1e-5)
    assert exact_lower_bound <= distributed <= 1.05 * central


def test_replace_one_costs_what_twice_the_sensitivity_costs() -> None:
    plan = _plan(2.0)
    zero_out = plan.epsilon(survivors=100, rounds=50, delta=1e-5)
    replace_one = plan.epsilon(survivors=100, rounds=50, delta=1e-5, adjacency=Adjacency.REPLACE_ONE)
    assert replace_one == pytest.approx(gaussian_epsilon(1.0, 1.0, 50, 1e-5), rel=0.05)
    assert replace_one > 2.5 * zero_out


@pytest.mark.parametrize("adjacency, relation", [
    (Adjacency.ZERO_OUT, dp_accounting.NeighboringRelation.REPLACE_SPECIAL),
    (Adjacency.REPLACE_ONE, dp_accounting.NeighboringRelation.REPLACE_ONE),
])
def test_central_ledger_agrees_with_dp_accounting_under_its_adjacency(adjacency: Adjacency, relation: object) -> None:
    ledger = PrivacyLedger(DPConfig(level=PrivacyLevel.CENTRAL, delta=1e-5, noise_multiplier=1.5,
                                    adjacency=adjacency), sample_rate=1.0)
    for round_index in range(40):
        ledger.record(round_index, [0, 1, 2], contributors=3, noise_multiplier=1.5)
    reference = dp_accounting.rdp.RdpAccountant(orders=list(GAUSSIAN_ORDERS), neighboring_relation=relation)
    # dp-accounting's Gaussian event has sensitivity 1; under replace-one the neighbours are 2 apart.
    event = dp_accounting.GaussianDpEvent(1.5 / adjacency.sensitivity_factor)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference.compose(event, 40)
        expected = reference.get_epsilon(1e-5)
    assert ledger.epsilon == pytest.approx(expected, rel=0.01)
    assert ledger.to_json()["adjacency"] == adjacency.value


def test_a_zero_update_encodes_to_exactly_zero_before_its_noise_share() -> None:
    # Zero-out adjacency assumes the zeroed client's rounded contribution is exactly zero.
    encoding = _plan(1.0, dim=1000).encoding(bytes(32))
    assert not np.any(encoding.round_conditionally(encoding.rotate(np.zeros(1000)) * encoding.plan.scale))


def test_the_ring_is_sized_for_the_cohort_not_the_population() -> None:
    config = DPConfig(level=PrivacyLevel.DISTRIBUTED, delta=1e-5, target_epsilon=3.0, rounds=300, bits=16)
    privacy = round_privacy(config, protocol=ProtocolKind.SECAGG_PLUS, dimension=650, clip=0.5, ring_bits=32,
                            max_weight=64, population=5000, fraction=0.02)
    assert privacy.plan.max_clients == 100  # type: ignore[attr-defined]


def test_defaults_and_refusals() -> None:
    assert DPConfig(level=PrivacyLevel.LOCAL, delta=1e-5, noise_multiplier=1.0).accountant is Accountant.PRV
    assert DPConfig(level="central", delta=1e-5, noise_multiplier=1.0).accountant is Accountant.RDP
    assert DPConfig(level=PrivacyLevel.CENTRAL, delta=1e-5, noise_multiplier=1.0).adjacency is Adjacency.ZERO_OUT
    with pytest.raises(ConfigurationError, match="adjacency"):
        DPConfig(level=PrivacyLevel.LOCAL, delta=1e-5, noise_multiplier=1.0, adjacency=Adjacency.REPLACE_ONE)
    with pytest.raises(ConfigurationError, match="adjacency"):
        round_privacy(DPConfig(level=PrivacyLevel.CENTRAL, delta=1e-5, noise_multiplier=1.0,
                               adjacency="replace-one"), protocol=ProtocolKind.SECAGG_PLUS, dimension=10, clip=1.0,
                      ring_bits=32, max_weight=1, population=1000, fraction=0.1)


def _privacy(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fedsecure.cli", "privacy", *argv], capture_output=True, text=True,
                          timeout=120)


def test_privacy_names_adjacency_and_accountant_and_refuses_a_sample_rate_it_would_ignore() -> None:
    shown = _privacy("--mechanism", "ddgauss", "--noise-multiplier", "1", "--rounds", "100", "--delta", "1e-5",
                     "--clients", "100", "--clip", "1", "--bits", "24", "--json")
    summary = json.loads(shown.stdout)
    assert summary["adjacency"] == "zero-out" and "ddgauss" in summary["accountant"]
    assert summary["epsilon"] == pytest.approx(gaussian_epsilon(1.0, 1.0, 100, 1e-5), rel=0.05)
    refused = _privacy("--mechanism", "ddgauss", "--noise-multiplier", "1", "--rounds", "100", "--delta", "1e-5",
                       "--clients", "100", "--clip", "1", "--sample-rate", "0.1")
    assert refused.returncode == 2 and "sample-rate" in refused.stderr


def _central(noise: float = 2.0, fraction: float = 1.0) -> object:
    config = DPConfig(level=PrivacyLevel.CENTRAL, delta=1e-5, noise_multiplier=noise)
    return round_privacy(config, protocol=ProtocolKind.SECAGG_PLUS, dimension=4000, clip=1.0, ring_bits=32,
                         max_weight=1, population=1000, fraction=fraction)


def test_central_noise_is_an_exact_integer_draw_of_the_planned_size() -> None:
    privacy = _central()
    encoding = privacy.encoding(1000)  # type: ignore[attr-defined]
    zero_sum = encoding.ring.from_signed(np.zeros(encoding.vector_length, dtype=np.int64))
    release = privacy.release(0, encoding, zero_sum, range(1000))  # type: ignore[attr-defined]
    integers = release.mean * privacy.denominator * encoding.scale  # type: ignore[attr-defined]
    assert np.allclose(integers, np.round(integers), atol=1e-6)  # added to the integer sum, then divided once
    expected = 2.0 * privacy.integer_sensitivity(4000)  # type: ignore[attr-defined]
    assert np.std(integers) == pytest.approx(expected, rel=0.05)


def test_sampled_central_dp_is_never_accounted_below_the_continuous_gaussian() -> None:
    ledger = _central(noise=1.0, fraction=0.02).ledger  # type: ignore[attr-defined]
    for round_index in range(300):
        ledger.record(round_index, [1], contributors=1, noise_multiplier=1.0)
    continuous = gaussian_epsilon(1.0, 0.02, 300, 1e-5)
    assert continuous <= ledger.epsilon <= 1.35 * continuous
    assert ledger.orders[0] == 2.0  # the general subsampling bound, at integer orders
