"""secaggexample: the ServerApp. The user's strategy is unchanged; fedsecure's workflow aggregates securely."""

from __future__ import annotations

from typing import Any

from flwr.common import Metrics, ndarrays_to_parameters
from flwr.server import LegacyContext, ServerApp, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow

from fedsecure.flower import SecureAggregationWorkflow
from secaggexample.task import Net, get_weights

DEFAULTS: dict[str, Any] = {"num-server-rounds": 5, "protocol": "secagg+", "clip": 5.0}
#: Every round's aggregated accuracy, for whoever runs the app in-process (the example's test reads it).
HISTORY: list[Any] = []


def weighted_average(metrics: list[tuple[int, Metrics]]) -> Metrics:
    total = sum(count for count, _ in metrics)
    return {"accuracy": sum(count * float(m["accuracy"]) for count, m in metrics) / total}


app = ServerApp()


@app.main()
def main(grid: Any, context: Any) -> None:
    strategy = FedAvg(fraction_fit=1.0, fraction_evaluate=1.0, min_available_clients=5,
                      evaluate_metrics_aggregation_fn=weighted_average,
                      initial_parameters=ndarrays_to_parameters(get_weights(Net())))
    settings = DEFAULTS | dict(context.run_config)  # `flwr run` passes pyproject.toml's config; run_simulation none
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=int(settings["num-server-rounds"])),
                           strategy=strategy)
    # Flower's SecAgg+ would be `SecAggPlusWorkflow(num_shares=..., reconstruction_threshold=...)`.
    workflow = DefaultWorkflow(fit_workflow=SecureAggregationWorkflow(protocol=str(settings["protocol"]),
                                                                      clip=float(settings["clip"])))
    workflow(grid, legacy)
    HISTORY.append(legacy.history)
