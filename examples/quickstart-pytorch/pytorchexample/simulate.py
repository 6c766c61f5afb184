"""Run the app in Flower's simulation engine from Python: `python -m pytorchexample.simulate` in this directory."""

from __future__ import annotations

from flwr.simulation import run_simulation

from pytorchexample.client_app import app as client_app
from pytorchexample.server_app import RESULTS, app as server_app


def run(supernodes: int = 5) -> object:
    """The app with its defaults (5 rounds, secure aggregation); returns the strategy's Result."""
    run_simulation(server_app=server_app, client_app=client_app, num_supernodes=supernodes,
                   backend_config={"client_resources": {"num_cpus": 1}, "init_args": {"num_cpus": 2}})
    return RESULTS[-1]


if __name__ == "__main__":
    print(run())
