"""The drop-in for people's own Flower apps, through Flower's own simulation engine: a user's NumPyClient and
FedAvg/FedAdam strategy, with fedsecure swapped in where Flower's SecAgg+ would be (two lines), give the result
plaintext FedAvg gives, to quantisation."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest

pytest.importorskip("ray")
flwr = pytest.importorskip("flwr")

DIMENSION = (6, 3)
CLIENTS = 5


def _data(partition: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(partition)  # noqa: csprng-ok (simulated data)
    x = rng.normal(size=(20 + 5 * partition, DIMENSION[0]))
    return x, x @ np.arange(DIMENSION[0] * DIMENSION[1]).reshape(DIMENSION) / 10


#: "round:partition,..." pairs whose fit raises, the same in the plaintext and the secure run. An environment
#: variable, since Flower's simulation engine runs the clients in Ray worker processes started from this one.
FAILING = "FEDSECURE_TEST_FAILING_FITS"


def _failing() -> set[tuple[int, int]]:
    pairs = [p.split(":") for p in os.environ.get(FAILING, "").split(",") if p]
    return {(int(r), int(c)) for r, c in pairs}


def _client_fn(context: Any) -> Any:
    from flwr.client import NumPyClient

    partition = int(context.node_config["partition-id"])
    x, y = _data(partition)

    class LinearClient(NumPyClient):  # a user's own client: one gradient step of least squares, float32 model
        def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[list[np.ndarray], int, dict]:
            if (int(config.get("server_round", 0)), partition) in _failing():
                raise RuntimeError(f"partition {partition} ran out of data")
            weights, bias = parameters
            error = x @ weights + bias - y
            weights = weights - 0.05 * (x.T @ error) / len(x)
            bias = bias - 0.05 * error.mean(axis=0)
            return [weights.astype(np.float32), bias.astype(np.float32)], len(x), {"loss": float((error ** 2).mean())}

    return LinearClient().to_client()


def _run(secure: bool, strategy_name: str = "fedavg") -> tuple[list[np.ndarray], list[Any], Any]:
    from flwr.client import ClientApp
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server import LegacyContext, ServerApp, ServerConfig
    from flwr.server.strategy import FedAdam, FedAvg
    from flwr.server.workflow import DefaultWorkflow
    from flwr.simulation import run_simulation

    from fedsecure.flower import SecureAggregationWorkflow, secure_aggregation_mod

    initial = ndarrays_to_parameters([np.zeros(DIMENSION, dtype=np.float32), np.zeros(DIMENSION[1], np.float32)])
    metrics: list[Any] = []
    kept: list[Any] = []

    def average(results: list[tuple[int, dict]]) -> dict:
        metrics.append(results)
        return {"loss": sum(n * m["loss"] for n, m in results) / sum(n for n, _ in results)}

    common = dict(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=CLIENTS, min_available_clients=CLIENTS,
                  initial_parameters=initial, fit_metrics_aggregation_fn=average,
                  on_fit_config_fn=lambda server_round: {"server_round": server_round})
    base = FedAvg if strategy_name == "fedavg" else FedAdam

    class Keeping(base):  # type: ignore[misc, valid-type]
        def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
            aggregated = super().aggregate_fit(server_round, results, failures)
            if aggregated[0] is not None:
                kept.append(parameters_to_ndarrays(aggregated[0]))
            return aggregated

    strategy = Keeping(**common) if strategy_name == "fedavg" else Keeping(**common, eta=0.1)
    workflow = SecureAggregationWorkflow(protocol="secagg+", clip=100.0, stage_timeout=30.0)
    server = ServerApp()

    @server.main()
    def main(grid: Any, context: Any) -> None:  # Flower's own secure-aggregation example, fedsecure swapped in
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=2), strategy=strategy)
        DefaultWorkflow(fit_workflow=workflow if secure else None)(grid, legacy)

    client = ClientApp(client_fn=_client_fn, mods=[secure_aggregation_mod] if secure else [])
    run_simulation(server_app=server, client_app=client, num_supernodes=CLIENTS,
                   backend_config={"client_resources": {"num_cpus": 1}, "init_args": {"num_cpus": 2}})
    return kept[-1], metrics, workflow


@pytest.mark.parametrize("strategy", ["fedavg", pytest.param("fedadam", marks=pytest.mark.slow)])
def test_a_users_flower_app_with_fedsecure_matches_plaintext(strategy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # In round 2 one client's own fit raises: Flower's FedAvg goes on with the others, and so does the secure
    # round, which reports that client's error with its message.
    monkeypatch.setenv(FAILING, "2:3")
    plain, plain_metrics, _ = _run(False, strategy)
    if strategy == "fedavg":
        assert plain[0].dtype == np.float32
    secure, secure_metrics, workflow = _run(True, strategy)
    assert [s.aggregated for s in workflow.summaries] == [True, True]
    assert [len(s.survivors) for s in workflow.summaries] == [CLIENTS, CLIENTS - 1]
    (reason,) = workflow.summaries[1].dropped.values()
    assert "partition 3 ran out of data" in reason
    for a, b in zip(plain, secure):
        assert a.dtype == b.dtype and a.shape == b.shape  # float32 in, float32 out (FedAdam computes in float64)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    # The users' own fit metrics reached fit_metrics_aggregation_fn, with each client's example count.
    assert sorted(n for n, _ in secure_metrics[-1]) == sorted(n for n, _ in plain_metrics[-1])
    np.testing.assert_allclose(sorted(m["loss"] for _, m in secure_metrics[-1]),
                               sorted(m["loss"] for _, m in plain_metrics[-1]), rtol=1e-4)


def test_the_ported_flower_secure_aggregation_example_learns(monkeypatch: pytest.MonkeyPatch) -> None:
    # examples/flower-secure-aggregation: a user's app in Flower's layout, fedsecure swapped in, run by Flower's
    # simulation engine exactly as `python -m secaggexample.simulate` runs it.
    import sys
    from pathlib import Path

    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    monkeypatch.syspath_prepend(str(Path(__file__).parent.parent / "examples" / "flower-secure-aggregation"))
    for name in [m for m in sys.modules if m.startswith("secaggexample")]:
        monkeypatch.delitem(sys.modules, name)
    from secaggexample.simulate import run

    history = run()
    accuracy = [value for _, value in history.metrics_distributed["accuracy"]]  # type: ignore[attr-defined]
    assert len(accuracy) == 5 and accuracy[-1] >= 0.8


def test_a_round_that_cannot_aggregate_leaves_the_parameters_and_skips_the_strategy(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # Round 1: every client's fit raises, so no secure sum is possible: the strategy's aggregate_fit is not called
    # and the parameters stay as they were; round 2 goes on from them, as plaintext FedAvg does.
    monkeypatch.setenv(FAILING, ",".join(f"1:{p}" for p in range(CLIENTS)))
    with caplog.at_level("WARNING", logger="fedsecure.flower"):
        secure, _, workflow = _run(True)
    assert [s.aggregated for s in workflow.summaries] == [False, True]
    assert "could not aggregate securely" in caplog.text
    plain, _, _ = _run(False)
    for a, b in zip(plain, secure):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def _run_message_api(secure: bool) -> tuple[list[np.ndarray], Any, Any]:
    """Flower's Message API, as its quickstart apps use it: @app.train() and flwr.serverapp.strategy.FedAvg."""
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation

    from fedsecure.flower import SecureGrid, secure_aggregation_mod

    client = ClientApp(mods=[secure_aggregation_mod] if secure else [])

    @client.train()
    def train(message: Any, context: Any) -> Any:  # a user's own train function, unchanged
        x, y = _data(int(context.node_config["partition-id"]))
        weights, bias = message.content["arrays"].to_numpy_ndarrays()
        error = x @ weights + bias - y
        weights = (weights - 0.05 * (x.T @ error) / len(x)).astype(np.float32)
        bias = (bias - 0.05 * error.mean(axis=0)).astype(np.float32)
        metrics = MetricRecord({"train_loss": float((error ** 2).mean()), "num-examples": len(x)})
        return Message(RecordDict({"arrays": ArrayRecord([weights, bias]), "metrics": metrics}), reply_to=message)

    results: list[Any] = []
    grids: list[Any] = []
    server = ServerApp()

    @server.main()
    def main(grid: Any, context: Any) -> None:
        strategy = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=CLIENTS,
                          min_available_nodes=CLIENTS)
        chosen = SecureGrid(grid, clip=100.0, stage_timeout=30.0) if secure else grid
        grids.append(chosen)
        initial = ArrayRecord([np.zeros(DIMENSION, dtype=np.float32), np.zeros(DIMENSION[1], np.float32)])
        results.append(strategy.start(grid=chosen, initial_arrays=initial, num_rounds=2))

    run_simulation(server_app=server, client_app=client, num_supernodes=CLIENTS,
                   backend_config={"client_resources": {"num_cpus": 1}, "init_args": {"num_cpus": 2}})
    (result,) = results
    return result.arrays.to_numpy_ndarrays(), result, grids[0]


