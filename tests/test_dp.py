"""Differential privacy: samplers against theory, accounting against dp-accounting, distributed DP, refusals."""

from __future__ import annotations

import json
import math
import os
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from fedsecure import ConfigurationError
from fedsecure.dp import (
    Accountant,
    DistributedPlan,
    DPConfig,
    Mechanism,
    PrivacyLevel,
    RandomSource,
    calibrate,
    ddgauss_rdp,
    discrete_gaussian,
    gaussian,
    gaussian_epsilon,
    hadamard,
    plan_distributed,
    rdp_to_epsilon,
    skellam,
    skellam_rdp,
    subsampled_rdp,
)
from fedsecure.dp._accounting import GAUSSIAN_ORDERS, INTEGER_ORDERS

import dp_accounting  # noqa: E402  (a dev dependency: the independent reference for accounting)


# ---- samplers --------------------------------------------------------------------------------------
def _discrete_gaussian_pmf(variance: float, support: np.ndarray) -> np.ndarray:
    weights = np.exp(-support.astype(float) ** 2 / (2 * variance))
    wide = np.arange(-60 * math.isqrt(int(variance) + 1) - 60, 60 * math.isqrt(int(variance) + 1) + 61)
    return weights / np.exp(-wide.astype(float) ** 2 / (2 * variance)).sum()


@pytest.mark.parametrize("variance", [1, 3, 10])
def test_discrete_gaussian_matches_its_pmf(variance: int) -> None:
    draws = discrete_gaussian(variance, 60_000)
    support = np.arange(-4 * math.isqrt(variance) - 4, 4 * math.isqrt(variance) + 5)
    expected = _discrete_gaussian_pmf(variance, support) * draws.size
    observed = np.array([(draws == k).sum() for k in support], dtype=float)
    inside = expected.sum()
    # Lump both tails into one cell so every expected count is positive.
    observed = np.append(observed, draws.size - observed.sum())
    expected = np.append(expected, draws.size - inside)
    keep = expected > 5
    _, p_value = stats.chisquare(observed[keep], expected[keep] * observed[keep].sum() / expected[keep].sum())
    assert p_value > 1e-4


@pytest.mark.parametrize("variance", [100, 10_000, 2**20])
def test_discrete_gaussian_moments_and_tails(variance: int) -> None:
    draws = discrete_gaussian(variance, 100_000).astype(float)
    sigma = math.sqrt(variance)
    assert abs(draws.mean()) < 5 * sigma / math.sqrt(draws.size)
    assert draws.var() / variance == pytest.approx(1.0, abs=0.03)
    # Two-sided tail beyond 3 sigma: about 0.27% for a Gaussian this wide.
    assert np.mean(np.abs(draws) > 3 * sigma) == pytest.approx(0.0027, abs=0.0012)


def test_discrete_gaussian_beyond_the_vectorised_range_takes_python_integers() -> None:
    variance = 2**27 + 12345
    draws = np.asarray(discrete_gaussian(variance, 3000), dtype=float)
    assert draws.var() / variance == pytest.approx(1.0, abs=0.1)


def test_sum_of_client_noise_has_the_target_variance() -> None:
    clients, local = 16, 50
    total = sum(discrete_gaussian(local, 40_000) for _ in range(clients)).astype(float)
    assert total.var() / (clients * local) == pytest.approx(1.0, abs=0.03)
    total = sum(skellam(7.5, 40_000) for _ in range(clients)).astype(float)
    assert total.var() / (clients * 7.5) == pytest.approx(1.0, abs=0.03)


@pytest.mark.parametrize("variance", [3.0, 50.0])  # Poisson means 1.5 (inversion) and 25 (PTRS)
def test_skellam_matches_its_pmf(variance: float) -> None:
    draws = skellam(variance, 60_000)
    support = np.arange(-int(5 * math.sqrt(variance)) - 3, int(5 * math.sqrt(variance)) + 4)
    expected = stats.skellam.pmf(support, variance / 2, variance / 2) * draws.size
    observed = np.array([(draws == k).sum() for k in support], dtype=float)
    keep = expected > 5
    _, p_value = stats.chisquare(observed[keep], expected[keep] * observed[keep].sum() / expected[keep].sum())
    assert p_value > 1e-4


