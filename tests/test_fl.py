"""The federated training layer: partitions, optimizers, parity, Opacus, aborts, resume, examples."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from fedsecure.cli import main  # noqa: E402
from fedsecure.fl import (  # noqa: E402
    FederatedClient,
    Federation,
    Partition,
    ServerOptimizer,
    ServerOptimizerKind,
    partition,
    train_federated,
)
from fedsecure.fl.examples import linear784  # noqa: E402
from fedsecure.protocols import ProtocolKind  # noqa: E402


# ---- partitions ------------------------------------------------------------------------------------
@pytest.mark.parametrize("scheme", list(Partition))
@pytest.mark.parametrize("examples,clients,alpha", [(500, 12, 0.3), (30, 20, 0.3), (60, 50, 0.01)])
def test_partitions_cover_every_example_once_and_leave_no_client_empty(
        scheme: Partition, examples: int, clients: int, alpha: float) -> None:
    labels = np.arange(examples) % 10
    parts = partition(labels, clients, scheme, seed=1, alpha=alpha)
    assert len(parts) == clients and all(p.size > 0 for p in parts)
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(labels)))


def test_dirichlet_and_shards_skew_labels_and_are_reproducible() -> None:
    labels = np.repeat(np.arange(10), 100)

    def labels_per_client(scheme: Partition, **kw: float) -> float:
        return float(np.mean([np.unique(labels[p]).size for p in partition(labels, 20, scheme, seed=3, **kw)]))

    assert labels_per_client(Partition.IID) > 9
    assert labels_per_client(Partition.DIRICHLET, alpha=0.1) < 6
    assert labels_per_client(Partition.SHARDS, shards_per_client=2) <= 2.5
    first = partition(labels, 20, Partition.DIRICHLET, seed=3, alpha=0.3)
    again = partition(labels, 20, Partition.DIRICHLET, seed=3, alpha=0.3)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))


# ---- server optimizers -----------------------------------------------------------------------------
def test_server_optimizers() -> None:
    w, delta = np.array([1.0, -2.0]), np.array([0.5, 0.25])
    np.testing.assert_allclose(ServerOptimizer(learning_rate=1.0).step(w, delta), w + delta)
    momentum = ServerOptimizer(kind=ServerOptimizerKind.FEDAVGM, learning_rate=1.0, momentum=0.5)
    first = momentum.step(w, delta)
    np.testing.assert_allclose(first, w + delta)
    np.testing.assert_allclose(momentum.step(first, delta), first + 1.5 * delta)
    adam = ServerOptimizer(kind=ServerOptimizerKind.FEDADAM, learning_rate=0.1, beta1=0.9, beta2=0.99, tau=1e-3)
    m = 0.1 * delta
    v = 0.99 * 1e-6 + 0.01 * delta**2
    np.testing.assert_allclose(adam.step(w, delta), w + 0.1 * m / (np.sqrt(v) + 1e-3))


# ---- the wrapper -------------------------------------------------------------------------------------
def _float_fedavg_round(experiment: object) -> np.ndarray:
    """One round of exact float FedAvg over the same clients, computed without fedsecure's pipeline."""
    federation = experiment.federation  # type: ignore[attr-defined]
    before = federation.global_vector()
    total, weight = np.zeros_like(before), 0
    for client in federation.sample_cohort(0):
        local = copy.deepcopy(federation.model)
        federation.train(local, client.data)
        total += client.num_examples * (federation.spec.flatten(
            {n: t for n, t in local.state_dict().items() if t.is_floating_point()}) - before)
        weight += client.num_examples
    return before + total / weight