def test_flowers_message_api_strategies_get_secure_aggregation_through_the_grid() -> None:
    plain, plain_result, _ = _run_message_api(False)
    secure, secure_result, grid = _run_message_api(True)
    assert [s.aggregated for s in grid.summaries] == [True, True]
    for a, b in zip(plain, secure):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    # The clients' own metrics were aggregated by the strategy as usual.
    assert secure_result.train_metrics_clientapp[2]["train_loss"] == pytest.approx(
        plain_result.train_metrics_clientapp[2]["train_loss"], rel=1e-4)


@pytest.mark.slow
def test_the_message_api_quickstart_example_learns(monkeypatch: pytest.MonkeyPatch) -> None:
    # examples/quickstart-pytorch: Flower's Message API (@app.train(), flwr.serverapp.strategy.FedAvg) over
    # fedsecure's SecureGrid, run by Flower's simulation engine as `python -m pytorchexample.simulate` runs it.
    import sys
    from pathlib import Path

    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    monkeypatch.syspath_prepend(str(Path(__file__).parent.parent / "examples" / "quickstart-pytorch"))
    for name in [m for m in sys.modules if m.startswith("pytorchexample")]:
        monkeypatch.delitem(sys.modules, name)
    from pytorchexample.simulate import run

    result = run()
    assert result.evaluate_metrics_clientapp[5]["eval_acc"] >= 0.8  # type: ignore[attr-defined]