@pytest.mark.parametrize("exponent", [44, 48, 50])
def test_skellam_keeps_its_spread_shape_and_parity_at_the_largest_variances_a_plan_uses(exponent: int) -> None:
    # At these variances Skellam is Normal to within 1e-6; a Poisson sampler whose acceptance test loses precision
    # drifts in spread by percents, and one whose means leave float64's integers has even sums.
    variance = 2.0**exponent
    draws = skellam(variance, 100_000).astype(np.float64) / math.sqrt(variance)
    assert draws.std() == pytest.approx(1.0, abs=0.012)
    assert np.mean(np.abs(draws) <= 1.0) == pytest.approx(0.6827, abs=0.006)
    assert np.mean(skellam(variance, 100_000) % 2) == pytest.approx(0.5, abs=0.008)


def test_skellam_plans_stay_within_the_exact_poisson_range() -> None:
    from fedsecure.dp._distributed import SKELLAM_VARIANCE_LIMIT

    plan = plan_distributed(mechanism=Mechanism.SKELLAM, dimension=1000, clip=1.0, bits=48, expected_clients=10,
                            max_clients=10, noise_multiplier=1.0)
    assert plan.local_variance <= SKELLAM_VARIANCE_LIMIT == 2.0**50
    fields = json.loads(plan.to_json()) | {"local_variance": 2.0**51}
    with pytest.raises(ConfigurationError, match="2\\^50"):
        DistributedPlan.from_json(json.dumps(fields), max_dimension=1000)


@pytest.mark.parametrize("pooled_limit", [64, 0])  # the pooled integer parts, and the loop beyond the pool
def test_bernoulli_exp_has_probability_exp_minus_gamma(monkeypatch: pytest.MonkeyPatch, pooled_limit: int) -> None:
    from fedsecure.dp import _sampling

    monkeypatch.setattr(_sampling, "_POOLED_WHOLE_LIMIT", pooled_limit)
    draws = 200_000
    numerators = np.array([0, 3, 10, 25, 40, 61])
    a = np.repeat(numerators, draws)
    accepted = _sampling._bernoulli_exp(RandomSource(), a, np.full(a.size, 10)).reshape(numerators.size, draws)
    for gamma, rate in zip(numerators / 10, accepted.mean(axis=1), strict=True):
        p = math.exp(-gamma)
        assert abs(rate - p) < 5 * math.sqrt(p * (1 - p) / draws) + 1e-12, (gamma, rate, p)


def test_geometric_runs_have_the_geometric_pmf() -> None:
    from fedsecure.dp import _sampling

    source = RandomSource()
    # One large call, and many calls of one draw each (a new stream per call).
    for draws in (_sampling._geometric_exp_minus_one(source, 60_000),
                  np.concatenate([_sampling._geometric_exp_minus_one(source, 1) for _ in range(20_000)])):
        support = np.arange(12)
        expected = (1 - math.exp(-1)) * np.exp(-support.astype(float)) * draws.size
        observed = np.bincount(np.minimum(draws, support[-1] + 1), minlength=support.size + 1).astype(float)
        expected = np.append(expected, draws.size - expected.sum())
        keep = expected > 5
        _, p_value = stats.chisquare(observed[keep], expected[keep] * observed[keep].sum() / expected[keep].sum())
        assert p_value > 1e-4


def test_geometric_runs_continue_across_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    from fedsecure.dp import _sampling

    # Batches of successes (True) and failures (False) fixed in advance: a run left open at the end of a batch,
    # or spanning a whole batch, continues into the next.
    batches = iter([np.array([True, True, False, True]), np.ones(3, dtype=bool), np.array([True, False, False]),
                    np.array([False])])
    monkeypatch.setattr(_sampling, "_bernoulli_exp_minus_one", lambda source, count: next(batches))
    assert _sampling._geometric_exp_minus_one(RandomSource(), 4).tolist() == [2, 5, 0, 0]


