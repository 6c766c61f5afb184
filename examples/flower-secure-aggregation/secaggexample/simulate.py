"""Run the app in Flower's simulation engine from Python: `python -m secaggexample.simulate` in this directory."""

from __future__ import annotations

from flwr.simulation import run_simulation

from secaggexample.client_app import app as client_app
from secaggexample.server_app import HISTORY, app as server_app


def run(supernodes: int = 5) -> object:
    """The app with its defaults (5 rounds of SecAgg+); returns Flower's History."""
    run_simulation(server_app=server_app, client_app=client_app, num_supernodes=supernodes,
                   backend_config={"client_resources": {"num_cpus": 1}, "init_args": {"num_cpus": 2}})
    return HISTORY[-1]


if __name__ == "__main__":
    print(run())