def test_one_secure_round_matches_float_fedavg_within_the_quantisation_bound() -> None:
    secure = linear784(protocol=ProtocolKind.SECAGG_PLUS, clients=6, seed=5)
    exact = linear784(protocol=ProtocolKind.SECAGG_PLUS, clients=6, seed=5)
    expected = _float_fedavg_round(exact)
    record = secure.federation.run_round(0)
    assert not record.aborted and record.survivors == 6
    got = secure.federation.global_vector()
    # Each client's weighted update is rounded to 1/scale; the mean is off by at most n / (scale * total weight).
    federation = secure.federation
    weights = sum(c.num_examples for c in federation.clients)
    bound = 6 / (federation.pipeline.encoding(6).scale * weights)
    # Plus the rounding of storing the result in float32.
    storage = 2 * np.finfo(np.float32).eps * np.max(np.abs(expected))
    assert np.max(np.abs(got - expected)) <= bound + storage


@pytest.mark.parametrize("protocol", [ProtocolKind.PAILLIER, ProtocolKind.PAILLIER_THRESHOLD])
def test_one_paillier_round_matches_float_fedavg_within_the_quantisation_bound(protocol: ProtocolKind) -> None:
    secure = linear784(protocol=protocol, clients=4, seed=5, key_bits=512, insecure_keys=True)
    expected = _float_fedavg_round(linear784(protocol=ProtocolKind.PLAINTEXT, clients=4, seed=5))
    record = secure.federation.run_round(0)
    assert not record.aborted and record.survivors == 4
    federation = secure.federation
    bound = 4 / (federation.pipeline.encoding(4).scale * sum(c.num_examples for c in federation.clients))
    storage = 2 * np.finfo(np.float32).eps * np.max(np.abs(expected))
    assert np.max(np.abs(federation.global_vector() - expected)) <= bound + storage


def test_secure_training_matches_plaintext_accuracy_on_linear784() -> None:
    results = {}
    for protocol in (ProtocolKind.PLAINTEXT, ProtocolKind.SECAGG_PLUS):
        experiment = linear784(protocol=protocol, seed=0)
        results[protocol] = train_federated(experiment.federation, rounds=10, evaluate=experiment.evaluate)
    plain, secure = results[ProtocolKind.PLAINTEXT], results[ProtocolKind.SECAGG_PLUS]
    assert secure.final_accuracy >= 0.90
    assert abs(secure.final_accuracy - plain.final_accuracy) <= 0.005


def _tiny_federation(train, *, protocol=ProtocolKind.SECAGG, clients=4, model=None, **kw) -> Federation:
    torch.manual_seed(0)
    model = model if model is not None else torch.nn.Linear(3, 2)
    data = [(torch.randn(8, 3), torch.randint(0, 2, (8,))) for _ in range(clients)]
    return Federation(model=model, train=train, protocol=protocol,
                      clients=[FederatedClient(i, d, 8) for i, d in enumerate(data)], **kw)


def _sgd_step(model, batch) -> None:
    inputs, targets = batch
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(model(inputs), targets).backward()
    optimizer.step()


def test_an_aborted_round_leaves_the_model_exactly_as_it_was_and_training_continues(caplog) -> None:
    calls = {"n": 0}

    def poisoned_then_honest(model, batch) -> None:
        calls["n"] += 1
        _sgd_step(model, batch)
        if calls["n"] <= 4:  # Every client of round 0 produces NaN weights.
            with torch.no_grad():
                model.weight.fill_(float("nan"))

    federation = _tiny_federation(poisoned_then_honest)
    state_before = {k: v.clone() for k, v in federation.model.state_dict().items()}
    with caplog.at_level("WARNING", logger="fedsecure.fl"):
        history = train_federated(federation, rounds=1).history
    assert history[0].aborted and "every client refused" in history[0].abort_reason
    assert "aborted" in caplog.text
    assert all(torch.equal(state_before[k], v) for k, v in federation.model.state_dict().items())
    history = train_federated(federation, rounds=2, on_round=None).history
    assert not history[-1].aborted and history[-1].survivors == 4
    assert not all(torch.equal(state_before[k], v) for k, v in federation.model.state_dict().items())

    too_few = _tiny_federation(_sgd_step, dropout=0.75)
    snapshot = {k: v.clone() for k, v in too_few.model.state_dict().items()}
    record = too_few.run_round(0)
    assert record.aborted and "round aborted" in record.abort_reason
    assert all(torch.equal(snapshot[k], v) for k, v in too_few.model.state_dict().items())