def test_uniform_integers_are_exactly_uniform_and_gaussians_standard() -> None:
    source = RandomSource()
    for bound in (3, 7, 2**62 + 1):
        values = source.below(np.full(30_000, bound))
        assert values.min() >= 0 and values.max() < bound
        if bound < 100:
            _, p_value = stats.chisquare(np.bincount(values, minlength=bound))
            assert p_value > 1e-4
    normals = gaussian(100_001)
    assert normals.size == 100_001
    assert abs(normals.mean()) < 0.02 and normals.var() == pytest.approx(1.0, abs=0.02)
    assert stats.kstest(normals[:20_000], "norm").pvalue > 1e-4


def test_random_source_refuses_pickling() -> None:
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(RandomSource())


# ---- accounting --------------------------------------------------------------------------------------
def _reference_epsilon(z: float, q: float, steps: int, delta: float, *, pld: bool = False) -> float:
    event = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z))
    accountant = (dp_accounting.pld.PLDAccountant() if pld
                  else dp_accounting.rdp.RdpAccountant(orders=list(GAUSSIAN_ORDERS)))
    accountant.compose(event, steps)
    return float(accountant.get_epsilon(delta))


@pytest.mark.parametrize("z,q,steps,delta", [(1.1, 0.01, 1000, 1e-5), (0.9, 0.1, 100, 1e-5), (2.0, 1.0, 10, 1e-5),
                                             (4.7, 1.0, 10, 1e-5), (1.0, 0.5, 50, 1e-6)])
def test_gaussian_accounting_agrees_with_dp_accounting_within_one_percent(z: float, q: float, steps: int,
                                                                           delta: float) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rdp_reference = _reference_epsilon(z, q, steps, delta)
        pld_reference = _reference_epsilon(z, q, steps, delta, pld=True)
    assert gaussian_epsilon(z, q, steps, delta) == pytest.approx(rdp_reference, rel=0.01)
    assert gaussian_epsilon(z, q, steps, delta, Accountant.PRV) == pytest.approx(pld_reference, rel=0.01)


def test_ddgauss_and_skellam_tend_to_the_gaussian_when_the_noise_is_wide() -> None:
    # With a wide local noise tau vanishes, and Skellam's correction terms are O(1/mu^2): both curves are
    # then the Gaussian one for the same noise multiplier, as dp-accounting computes it.
    clients, local_variance, l2, dim, steps, delta = 10, 1e6, 5000.0, 1024, 10, 1e-5
    z = math.sqrt(clients * local_variance) / l2
    reference = _reference_epsilon(z, 1.0, steps, delta)
    ddgauss = [steps * ddgauss_rdp(a, l2, l2 * math.sqrt(dim), local_variance, clients, dim) for a in INTEGER_ORDERS]
    skell = [steps * skellam_rdp(a, l2, l2 * math.sqrt(dim), clients * local_variance) for a in INTEGER_ORDERS]
    assert rdp_to_epsilon(INTEGER_ORDERS, ddgauss, delta) == pytest.approx(reference, rel=0.01)
    assert rdp_to_epsilon(INTEGER_ORDERS, skell, delta) == pytest.approx(reference, rel=0.01)


@pytest.mark.parametrize("z,q", [(1.0, 0.01), (0.8, 0.1), (2.0, 0.3)])
def test_general_subsampling_bound_is_an_upper_bound_on_the_exact_sampled_gaussian(z: float, q: float) -> None:
    from dp_accounting.rdp.rdp_privacy_accountant import _compute_rdp_poisson_subsampled_gaussian

    orders = [2, 3, 5, 8, 16, 32]
    exact = _compute_rdp_poisson_subsampled_gaussian(q, z, orders)
    ours = [subsampled_rdp(a, q, lambda j: j / (2 * z * z)) for a in orders]
    for bound, truth, order in zip(ours, exact, orders):
        assert bound >= truth * (1 - 1e-9), order
        assert bound <= order / (2 * z * z) + 1e-12  # never worse than no subsampling


