"""The drop-in against Flower's own SecAgg+ and plaintext FedAvg, in the same run, in Flower's simulation engine.

Usage::

    python benchmarks/bench_flower_dropin.py [--clients 5] [--rounds 3] [--model cnn|step] [--json FILE]

One Flower app, run three ways: Flower's default fit workflow (plaintext), Flower's ``SecAggPlusWorkflow`` with
``secaggplus_mod`` (every client a share holder, reconstruction threshold as fedsecure's threat model sets it),
and fedsecure's ``SecureAggregationWorkflow`` with ``secure_aggregation_mod`` (its default 64-bit ring, and a
32-bit ring). The user's NumPyClient trains
Flower's secure-aggregation example's CNN (62,006 float32 parameters: two convolutions and three dense layers on
32x32 RGB images; here scikit-learn's bundled digits, upscaled, so nothing is downloaded) for one local epoch
(``--model step`` adds a fixed random step to 62,006 parameters instead, to time aggregation alone), and a FedAvg
strategy aggregates.

Measured, per system: each round's fit workflow (the strategy's selection, the clients' training and the
aggregation: a round's wall time after Flower's own bookkeeping); the bytes each client uploads per round (every
reply as Flower serialises it, metadata included); and the final parameters against plaintext FedAvg's.

Then one client drops at each stage of a live round (its ClientApp raises from that stage on, so the server gets
an error reply in place of its message): the fedsecure round must complete and equal plaintext FedAvg over the
clients whose input reached the sum; whether Flower's SecAgg+ completes is reported as it happens.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from typing import Any

import numpy as np

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from bench_secagg import machine  # noqa: E402

#: "partition:stage" — the client of that partition drops from that stage (0-3) on. Read by the ClientApps, which
#: run in Ray workers started from this process.
DROP = "FEDSECURE_BENCH_DROP"
FEDSECURE_STAGES = ("advertise-keys", "share-keys", "masked-input", "unmasking")
FLOWER_STAGES = ("setup", "share_keys", "collect_masked_vectors", "unmask")
PARAMETERS = 62_006


def _stage_index(message: Any) -> int | None:
    """The secure-aggregation stage (0-3) a message belongs to; 0 for a plain train message; None otherwise."""
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key

    records = message.content.config_records
    if "fedsecure" in records:
        label = str(records["fedsecure"].get("stage", ""))
        return FEDSECURE_STAGES.index(label) if label in FEDSECURE_STAGES else None
    if RECORD_KEY_CONFIGS in records:
        stage = str(records[RECORD_KEY_CONFIGS].get(Key.STAGE, ""))
        return FLOWER_STAGES.index(stage) if stage in FLOWER_STAGES else None
    return 0 if message.metadata.message_type == "train" else None


def drop_mod(message: Any, context: Any, call_next: Any) -> Any:
    """A ClientApp mod that makes one client drop from one stage on (it raises, as a crashed ClientApp does)."""
    plan = os.environ.get(DROP, "")
    if plan:
        partition, stage = (int(part) for part in plan.split(":"))
        index = _stage_index(message)
        if int(context.node_config["partition-id"]) == partition and index is not None and index >= stage:
            raise RuntimeError(f"client {partition} dropped at stage {index}")
    return call_next(message, context)


class CountingGrid:
    """The ServerApp's grid, counting the serialised bytes of every message each node sends and receives.

    It measures at the boundary each workflow uses (``send_and_receive`` for Flower's, ``push``/``pull`` for
    fedsecure's) and changes nothing else: polling and deadlines stay the wrapped grid's.
    """

    def __init__(self, grid: Any) -> None:
        self._grid = grid
        self.up: dict[int, int] = defaultdict(int)
        self.down: dict[int, int] = defaultdict(int)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    @property
    def run(self) -> Any:
        return self._grid.run

    @staticmethod
    def _size(message: Any) -> int:
        from flwr.common.serde import message_to_proto

        return len(message_to_proto(message).SerializeToString())

    def _sent(self, messages: list[Any]) -> None:
        for message in messages:
            self.down[message.metadata.dst_node_id] += self._size(message)

    def _received(self, replies: list[Any]) -> None:
        for reply in replies:
            if not reply.has_error():
                self.up[reply.metadata.src_node_id] += self._size(reply)

    def push_messages(self, messages: Any) -> Any:
        messages = list(messages)
        self._sent(messages)
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Any) -> Any:
        replies = list(self._grid.pull_messages(message_ids))
        self._received(replies)
        return replies

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> Any:
        messages = list(messages)
        self._sent(messages)
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        self._received(replies)
        return replies


def _images(partition: int, partitions: int) -> tuple[Any, Any]:
    """This node's share of scikit-learn's digits as 32x32 RGB images (upscaled 4x, grey in three channels)."""
    import torch
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.kron(digits.images / 16.0, np.ones((4, 4)))[:, None].repeat(3, axis=1).astype(np.float32)
    part = np.array_split(np.random.default_rng(0).permutation(len(images)), partitions)[partition]  # noqa: csprng-ok (data split)
    return torch.from_numpy(images[part]), torch.from_numpy(digits.target[part])


def _net() -> Any:
    from torch import nn

    class Net(nn.Module):  # Flower's secure-aggregation example's CNN: 62,006 parameters
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.pool, self.conv2 = nn.Conv2d(3, 6, 5), nn.MaxPool2d(2, 2), nn.Conv2d(6, 16, 5)
            self.fc1, self.fc2, self.fc3 = nn.Linear(16 * 5 * 5, 120), nn.Linear(120, 84), nn.Linear(84, 10)

        def forward(self, x: Any) -> Any:
            x = self.pool(nn.functional.relu(self.conv1(x)))
            x = self.pool(nn.functional.relu(self.conv2(x)))
            x = nn.functional.relu(self.fc1(x.flatten(1)))
            return self.fc3(nn.functional.relu(self.fc2(x)))

    return Net()


def run(kind: str, clients: int, rounds: int, model: str, drop: str = "") -> dict[str, Any]:
    import torch
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
                return [parameters[0] + rng.uniform(-0.01, 0.01, PARAMETERS).astype(np.float32)], 10 + partition, {}

        class CNNClient(NumPyClient):
            def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[list[np.ndarray], int, dict]:
                torch.manual_seed(partition)
                net = _net()
                net.load_state_dict({k: torch.from_numpy(v) for k, v in zip(net.state_dict(), parameters)})
                x, y = _images(partition, clients)
                optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
                for start in range(0, len(y), 32):
                    optimizer.zero_grad()
                    torch.nn.functional.cross_entropy(net(x[start:start + 32]), y[start:start + 32]).backward()
                    optimizer.step()
                return [v.detach().numpy().copy() for v in net.state_dict().values()], len(y), {}

        return (CNNClient() if model == "cnn" else StepClient()).to_client()

    threshold = complete_graph_parameters(clients, ThreatModel()).threshold
    fits: list[float] = []
    finals: list[list[np.ndarray]] = []
    completed: list[int] = []
    grids: list[CountingGrid] = []
    uploads: list[float] = []

    def timed(workflow: Any) -> Any:
        def call(grid: Any, context: Any) -> None:
            counting = CountingGrid(grid)
            grids.append(counting)
            started = time.perf_counter()
            workflow(counting, context)
            fits.append(time.perf_counter() - started)
            senders = [n for n, b in counting.up.items() if b]
            uploads.append(float(np.mean([counting.up[n] for n in senders])) if senders else 0.0)
        return call

    class Keeping(FedAvg):  # type: ignore[misc]
        def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
            aggregated = super().aggregate_fit(server_round, results, failures)
            if aggregated[0] is not None:
                finals.append(parameters_to_ndarrays(aggregated[0]))
                completed.append(server_round)
            return aggregated

    torch.manual_seed(0)  # The same initial model in every run, so runs compare.
    initial = ([v.detach().numpy() for v in _net().state_dict().values()] if model == "cnn"
               else [np.zeros(PARAMETERS, dtype=np.float32)])
    assert sum(a.size for a in initial) == PARAMETERS
    fit_workflow = {"plaintext": default_fit_workflow,
                    "flower-secagg+": SecAggPlusWorkflow(num_shares=clients, reconstruction_threshold=threshold,
                                                         max_weight=1000, timeout=30.0),
                    "fedsecure-secagg+": SecureAggregationWorkflow(clip=100.0, max_examples=1000,
                                                                   stage_timeout=30.0),
                    "fedsecure-secagg+-32": SecureAggregationWorkflow(clip=100.0, max_examples=1000, ring_bits=32,
                                                                      stage_timeout=30.0)}[kind]
    server = ServerApp()

    @server.main()
    def main(grid: Any, context: Any) -> None:
        strategy = Keeping(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=clients,
                           min_available_clients=clients, initial_parameters=ndarrays_to_parameters(initial))
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=rounds), strategy=strategy)
        DefaultWorkflow(fit_workflow=timed(fit_workflow))(grid, legacy)

    mods = [] if kind == "plaintext" else [secaggplus_mod] if kind == "flower-secagg+" else [secure_aggregation_mod]
    os.environ[DROP] = drop
    try:
        run_simulation(server_app=server, client_app=ClientApp(client_fn=client_fn, mods=[drop_mod, *mods]),
                       num_supernodes=clients,
                       backend_config={"client_resources": {"num_cpus": 1}, "init_args": {"num_cpus": 2}})
    finally:
        os.environ.pop(DROP, None)
    return {"kind": kind, "fit_seconds": fits, "median_fit_s": statistics.median(fits[1:] or fits),
            "bytes_up_per_client": uploads, "completed_rounds": completed,
            "final": finals[-1] if finals else None}


def _error(got: list[np.ndarray] | None, want: list[np.ndarray] | None) -> float | None:
    if got is None or want is None:
        return None
    return float(max(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))) for a, b in zip(got, want)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", choices=["cnn", "step"], default="cnn")
    parser.add_argument("--no-dropouts", action="store_true", help="skip the dropout-at-every-stage runs")
    parser.add_argument("--json")
    args = parser.parse_args()
    kinds = ("plaintext", "flower-secagg+", "fedsecure-secagg+", "fedsecure-secagg+-32")
    records = {kind: run(kind, args.clients, args.rounds, args.model) for kind in kinds}
    plain = records["plaintext"]["final"]
    summary: dict[str, Any] = {}
    for kind, record in records.items():
        up = record["bytes_up_per_client"]
        summary[kind] = {"fit_seconds": record["fit_seconds"], "median_fit_s": record["median_fit_s"],
                         "bytes_up_per_client": up, "bytes_up_per_param": statistics.median(up) / PARAMETERS,
                         "max_abs_error_vs_plaintext": _error(record["final"], plain)}
        print(f"{kind:18s} median fit round {record['median_fit_s']:.2f} s (rounds: "
              f"{', '.join(f'{s:.2f}' for s in record['fit_seconds'])}), "
              f"{summary[kind]['bytes_up_per_param']:.2f} B/param up, "
              f"max |error| vs plaintext {summary[kind]['max_abs_error_vs_plaintext']:.2e}", flush=True)
    ratios = {}
    for kind in ("fedsecure-secagg+", "fedsecure-secagg+-32"):
        ratios[kind] = {"time": summary[kind]["median_fit_s"] / summary["flower-secagg+"]["median_fit_s"],
                        "bytes_up": summary[kind]["bytes_up_per_param"] / summary["flower-secagg+"]["bytes_up_per_param"]}
        print(f"{kind} / Flower SecAgg+: {ratios[kind]['time']:.2f}x time per fit round, "
              f"{ratios[kind]['bytes_up']:.2f}x bytes up", flush=True)

    dropouts: list[dict[str, Any]] = []
    if not args.no_dropouts:
        victim = args.clients // 2
        # Plaintext FedAvg with the victim left out: what a round it dropped from before its input left must equal.
        without = run("plaintext", args.clients, 1, args.model, drop=f"{victim}:0")["final"]
        with_all = run("plaintext", args.clients, 1, args.model)["final"]
        for stage in range(4):
            row: dict[str, Any] = {"stage": stage, "fedsecure_stage": FEDSECURE_STAGES[stage],
                                   "flower_stage": FLOWER_STAGES[stage]}
            for kind in ("flower-secagg+", "fedsecure-secagg+"):
                record = run(kind, args.clients, 1, args.model, drop=f"{victim}:{stage}")
                # A client that drops at unmasking already sent its masked input: it is in the sum.
                want = with_all if stage == 3 else without
                row[kind] = {"completed": bool(record["completed_rounds"]),
                             "max_abs_error_vs_plaintext": _error(record["final"], want),
                             "seconds": record["fit_seconds"][0] if record["fit_seconds"] else None}
            dropouts.append(row)
            print(f"client {victim} drops at stage {stage} ({FEDSECURE_STAGES[stage]} / {FLOWER_STAGES[stage]}): "
                  + "; ".join(f"{kind}: " + ("completed, max |error| "
                                             f"{row[kind]['max_abs_error_vs_plaintext']:.2e}"
                                             if row[kind]["completed"] else "did not complete")
                              for kind in ("flower-secagg+", "fedsecure-secagg+")), flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"machine": machine(), "clients": args.clients, "rounds": args.rounds, "model": args.model,
                       "parameters": PARAMETERS, "results": summary, "over_flower_secaggplus": ratios,
                       "dropouts": dropouts}, handle, indent=1)


if __name__ == "__main__":
    main()