def test_opacus_wrapped_clients_and_models_work_unchanged() -> None:
    opacus = pytest.importorskip("opacus")
    import warnings

    def private_train(model, batch) -> None:
        inputs, targets = batch
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(inputs, targets), batch_size=4)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            engine = opacus.PrivacyEngine()
            private_model, private_optimizer, private_loader = engine.make_private(
                module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=0.5, max_grad_norm=1.0)
        for x, y in private_loader:
            if len(y) == 0:
                continue
            private_optimizer.zero_grad()
            torch.nn.functional.cross_entropy(private_model(x), y).backward()
            private_optimizer.step()

    # The user's train function wraps its model with Opacus; the global model is plain.
    federation = _tiny_federation(private_train)
    before = federation.global_vector().copy()
    assert not federation.run_round(0).aborted
    assert not np.array_equal(federation.global_vector(), before)

    # The global model itself is an Opacus GradSampleModule: state-dict keys carry "_module.".
    from opacus import GradSampleModule

    wrapped = GradSampleModule(torch.nn.Linear(3, 2))
    assert all(k.startswith("_module.") for k in wrapped.state_dict())
    federation = _tiny_federation(_sgd_step, model=wrapped)
    assert [t.name for t in federation.spec.tensors] == ["weight", "bias"]
    before = federation.global_vector().copy()
    assert not federation.run_round(0).aborted
    assert not np.array_equal(federation.global_vector(), before)
    np.testing.assert_array_equal(wrapped._module.weight.detach().numpy().ravel(), federation.global_vector()[:6])


def test_resume_restores_model_optimizer_and_history(tmp_path) -> None:
    from fedsecure import ConfigurationError

    def build(**kw):
        return _tiny_federation(_sgd_step, server_optimizer=ServerOptimizer(
            kind=ServerOptimizerKind.FEDADAM, learning_rate=0.05), **kw)

    out = str(tmp_path / "run")
    first = build()
    train_federated(first, rounds=2, out=out)
    saved_vector = first.global_vector().copy()
    saved_state = {k: v.copy() for k, v in first.server_optimizer.state.items()}
    assert json.loads((tmp_path / "run" / "history.json").read_text())["rounds_done"] == 2

    second = build()
    assert not np.array_equal(second.global_vector(), saved_vector)
    history = second.restore(out)
    np.testing.assert_array_equal(second.global_vector(), saved_vector)
    assert saved_state.keys() == second.server_optimizer.state.keys() == {"m", "v"}
    assert all(np.array_equal(saved_state[k], second.server_optimizer.state[k]) for k in saved_state)
    assert [r.round for r in history] == [0, 1]

    third = build()
    result = train_federated(third, rounds=3, resume=out, out=out)
    assert [r.round for r in result.history] == [0, 1, 2]
    assert json.loads((tmp_path / "run" / "history.json").read_text())["rounds_done"] == 3

    # A checkpoint of another configuration is refused by name.
    with pytest.raises(ConfigurationError, match="seed"):
        build(seed=9).restore(out)
    with pytest.raises(ConfigurationError):
        build().restore(str(tmp_path / "missing"))


def test_float_buffers_are_averaged_not_optimised_and_tied_weights_count_once() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    federation = _tiny_federation(_sgd_step, model=model, server_optimizer=ServerOptimizer(
        kind=ServerOptimizerKind.FEDADAM, learning_rate=0.5))
    train_federated(federation, rounds=6)
    variance = model[1].running_var
    assert torch.isfinite(variance).all() and (variance > 0).all()
    assert federation.server_optimizer.state["m"].size == sum(p.numel() for p in model.parameters())

    tied = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 3))
    tied[1].weight = tied[0].weight
    assert _tiny_federation(_sgd_step, model=tied).spec.size == 9 + 3 + 3