@settings(max_examples=10, deadline=None)
@given(target=st.floats(0.3, 20), q=st.floats(0.01, 1.0), steps=st.integers(1, 200))
def test_calibrated_gaussian_noise_never_overshoots_the_target(target: float, q: float, steps: int) -> None:
    result = calibrate(lambda z: gaussian_epsilon(z, q, steps, 1e-5), target, high=1e3)
    assert result.epsilon <= target
    assert gaussian_epsilon(result.noise, q, steps, 1e-5) <= target


@settings(max_examples=8, deadline=None)
@given(target=st.floats(1.0, 10), mechanism=st.sampled_from([Mechanism.DDGAUSS, Mechanism.SKELLAM]))
def test_calibrated_distributed_noise_never_overshoots_the_target(target: float, mechanism: Mechanism) -> None:
    def epsilon(z: float) -> float:
        plan = plan_distributed(mechanism=mechanism, dimension=500, clip=1.0, bits=20, expected_clients=8,
                                max_clients=10, noise_multiplier=z)
        return plan.epsilon(survivors=8, rounds=5, delta=1e-5)

    assert calibrate(epsilon, target, low=0.05, high=50).epsilon <= target


# ---- distributed DP ----------------------------------------------------------------------------------
def test_hadamard_is_an_orthonormal_involution() -> None:
    x = np.random.default_rng(0).normal(size=64)  # noqa: csprng-ok (test data)
    np.testing.assert_allclose(hadamard(hadamard(x)), x, atol=1e-12)
    assert np.linalg.norm(hadamard(x)) == pytest.approx(np.linalg.norm(x))
    with pytest.raises(ValueError):
        hadamard(np.ones(6))


@pytest.mark.parametrize("mechanism", [Mechanism.DDGAUSS, Mechanism.SKELLAM])
def test_distributed_encoding_sums_to_the_clipped_sum_plus_the_planned_noise(mechanism: Mechanism) -> None:
    plan = plan_distributed(mechanism=mechanism, dimension=1000, clip=1.0, bits=20, expected_clients=8,
                            max_clients=10, noise_multiplier=0.5)
    assert plan.wrap_bound <= 1e-6 and plan.padded_dimension == 1024
    encoding = plan.encoding(os.urandom(32))
    rng = np.random.default_rng(1)  # noqa: csprng-ok (test data)
    updates = [rng.normal(size=1000) * 0.1 for _ in range(8)]
    total = np.zeros(encoding.vector_length, dtype=encoding.ring.dtype)
    for update in updates:
        encoded = encoding.encode(update)
        assert encoded.encoding_digest == encoding.digest()
        np.add(total, encoded.values, out=total)
    encoding.ring.reduce(total)
    clipped = sum(u * min(1.0, 1.0 / np.linalg.norm(u)) for u in updates)
    error = encoding.decode_sum(total) - clipped
    expected_std = plan.noise_multiplier * plan.l2_sensitivity / plan.scale
    assert abs(error.mean()) < 5 * expected_std / math.sqrt(error.size)
    assert error.std() == pytest.approx(expected_std, rel=0.1)


def test_conditional_rounding_keeps_the_norm_bound_and_stays_unbiased() -> None:
    plan = plan_distributed(mechanism=Mechanism.SKELLAM, dimension=256, clip=1.0, bits=16, expected_clients=2,
                            max_clients=2, noise_multiplier=0.5, beta=0.5)
    encoding = plan.encoding(os.urandom(32))
    update = np.full(256, 1.0) / 16.0  # norm 1: on the clip boundary
    scaled = encoding.rotate(update * plan.scale)
    rounded = np.array([encoding.round_conditionally(scaled) for _ in range(400)])
    norms = np.linalg.norm(rounded, axis=1)
    assert norms.max() <= plan.l2_sensitivity
    assert plan.l2_sensitivity < plan.clip * plan.scale + math.sqrt(plan.padded_dimension)  # tighter than plain
    assert np.abs(rounded.mean(axis=0) - scaled).max() < 0.2  # rounding still centred on the input


