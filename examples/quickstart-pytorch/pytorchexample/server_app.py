"""pytorchexample: the ServerApp, in the Message API. The strategy runs over fedsecure's SecureGrid."""

from __future__ import annotations

from typing import Any

from flwr.app import ArrayRecord
from flwr.serverapp import ServerApp
from flwr.serverapp.strategy import FedAvg

from fedsecure.flower import SecureGrid
from pytorchexample.task import Net

DEFAULTS: dict[str, Any] = {"num-server-rounds": 5, "fraction-train": 1.0, "clip": 5.0}
#: Every run's result, for whoever runs the app in-process (the example's test reads it).
RESULTS: list[Any] = []

app = ServerApp()


@app.main()
def main(grid: Any, context: Any) -> None:
    settings = DEFAULTS | dict(context.run_config)
    strategy = FedAvg(fraction_train=float(settings["fraction-train"]), min_train_nodes=5, min_available_nodes=5)
    # Without fedsecure this is `strategy.start(grid=grid, ...)`: the clients' trained models would reach the server.
    result = strategy.start(grid=SecureGrid(grid, clip=float(settings["clip"])),
                            initial_arrays=ArrayRecord(Net().state_dict()),
                            num_rounds=int(settings["num-server-rounds"]))
    RESULTS.append(result)