def test_impossible_configurations_fail_at_once_not_every_round(capsys) -> None:
    from fedsecure import ConfigurationError

    with pytest.raises(ConfigurationError):
        _tiny_federation(_sgd_step, clients=1)
    with pytest.raises(ConfigurationError, match="max_weight"):
        _tiny_federation(_sgd_step, max_weight=4)
    # Threshold Paillier: a sampled cohort smaller than the decryption threshold could never decrypt.
    with pytest.raises(ConfigurationError, match="fraction"):
        _tiny_federation(_sgd_step, protocol=ProtocolKind.PAILLIER_THRESHOLD, clients=8, fraction=0.25,
                         key_bits=512, insecure_keys=True)
    assert main(["train", "--example", "linear784", "--clients", "1", "--rounds", "1", "--json"]) == 2


def test_client_sampling_is_reproducible() -> None:
    federation = _tiny_federation(_sgd_step, clients=10, fraction=0.3, seed=4)
    cohorts = [[c.client_id for c in federation.sample_cohort(r)] for r in range(5)]
    assert all(len(c) == 3 for c in cohorts)
    assert cohorts == [[c.client_id for c in federation.sample_cohort(r)] for r in range(5)]
    assert len({tuple(c) for c in cohorts}) > 1


# ---- the examples through the CLI ---------------------------------------------------------------------
@pytest.mark.parametrize("example,extra", [("linear784", ["--clients", "4", "--rounds", "2"]),
                                           ("logistic", ["--rounds", "30"]),
                                           ("cnn-digits", ["--clients", "6", "--rounds", "2"])])
def test_examples_run_from_the_cli(example: str, extra: list[str], tmp_path, capsys) -> None:
    plot = tmp_path / "curve.png"
    code = main(["train", "--example", example, "--protocol", "secagg+", "--json", "--plot", str(plot), *extra])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0
    assert {"rounds", "final_accuracy", "final_loss", "history", "seconds"} <= summary.keys()
    assert all({"round", "loss", "accuracy", "survivors", "aborted"} <= h.keys() for h in summary["history"])
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if example == "logistic":
        assert summary["final_loss"] < 0.25 and summary["rounds"] < 30 and "mae" in summary["metrics"]


@pytest.mark.parametrize("level", ["local", "central", "distributed"])
def test_every_dp_level_runs_from_the_cli(level: str, capsys) -> None:
    code = main(["train", "--example", "linear784", "--clients", "4", "--rounds", "2", "--dp", level,
                 "--epsilon", "8", "--delta", "1e-3", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [h["epsilon"] for h in summary["history"]] == sorted(h["epsilon"] for h in summary["history"])
    assert 0 < summary["privacy"]["epsilon"] <= 8
    assert summary["privacy"]["level"] == level and len(summary["privacy"]["rounds"]) == 2
    if level == "distributed":
        assert summary["privacy"]["distributed_plan"]["wrap_probability_bound"] <= 1e-6


def test_cnn_digits_reaches_90_percent_with_20_percent_dropout(capsys) -> None:
    code = main(["train", "--example", "cnn-digits", "--rounds", "10", "--dropout", "0.2", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["final_accuracy"] >= 0.90
    assert any(h["survivors"] < 20 for h in summary["history"])


def test_each_client_trains_a_copy_in_training_mode_even_after_an_evaluation_left_eval_mode() -> None:
    seen: list[bool] = []

    def train(model: object, data: object) -> None:
        seen.append(model.training)  # type: ignore[attr-defined]

    model = torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.Dropout(0.5))
    model.eval()  # as an evaluation function may leave it
    federation = Federation(model=model, train=train, clip=10.0,
                            clients=[FederatedClient(i, None, 1) for i in range(3)])
    train_federated(federation, rounds=1)
    assert seen == [True, True, True]