# ---- refusals -------------------------------------------------------------------------------------------
def test_dp_configurations_that_promise_nothing_are_refused() -> None:
    with pytest.raises(ConfigurationError) as error:
        DPConfig(level=PrivacyLevel.CENTRAL, delta=1e-5, noise_multiplier=0.0)
    assert error.value.parameter == "noise_multiplier"
    with pytest.raises(ConfigurationError):
        DPConfig(level=PrivacyLevel.CENTRAL, delta=1e-5, noise_multiplier=0.0, target_epsilon=3.0, rounds=5)
    with pytest.raises(ConfigurationError) as error:
        DPConfig(level=PrivacyLevel.CENTRAL, delta=1e-5, target_epsilon=3.0)
    assert error.value.parameter == "rounds"
    with pytest.raises(ConfigurationError) as error:
        DPConfig(level=PrivacyLevel.LOCAL, delta=1e-5, noise_multiplier=1.0, max_grad_norm=math.inf)
    assert error.value.parameter == "max_grad_norm"
    with pytest.raises(ConfigurationError) as error:
        DPConfig(level=PrivacyLevel.DISTRIBUTED, delta=1e-5, noise_multiplier=1.0, mechanism=Mechanism.GAUSSIAN)
    assert error.value.parameter == "mechanism"
    with pytest.raises(ConfigurationError) as error:
        DPConfig(level=PrivacyLevel.CENTRAL, delta=0.2, noise_multiplier=1.0).check_population(10)
    assert error.value.parameter == "delta"


def test_a_ring_too_small_for_the_noise_plus_the_data_is_refused() -> None:
    with pytest.raises(ConfigurationError) as error:
        plan_distributed(mechanism=Mechanism.DDGAUSS, dimension=10_000, clip=1.0, bits=8, expected_clients=50,
                         max_clients=100, noise_multiplier=2.0)
    assert error.value.parameter == "bits"


# ---- DP in the training wrapper -------------------------------------------------------------------
import torch  # noqa: E402


def _federation(*, dp: DPConfig | None, protocol=None, clients: int = 8, fraction: float = 1.0,  # type: ignore[no-untyped-def]
                dropout: float = 0.0):
    from torch.utils.data import DataLoader, TensorDataset

    from fedsecure.fl import FederatedClient, Federation
    from fedsecure.protocols import ProtocolKind

    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    data = [TensorDataset(torch.randn(64, 5, generator=generator), torch.randint(0, 2, (64,), generator=generator))
            for _ in range(clients)]

    def train(model, loader, privatize=None) -> None:  # type: ignore[no-untyped-def]
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        if privatize is not None:
            model, optimizer, loader = privatize(model, optimizer, loader)
        for x, y in loader:
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()

    return Federation(model=torch.nn.Linear(5, 2), train=train,
                      clients=[FederatedClient(i, DataLoader(d, batch_size=16), 64) for i, d in enumerate(data)],
                      protocol=protocol or ProtocolKind.SECAGG, clip=1.0, fraction=fraction, dropout=dropout, dp=dp)


@pytest.mark.parametrize("level", [PrivacyLevel.CENTRAL, PrivacyLevel.DISTRIBUTED])
def test_user_level_dp_trains_and_stays_within_the_target(level: PrivacyLevel) -> None:
    from fedsecure.fl import train_federated

    dp = DPConfig(level=level, delta=1e-3, target_epsilon=5.0, rounds=3)
    federation = _federation(dp=dp)
    before = federation.global_vector()
    result = train_federated(federation, rounds=3)
    assert not any(r.aborted for r in result.history)
    epsilons = [r.epsilon for r in result.history]
    assert all(e is not None for e in epsilons) and epsilons == sorted(epsilons)  # type: ignore[type-var]
    assert 0 < epsilons[-1] <= 5.0  # type: ignore[operator]
    assert not np.array_equal(federation.global_vector(), before)
    ledger = federation.ledger
    assert ledger is not None and len(ledger.entries) == 3
    assert ledger.client_epsilon(0) > 0 and set(ledger.to_json()) >= {"epsilon", "client_epsilon", "rounds"}


