"""The drop-in against Flower's own SecAgg+ and plaintext FedAvg, in the same run, in Flower's simulation engine.

Usage::

    python benchmarks/bench_flower_dropin.py [--clients 5] [--rounds 3] [--dim 62006] [--json FILE]

One Flower app, a user's NumPyClient whose model is ``dim`` float32 parameters (62,006 is the CNN of Flower's
secure-aggregation example) and whose fit adds a small step, and a FedAvg strategy, run three ways: Flower's
default fit workflow (plaintext), Flower's ``SecAggPlusWorkflow`` with ``secaggplus_mod`` (every client a share
holder, reconstruction threshold as fedsecure's threat model sets it), and fedsecure's
``SecureAggregationWorkflow`` with ``secure_aggregation_mod``. Each fit workflow call is timed (a round's fit,
after Flower's own round bookkeeping), and the final parameters are compared with plaintext FedAvg's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import numpy as np

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from bench_secagg import machine  # noqa: E402


def run(kind: str, clients: int, rounds: int, dim: int) -> dict[str, Any]:
    from flwr.client import ClientApp, NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server import LegacyContext, ServerApp, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.server.workflow.default_workflows import default_fit_workflow
    from flwr.simulation import run_simulation

    from fedsecure.flower import SecureAggregationWorkflow, secure_aggregation_mod
    from fedsecure.protocols import ThreatModel, complete_graph_parameters

    def client_fn(context: Any) -> Any:
        partition = int(context.node_config["partition-id"])

        class StepClient(NumPyClient):
            def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[list[np.ndarray], int, dict]:
                rng = np.random.default_rng(partition)  # noqa: csprng-ok (benchmark data)
                step = rng.uniform(-0.01, 0.01, size=dim).astype(np.float32)
                return [parameters[0] + step], 10 + partition, {}

        return StepClient().to_client()

    threshold = complete_graph_parameters(clients, ThreatModel()).threshold
    fits: list[float] = []
    finals: list[np.ndarray] = []

    def timed(workflow: Any) -> Any:
        def call(grid: Any, context: Any) -> None:
            started = time.perf_counter()
            workflow(grid, context)
            fits.append(time.perf_counter() - started)
        return call

    class Keeping(FedAvg):  # type: ignore[misc]
        def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
            aggregated = super().aggregate_fit(server_round, results, failures)
            if aggregated[0] is not None:
                finals.append(parameters_to_ndarrays(aggregated[0])[0])
            return aggregated

    fit_workflow = {"plaintext": default_fit_workflow,
                    "flower-secagg+": SecAggPlusWorkflow(num_shares=clients, reconstruction_threshold=threshold,
                                                         max_weight=1000),
                    "fedsecure-secagg+": SecureAggregationWorkflow(clip=100.0, max_examples=1000)}[kind]
    server = ServerApp()

    @server.main()
    def main(grid: Any, context: Any) -> None:
        strategy = Keeping(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=clients,
                           min_available_clients=clients,
                           initial_parameters=ndarrays_to_parameters([np.zeros(dim, dtype=np.float32)]))
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=rounds), strategy=strategy)
        DefaultWorkflow(fit_workflow=timed(fit_workflow))(grid, legacy)

    mods = {"plaintext": [], "flower-secagg+": [secaggplus_mod], "fedsecure-secagg+": [secure_aggregation_mod]}[kind]
    run_simulation(server_app=server, client_app=ClientApp(client_fn=client_fn, mods=mods), num_supernodes=clients,
                   backend_config={"client_resources": {"num_cpus": 1}, "init_args": {"num_cpus": 2}})
    return {"kind": kind, "fit_seconds": fits, "median_fit_s": statistics.median(fits[1:] or fits),
            "final": finals[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dim", type=int, default=62_006)
    parser.add_argument("--json")
    args = parser.parse_args()
    records = {kind: run(kind, args.clients, args.rounds, args.dim)
               for kind in ("plaintext", "flower-secagg+", "fedsecure-secagg+")}
    plain = records["plaintext"]["final"]
    summary = {}
    for kind, record in records.items():
        error = float(np.max(np.abs(record["final"].astype(np.float64) - plain)))
        summary[kind] = {"fit_seconds": record["fit_seconds"], "median_fit_s": record["median_fit_s"],
                         "max_abs_error_vs_plaintext": error}
        print(f"{kind:18s} median fit round {record['median_fit_s']:.2f} s (rounds: "
              f"{', '.join(f'{s:.2f}' for s in record['fit_seconds'])}), max |error| vs plaintext {error:.2e}",
              flush=True)
    ratio = summary["fedsecure-secagg+"]["median_fit_s"] / summary["flower-secagg+"]["median_fit_s"]
    print(f"fedsecure / Flower SecAgg+ per fit round: {ratio:.2f}x", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"machine": machine(), "clients": args.clients, "rounds": args.rounds, "dim": args.dim,
                       "results": summary, "fedsecure_over_flower": ratio}, handle, indent=1)


if __name__ == "__main__":
    main()
