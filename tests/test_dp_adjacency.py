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
    rdp_to_epsilon,
    subsampled_without_replacement_rdp,
)
from fedsecure.dp._accounting import GAUSSIAN_ORDERS, INTEGER_ORDERS  # noqa: E402
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


@pytest.mark.parametrize("z, slack", [(0.7, 1.05), (0.93, 1.05), (1.5, 1.05), (3.0, 1.35)])
def test_sampling_without_replacement_agrees_with_dp_accounting_for_the_gaussian(z: float, slack: float) -> None:
    # dp-accounting's bound for the Gaussian (Theorem 27) is at least as tight as the general Theorem 9, which
    # fedsecure applies to every distributed mechanism; the gap grows with the noise (30% in epsilon at z = 3).
    ours = np.array([subsampled_without_replacement_rdp(a, 0.02, lambda j: j / (2 * z * z)) for a in INTEGER_ORDERS])
    epsilon = rdp_to_epsilon(INTEGER_ORDERS, 100 * ours, 1e-5)
    accountant = dp_accounting.rdp.RdpAccountant(
        neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        accountant.compose(dp_accounting.SampledWithoutReplacementDpEvent(5000, 100, dp_accounting.GaussianDpEvent(z)),
                           100)
        reference = accountant.get_epsilon(1e-5)
    assert reference * 0.999 <= epsilon <= reference * slack


def _renyi(log_p: np.ndarray, log_q: np.ndarray, order: float, step: float) -> float:
    exponents = order * log_p + (1 - order) * log_q
    top = float(np.max(exponents))
    return (top + float(np.log(np.sum(np.exp(exponents - top)) * step))) / (order - 1)


def test_the_amplified_distributed_bound_is_never_below_an_exact_divergence() -> None:
    # One coordinate, every other client's update zero: client i's clipped update c is in the sum only if i was
    # drawn (probability q). Zero-out pair: (1-q) N(0) + q N(c) against N(0); replace-one pair: c against -c.
    plan = _plan(1.9, bits=24, clients=100, dim=1)
    q, sigma, c = 0.02, plan.noise_multiplier * plan.l2_sensitivity, plan.l2_sensitivity
    grid = np.linspace(-40 * sigma, 40 * sigma, 400_001)
    step = float(grid[1] - grid[0])

    def log_normal(mean: float) -> np.ndarray:
        return -((grid - mean) ** 2) / (2 * sigma**2) - np.log(sigma * np.sqrt(2 * np.pi))

    base = log_normal(0.0)
    plus = np.logaddexp(np.log1p(-q) + base, np.log(q) + log_normal(c))
    minus = np.logaddexp(np.log1p(-q) + base, np.log(q) + log_normal(-c))
    for adjacency, pairs in ((Adjacency.ZERO_OUT, [(plus, base), (base, plus)]),
                             (Adjacency.REPLACE_ONE, [(plus, minus)])):
        curve = plan.rdp(100, adjacency=adjacency, sample_rate=q)  # type: ignore[attr-defined]
        unamplified = plan.rdp(100, adjacency=adjacency)  # type: ignore[attr-defined]
        orders = plan.orders_for(q)  # type: ignore[attr-defined]
        for order, bound in zip(orders[:40], curve[:40]):
            assert bound >= max(_renyi(a, b, order, step) for a, b in pairs) - 1e-9
        assert curve[0] < unamplified[GAUSSIAN_ORDERS.index(2.0)] / 10  # and it amplifies


def _distributed(fraction: float, population: int = 5000) -> object:
    config = DPConfig(level=PrivacyLevel.DISTRIBUTED, delta=1e-5, target_epsilon=3.0, rounds=50, bits=20)
    return round_privacy(config, protocol=ProtocolKind.SECAGG_PLUS, dimension=650, clip=0.5, ring_bits=32,
                         max_weight=64, population=population, fraction=fraction)


def test_distributed_dp_calibrates_against_the_models_users_and_reports_the_server_too() -> None:
    sampled, fixed = _distributed(0.02), _distributed(1.0, population=100)
    assert sampled.plan.max_clients == fixed.plan.max_clients == 100  # type: ignore[attr-defined]
    # The hidden cohort buys less noise for the same target ...
    assert sampled.plan.noise_multiplier < fixed.plan.noise_multiplier / 4  # type: ignore[attr-defined]
    ledger = sampled.ledger  # type: ignore[attr-defined]
    assert "amplified by sampling without replacement" in ledger.accountant_name
    for round_index in range(50):
        members = [0, *range(round_index * 99 + 1, round_index * 99 + 100)]  # client 0 is drawn every time
        ledger.record(round_index, members, contributors=100, noise_multiplier=sampled.plan.noise_multiplier)  # type: ignore[attr-defined]
    # ... and the server, which knows the cohorts, is held to the unamplified bound of each client's rounds.
    assert ledger.epsilon == pytest.approx(3.0, rel=0.01)
    server = sampled.plan.epsilon(survivors=100, rounds=50, delta=1e-5)  # type: ignore[attr-defined]
    assert ledger.epsilon_without_amplification == pytest.approx(server, rel=1e-9) and server > 3.0
    assert "no amplification" in fixed.ledger.accountant_name  # type: ignore[attr-defined]
    with pytest.raises(ConfigurationError, match="planned for 5000 clients"):
        sampled.sample(list(range(4000)), 0, 0)  # type: ignore[attr-defined]
    assert len(sampled.sample(list(range(5000)), 0, 0)) == 100  # type: ignore[attr-defined]


def test_privacy_amplifies_distributed_dp_over_a_population_and_prints_both_guarantees() -> None:
    argv = ["--mechanism", "ddgauss", "--noise-multiplier", "2", "--rounds", "100", "--delta", "1e-5",
            "--clients", "100", "--clip", "0.5", "--bits", "20", "--dim", "650", "--json"]
    fixed = json.loads(_privacy(*argv).stdout)
    sampled = json.loads(_privacy(*argv, "--population", "5000").stdout)
    assert sampled["sample_rate"] == 0.02 and "without replacement" in sampled["accountant"]
    assert sampled["epsilon_against_server"] == pytest.approx(fixed["epsilon"], rel=1e-9)
    assert sampled["epsilon"] < fixed["epsilon"] / 5
    assert _privacy(*argv, "--population", "50").returncode == 2


def test_calibration_stays_within_the_noise_the_ring_holds() -> None:
    # The search's upper end (noise multiplier 200) does not fit a 12-bit ring; the target needs far less.
    config = DPConfig(level=PrivacyLevel.DISTRIBUTED, delta=1e-5, target_epsilon=3.0, rounds=50, bits=12)
    twelve = round_privacy(config, protocol=ProtocolKind.SECAGG_PLUS, dimension=650, clip=0.5, ring_bits=32,
                           max_weight=64, population=5000, fraction=0.02)
    plan = twelve.plan  # type: ignore[attr-defined]
    assert plan.bits == 12 and plan.epsilon(survivors=100, rounds=50, delta=1e-5, sample_rate=0.02) <= 3.0
    with pytest.raises(ConfigurationError, match="8-bit ring holds noise multiplier") as refused:
        round_privacy(DPConfig(level=PrivacyLevel.DISTRIBUTED, delta=1e-5, target_epsilon=3.0, rounds=50, bits=8),
                      protocol=ProtocolKind.SECAGG_PLUS, dimension=650, clip=0.5, ring_bits=32, max_weight=64,
                      population=5000, fraction=0.02)
    assert refused.value.parameter == "bits"
    # A ring that holds no noise at all: the refusal says it is the target that cannot be calibrated, and the
    # multiplier it quotes is only the smallest the search tried.
    with pytest.raises(ConfigurationError, match="target epsilon 3 cannot be calibrated.*3-bit ring") as refused:
        round_privacy(DPConfig(level=PrivacyLevel.DISTRIBUTED, delta=1e-5, target_epsilon=3.0, rounds=50, bits=3),
                      protocol=ProtocolKind.SECAGG_PLUS, dimension=650, clip=0.5, ring_bits=32, max_weight=64,
                      population=5000, fraction=0.02)
    assert refused.value.parameter == "bits"


@pytest.mark.parametrize("bits", [62, 64])
def test_central_noise_on_a_wide_ring_never_wraps_int64(bits: int) -> None:
    # A sum at the top of a 62- or 64-bit ring plus noise leaves int64: the release must still be the sum plus the
    # noise, never a wrapped value on the other side.
    privacy = round_privacy(DPConfig(level=PrivacyLevel.CENTRAL, delta=1e-5, noise_multiplier=5.0),
                            protocol=ProtocolKind.SECAGG_PLUS, dimension=500, clip=1.0, ring_bits=bits, max_weight=1,
                            population=2)
    encoding = privacy.encoding(2)  # type: ignore[attr-defined]
    top = 2 ** (bits - 1) - 1
    ring_sum = encoding.ring.from_signed(np.full(encoding.vector_length, top, dtype=np.int64))
    release = privacy.release(0, encoding, ring_sum, [0, 1])  # type: ignore[attr-defined]
    integers = release.mean * privacy.denominator * encoding.scale  # type: ignore[attr-defined]
    sigma = 5.0 * privacy.integer_sensitivity(500)  # type: ignore[attr-defined]
    assert np.all(np.abs(integers - top) < 8 * sigma)
    assert np.std(integers - top) == pytest.approx(sigma, rel=0.15)


def test_a_plan_whose_noise_no_scale_can_hold_exactly_is_refused() -> None:
    # At any scale the per-client variance would leave the exact samplers' range (for Skellam: float64's exact
    # integers, beyond which the noise stops hiding the sum's low bits); such a plan is refused, not built.
    with pytest.raises(ConfigurationError, match="exact range") as refused:
        plan_distributed(mechanism=Mechanism.DDGAUSS, dimension=1, clip=1.0, bits=62, expected_clients=100,
                         max_clients=100, noise_multiplier=1e9)
    assert refused.value.parameter == "noise_multiplier"
    with pytest.raises(ConfigurationError, match="exact range"):
        plan_distributed(mechanism=Mechanism.SKELLAM, dimension=1, clip=1e9, bits=62, expected_clients=1,
                         max_clients=1, noise_multiplier=1e10)
    # The largest noise that fits is still planned.
    plan = plan_distributed(mechanism=Mechanism.SKELLAM, dimension=1, clip=1.0, bits=62, expected_clients=100,
                            max_clients=100, noise_multiplier=3e8)
    assert plan.local_variance <= 2.0**50


@pytest.mark.parametrize("second", [2e-17, 2e-15, 1e-9])
def test_amplification_of_a_tiny_divergence_stays_finite_and_above_its_exact_leading_term(second: float) -> None:
    # Theorem 9's bound at order 2 is log(1 + q^2 min(4 (e^x - 1), 2 e^x)); for tiny x that is about 4 q^2 x,
    # and log(e^x - 1) must not round e^-x to 1.
    q = 0.1
    value = subsampled_without_replacement_rdp(2, q, lambda order: second * order / 2)
    assert value == pytest.approx(np.log1p(4 * q * q * np.expm1(second)), rel=1e-9)
    assert value > 0


def test_epsilon_is_never_negative_at_a_large_delta() -> None:
    assert gaussian_epsilon(50.0, 1.0, 1, 0.4) == 0.0
    assert rdp_to_epsilon(GAUSSIAN_ORDERS, np.full(len(GAUSSIAN_ORDERS), 1e-6), 0.5) >= 0.0


def test_amplified_epsilon_is_never_above_the_same_rounds_without_amplification() -> None:
    # Theorem 9's terms of order 3 and more do not shrink with the noise, so at a tiny rate over many rounds its
    # integer orders can lose to the unamplified bound at real orders; both bound the population, the smaller holds.
    plan = plan_distributed(mechanism=Mechanism.DDGAUSS, dimension=10, clip=1.0, bits=40, expected_clients=10,
                            max_clients=10, noise_multiplier=0.7)
    for rate in (0.5, 1e-3, 1e-7):
        amplified = plan.epsilon(survivors=10, rounds=5, delta=1e-9, sample_rate=rate)
        assert amplified <= plan.epsilon(survivors=10, rounds=5, delta=1e-9) + 1e-12
    ledger = PrivacyLedger(DPConfig(level=PrivacyLevel.DISTRIBUTED, delta=1e-9, mechanism=Mechanism.DDGAUSS,
                                    noise_multiplier=0.7), sample_rate=0.5, plan=plan)
    for round_index in range(5):
        ledger.record(round_index, range(10), contributors=10, noise_multiplier=plan.noise_multiplier)
    assert ledger.epsilon <= ledger.epsilon_without_amplification + 1e-12
    assert ledger.epsilon == pytest.approx(plan.epsilon(survivors=10, rounds=5, delta=1e-9, sample_rate=0.5))