def test_distributed_dp_records_the_noise_of_the_actual_survivors() -> None:
    dp = DPConfig(level=PrivacyLevel.DISTRIBUTED, delta=1e-3, noise_multiplier=1.0)
    federation = _federation(dp=dp, clients=10, dropout=0.0)
    plan = federation.distributed_plan
    assert plan is not None and plan.expected_clients == 10
    full = federation.run_round(0)
    federation.dropout = 0.3  # three of ten vanish: less noise in the sum than planned
    short = federation.run_round(1)
    ledger = federation.ledger
    assert ledger is not None and not full.aborted and not short.aborted and short.survivors < 10
    first, second = ledger.entries
    assert second.contributors == short.survivors and second.noise_multiplier < first.noise_multiplier
    assert second.epsilon_round > first.epsilon_round


def test_a_client_that_sat_out_spends_nothing() -> None:
    dp = DPConfig(level=PrivacyLevel.CENTRAL, delta=1e-3, noise_multiplier=2.0)
    federation = _federation(dp=dp, clients=8, fraction=0.5)
    federation.run_round(0)
    ledger = federation.ledger
    assert ledger is not None
    (entry,) = ledger.entries
    absent = sorted(set(range(8)) - set(entry.participants))
    assert absent and all(ledger.client_epsilon(c) == 0.0 for c in absent)
    assert all(ledger.client_epsilon(c) > 0 for c in entry.participants)
    # Population-wide, amplification by sampling at q = 0.5 makes the round cheaper than for a participant.
    assert ledger.epsilon < entry.epsilon_round


@pytest.mark.parametrize("refuse", [False, True])
def test_refuse_over_budget_raises_the_threshold_so_clients_refuse_to_unmask(refuse: bool) -> None:
    dp = DPConfig(level=PrivacyLevel.DISTRIBUTED, delta=1e-3, target_epsilon=4.0, rounds=1,
                  refuse_over_budget=refuse)
    federation = _federation(dp=dp, clients=10)  # planned for 10 noise shares in one round: exactly the budget
    before = federation.global_vector()
    federation.dropout = 0.4  # fewer shares than planned; still above SecAgg's own threshold of 5
    record = federation.run_round(0)
    ledger = federation.ledger
    assert ledger is not None
    if refuse:
        assert record.aborted
        np.testing.assert_array_equal(federation.global_vector(), before)
        assert ledger.epsilon == 0.0 and ledger.entries[-1].refused
    else:
        assert not record.aborted and record.survivors < 10
        assert ledger.epsilon > 4.0  # recorded as it is: above the plan, never silently the planned value


def test_refuse_over_budget_needs_the_complete_graph() -> None:
    from fedsecure.protocols import ProtocolKind

    with pytest.raises(ConfigurationError) as error:
        _federation(dp=DPConfig(level=PrivacyLevel.DISTRIBUTED, delta=1e-3, target_epsilon=4.0, rounds=1,
                                refuse_over_budget=True), protocol=ProtocolKind.SECAGG_PLUS)
    assert error.value.parameter == "protocol"


def test_user_level_dp_cohorts_come_from_the_os_and_the_mean_has_a_fixed_denominator() -> None:
    dp = DPConfig(level=PrivacyLevel.CENTRAL, delta=1e-3, noise_multiplier=1.0)
    cohorts = {tuple(c.client_id for c in _federation(dp=dp, clients=20, fraction=0.5).sample_cohort(0))
               for _ in range(6)}
    assert len(cohorts) > 1  # not reproducible from the seed: unpredictable to whoever knows it
    distributed = _federation(dp=DPConfig(level=PrivacyLevel.DISTRIBUTED, delta=1e-3, noise_multiplier=1.0),
                              clients=20, fraction=0.5)
    assert all(len(distributed.sample_cohort(r)) == 10 for r in range(5))  # fixed size: no count to leak


def test_local_dp_through_opacus_reports_each_clients_epsilon() -> None:
    dp = DPConfig(level=PrivacyLevel.LOCAL, delta=1e-3, noise_multiplier=1.0, max_grad_norm=1.0)
    federation = _federation(dp=dp, clients=4)
    first = federation.run_round(0)
    second = federation.run_round(1)
    ledger = federation.ledger
    assert ledger is not None and not first.aborted
    assert 0 < first.epsilon < second.epsilon  # type: ignore[operator]
    assert all(ledger.client_epsilon(c) > 0 for c in range(4))


