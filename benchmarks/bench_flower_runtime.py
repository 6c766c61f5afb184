"""Per-round cost of fedsecure's SecAgg+ on Flower against Flower's own SecAgg+, over the same grid, in one run.

Usage::

    python benchmarks/bench_flower_runtime.py [--rounds 3] [--json benchmarks/results/flower_runtime.json]

Both run on :class:`~fedsecure.runtime.flower.LocalGrid`, Flower's ``Grid`` API in one process. Every message and
every node's ``Context`` (where both keep their client state between messages) goes through Flower's protobuf
serialisation, as on a SuperNode, but without the network and Flower's per-message process start. So the figures
are the protocols' own cost on Flower, not Flower's latency; that latency (3 s SuperNode polls, a process per
message) is the same for both and is measured separately by ``fedsecure flower`` (see docs/deploy-flower.md).

fedsecure runs its ServerApp transport (``FlowerTransport``) and ClientApp (``client_app``); Flower runs its
``SecAggPlusWorkflow`` in ``DefaultWorkflow`` over FedAvg and ``secaggplus_mod``, unmodified, with fedsecure's
neighbourhood size and threshold. The same vectors go to both; after one untimed warm-up round each, the median
of ``--rounds`` timed rounds is reported, with the bytes each client sends and receives per parameter (whole
Flower messages). Each round's result is checked: fedsecure's ring sum exactly, Flower's mean to its quantisation.
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

from fedsecure.encoding import ClipMode, EncodingConfig  # noqa: E402
from fedsecure.protocols import ProtocolKind, RoundConfig  # noqa: E402
from fedsecure.runtime.flower import ClientUpdate, FlowerTransport, LocalGrid, client_app, encoding_record  # noqa: E402


def run_fedsecure(vectors: np.ndarray, rounds: int) -> dict[str, Any]:
    n, d = vectors.shape
    inputs: dict[int, Any] = {}
    app = client_app(job=lambda context, client, task: ClientUpdate(vectors[client]),
                     observe=lambda context, round_id, client, encoded: inputs.__setitem__(client, encoded))
    grid = LocalGrid.create(app, [{"partition-id": i} for i in range(n)])
    transport = FlowerTransport(grid, stage_timeout=600.0, poll_interval=0.0)
    encoding = EncodingConfig.fit_scale(dimension=d, clients=n, clip=1.0, ring_bits=32,
                                        clip_mode=ClipMode.PER_COORDINATE)
    nodes = {c: 1000 + c for c in range(n)}
    seconds, up, down, exact = [], [], [], []
    config = None
    for round_index in range(rounds + 1):
        config = RoundConfig.create(protocol=ProtocolKind.SECAGG_PLUS, clients=range(n), encoding=encoding,
                                    round_id=round_index)
        grid.bytes_up.clear()
        grid.bytes_down.clear()
        started = time.perf_counter()
        report = transport.run_round(config, nodes, encoding_record(encoding) | {"task-job": "given"})
        elapsed = time.perf_counter() - started
        result = report.result
        total = sum(inputs[c].values.astype(np.uint64) for c in range(n)) % (1 << 32)
        exact.append(result is not None and bool(np.array_equal(total.astype(np.uint32), result.ring_sum)))
        if round_index:  # The first round is the warm-up.
            seconds.append(elapsed)
            up.append(statistics.mean(grid.bytes_up.values()) / d)
            down.append(statistics.mean(grid.bytes_down.values()) / d)
    assert config is not None
    return {"seconds": statistics.median(seconds), "bytes_up_per_param": statistics.median(up),
            "bytes_down_per_param": statistics.median(down), "exact_rounds": sum(exact), "rounds": rounds + 1,
            "degree": config.degree, "threshold": config.threshold}


def run_flower(vectors: np.ndarray, rounds: int, *, num_shares: int, threshold: int) -> dict[str, Any]:
    from flwr.app import Context, RecordDict

    from fedsecure.bench._flower import _quiet_flower, flower_mean, flower_parameters, secaggplus_apps

    d = vectors.shape[1]
    seconds: list[float] = []
    up: list[float] = []
    down: list[float] = []
    errors: list[float] = []
    truth = vectors.mean(axis=0)

    def timed_round(run: Any, context: Any) -> None:
        grid.bytes_up.clear()
        grid.bytes_down.clear()
        started = time.perf_counter()
        run()
        elapsed = time.perf_counter() - started
        errors.append(float(np.max(np.abs(flower_mean(flower_parameters(context)) - truth))))
        if len(errors) > 1:  # The first round is the warm-up.
            seconds.append(elapsed)
            up.append(statistics.mean(grid.bytes_up.values()) / d)
            down.append(statistics.mean(grid.bytes_down.values()) / d)

    client_app, server_app = secaggplus_apps(list(vectors), rounds + 1, num_shares=num_shares, threshold=threshold,
                                             on_round=timed_round)
    grid = LocalGrid.create(client_app, [{"partition-id": i} for i in range(vectors.shape[0])])
    with _quiet_flower():
        server_app(grid=grid, context=Context(run_id=4242, node_id=0, node_config={}, state=RecordDict(),
                                              run_config={}))
    return {"seconds": statistics.median(seconds), "bytes_up_per_param": statistics.median(up),
            "bytes_down_per_param": statistics.median(down), "max_abs_error": max(errors), "rounds": rounds + 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cases", default="5x10000,20x10000,50x10000,20x100000",
                        help="comma-separated CLIENTSxDIM cases")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    import logging

    logging.getLogger("flwr").setLevel(logging.CRITICAL)
    logging.getLogger("fedsecure").setLevel(logging.ERROR)
    results = []
    for case in args.cases.split(","):
        n, d = (int(x) for x in case.split("x"))
        rng = np.random.default_rng(0)  # noqa: csprng-ok (benchmark data)
        vectors = rng.uniform(-1, 1, size=(n, d))
        ours = run_fedsecure(vectors, args.rounds)
        theirs = run_flower(vectors, args.rounds, num_shares=ours["degree"], threshold=ours["threshold"])
        row = {"clients": n, "dim": d, "fedsecure": ours, "flower": theirs,
               "time_ratio": theirs["seconds"] / ours["seconds"],
               "bytes_up_ratio": theirs["bytes_up_per_param"] / ours["bytes_up_per_param"]}
        results.append(row)
        print(f"n={n:3d} d={d:6d} k={ours['degree']:3d} t={ours['threshold']:3d}  fedsecure {ours['seconds']:7.3f} s "
              f"{ours['bytes_up_per_param']:5.2f} B/param up (exact {ours['exact_rounds']}/{ours['rounds']})  "
              f"Flower {theirs['seconds']:7.3f} s {theirs['bytes_up_per_param']:5.2f} B/param up "
              f"(max error {theirs['max_abs_error']:.1e})  time {row['time_ratio']:.1f}x  "
              f"bytes {row['bytes_up_ratio']:.2f}x", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"machine": machine(), "rounds": args.rounds, "results": results}, handle, indent=1)


if __name__ == "__main__":
    main()