def test_local_dp_rounds_keep_the_users_warnings_and_drop_opacus_per_client_ones() -> None:
    from torch.utils.data import DataLoader, TensorDataset

    from fedsecure.dp import LocalPrivacy
    from fedsecure.fl import FederatedClient, Federation
    from fedsecure.protocols import ProtocolKind

    def train(model, loader, privatize) -> None:  # type: ignore[no-untyped-def]
        warnings.warn("the user's own warning", UserWarning)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        model, optimizer, loader = privatize(model, optimizer, loader)
        for x, y in loader:
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()

    def loader() -> DataLoader:  # type: ignore[type-arg]
        return DataLoader(TensorDataset(torch.randn(64, 5), torch.randint(0, 2, (64,))), batch_size=16)

    opacus_noise = ("Secure RNG turned off", "Full backward hook is firing")
    # Without fedsecure's filter, Opacus' engine and torch's hook warn on a client's first local DP-SGD step.
    with warnings.catch_warnings(record=True) as bare:
        warnings.simplefilter("always")
        train(torch.nn.Linear(5, 2), loader(), LocalPrivacy(noise_multiplier=1.0, max_grad_norm=1.0).privatizer(0))
    assert any(noise in str(w.message) for w in bare for noise in opacus_noise[1:])
    federation = Federation(model=torch.nn.Linear(5, 2), train=train,
                            clients=[FederatedClient(i, loader(), 64) for i in range(3)],
                            protocol=ProtocolKind.SECAGG, clip=1.0,
                            dp=DPConfig(level=PrivacyLevel.LOCAL, delta=1e-3, noise_multiplier=1.0, max_grad_norm=1.0))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert not federation.run_round(0).aborted
    messages = [str(w.message) for w in seen]
    assert messages.count("the user's own warning") == 3
    assert not [m for m in messages if any(noise in m for noise in opacus_noise)]
    assert not [w for w in seen if issubclass(w.category, RuntimeWarning)]


def test_dp_refusals_in_the_training_wrapper() -> None:
    from torch.utils.data import DataLoader, TensorDataset

    from fedsecure.fl import FederatedClient, Federation
    from fedsecure.protocols import ProtocolKind

    with pytest.raises(ConfigurationError) as error:  # delta >= 1/population
        _federation(dp=DPConfig(level=PrivacyLevel.CENTRAL, delta=0.2, noise_multiplier=1.0))
    assert error.value.parameter == "delta"
    with pytest.raises(ConfigurationError) as error:  # distributed DP is noise in the SecAgg ring
        _federation(dp=DPConfig(level=PrivacyLevel.DISTRIBUTED, delta=1e-3, noise_multiplier=1.0),
                    protocol=ProtocolKind.PLAINTEXT)
    assert error.value.parameter == "protocol"
    loader = DataLoader(TensorDataset(torch.randn(64, 5), torch.randint(0, 2, (64,))), batch_size=16)
    with pytest.raises(ConfigurationError) as error:  # local DP needs the privatize hook
        Federation(model=torch.nn.Linear(5, 2), train=lambda model, data: None,
                   clients=[FederatedClient(i, loader, 64) for i in range(4)], protocol=ProtocolKind.SECAGG,
                   dp=DPConfig(level=PrivacyLevel.LOCAL, delta=1e-3, noise_multiplier=1.0))
    assert error.value.parameter == "train"


def test_resume_keeps_composing_the_privacy_ledger(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from fedsecure.fl import train_federated

    for level in (PrivacyLevel.CENTRAL, PrivacyLevel.LOCAL, PrivacyLevel.DISTRIBUTED):
        dp = DPConfig(level=level, delta=1e-3, noise_multiplier=1.5)
        straight = train_federated(_federation(dp=dp, clients=4), rounds=3)
        out = tmp_path / level.value
        train_federated(_federation(dp=dp, clients=4), rounds=2, out=str(out))
        resumed = train_federated(_federation(dp=dp, clients=4), rounds=3, resume=str(out))
        assert resumed.history[-1].epsilon == pytest.approx(straight.history[-1].epsilon, rel=1e-6)
    # A resume under another plan (here more dropout, hence more noise per share) would re-account the past: refused.
    with pytest.raises(ConfigurationError, match="dropout|privacy"):
        train_federated(_federation(dp=dp, clients=4, dropout=0.5), rounds=3, resume=str(out))


def test_a_client_with_a_nan_update_still_adds_its_noise_share() -> None:
    # Whether training yields NaN depends on the data; the number of noise shares must not.
    federation = _federation(dp=DPConfig(level=PrivacyLevel.DISTRIBUTED, delta=1e-3, noise_multiplier=1.0), clients=8)
    healthy = federation.run_round(0)
    original = federation.train

    def poisoned(model, loader, privatize=None) -> None:  # type: ignore[no-untyped-def]
        original(model, loader)
        if loader is federation.clients[0].data:
            with torch.no_grad():
                model.weight.fill_(float("nan"))

    federation.train = poisoned
    sick = federation.run_round(1)
    ledger = federation.ledger
    assert ledger is not None and not sick.aborted
    assert sick.survivors == healthy.survivors == 8
    assert ledger.entries[0].contributors == ledger.entries[1].contributors == 8


def test_central_dp_releases_noise_when_no_aggregate_exists_and_builds_deterministically() -> None:
    dp = DPConfig(level=PrivacyLevel.CENTRAL, delta=1e-3, noise_multiplier=1.0)
    federations = [_federation(dp=dp, clients=12, fraction=0.35) for _ in range(5)]  # never depends on a draw
    federation = federations[0]
    for cohort in ([], federation.clients[:1]):  # Poisson draws that cannot aggregate
        federation.sample_cohort = lambda round_index, cohort=cohort: list(cohort)  # type: ignore[method-assign]
        before = federation.global_vector()
        record = federation.run_round(0)
        assert record.aborted and not np.array_equal(federation.global_vector(), before)  # noise alone
    ledger = federation.ledger
    assert ledger is not None and len(ledger.entries) == 2 and not any(e.refused for e in ledger.entries)
    assert ledger.epsilon > 0


@pytest.mark.parametrize("tamper", ["optimizer-shape", "optimizer-kind", "huge-noise", "nan-noise",
                                    "negative-contributors", "inflated-contributors", "participants-not-ids"])
def test_a_tampered_checkpoint_is_refused_whole_and_the_model_kept(tmp_path, tamper: str) -> None:  # type: ignore[no-untyped-def]
    import json

    import numpy as np

    from fedsecure.fl import ServerOptimizer, ServerOptimizerKind, train_federated

    dp = DPConfig(level=PrivacyLevel.CENTRAL, delta=1e-3, noise_multiplier=1.5)

    def federation():  # type: ignore[no-untyped-def]
        built = _federation(dp=dp, clients=4)
        built.server_optimizer = ServerOptimizer(ServerOptimizerKind.FEDAVGM)
        built.pipeline.optimizer = built.server_optimizer
        return built

    train_federated(federation(), rounds=2, out=str(tmp_path))
    path = tmp_path / "checkpoint.npz"
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    meta = json.loads(arrays["meta"].tobytes().decode())
    entry = meta["privacy"]["rounds"][-1]
    if tamper == "optimizer-shape":
        arrays["optimizer/velocity"] = np.zeros(3)
    elif tamper == "optimizer-kind":
        arrays["optimizer/m"] = np.zeros((2, 2), dtype=np.int64)
    elif tamper == "huge-noise":
        entry["noise_multiplier"] = 1e308
    elif tamper == "nan-noise":
        entry["noise_multiplier"] = float("nan")
    elif tamper == "negative-contributors":
        entry["contributors"] = -5
    elif tamper == "inflated-contributors":
        # More noise shares than participants would shrink a distributed round's epsilon.
        entry["contributors"] = len(entry["participants"]) + 1
    else:
        entry["participants"] = "ab"
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(path, **arrays)
    fresh = federation()
    before = fresh.global_vector()
    with pytest.raises(ConfigurationError) as error:
        fresh.restore(str(tmp_path))
    assert error.value.parameter == "resume"
    assert np.array_equal(fresh.global_vector(), before)
    assert fresh.ledger is not None and not fresh.ledger.entries
