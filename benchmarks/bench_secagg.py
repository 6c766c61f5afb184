"""SecAgg / SecAgg+ benchmark (run by hand; never part of the test suite).

For each (protocol, clients n, vector length d, dropout) it runs full rounds in
one process and reports:

* ``round_s``: wall time of the whole round (every client and the server, codec included);
* ``client_s`` (median client, all stages) and ``server_s``;
* ``bytes_per_param``: bytes one surviving client uploads / d;
* ``server_peak_mib``: the server session's own peak memory (tracemalloc, attributed to
  server calls only), in a separate run so tracing does not distort the timings;
* ``mask_ratio``: a client's masking time (``apply_masks``: expand every mask with
  AES-CTR and add it) over the raw AES-256-CTR keystream time for the same number
  of bytes, both measured in the same run.

Usage::

    python benchmarks/bench_secagg.py --quick            # a minute or two
    python benchmarks/bench_secagg.py                    # the full grid of the issue (long)
    python benchmarks/bench_secagg.py --aborts 1000      # 1000 SecAgg+ rounds, n=50, 10% dropout
    python benchmarks/bench_secagg.py --json out.json    # also write every record as JSON
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
import tracemalloc
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from fedsecure.encoding import ClipMode, EncodingConfig, Quantizer, Ring
from fedsecure.protocols import ProtocolKind, RoundConfig, ServerSession, ThreatModel
from fedsecure.protocols._secagg import apply_masks
from fedsecure.bench._environment import environment
from fedsecure.bench._memory import ServerMemoryProbe
from fedsecure.runtime import DropoutSchedule, Simulator, client_stages, plaintext_ring_sum

THREAT = ThreatModel(dropout_fraction=0.1, corrupt_fraction=0.2)
FULL_GRID = dict(clients=[10, 50, 100, 500, 1000], dims=[10_000, 100_000, 1_000_000], dropouts=[0.0, 0.1, 0.3])
QUICK_GRID = dict(clients=[10, 50, 100], dims=[10_000, 100_000], dropouts=[0.0, 0.1])
# The complete graph costs n^2 mask expansions; past this much keystream per round it is skipped.
MAX_COMPLETE_GRAPH_BYTES = 60e9


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    """The machine, library versions, commit and date, as ``fedsecure bench`` records them."""
    env = environment()
    return {"cpu": env["cpu"], "cores": env["cores"], "python": env["python"], "commit": env["commit"],
            "date": env["date"], **{name: version for name, version in env["versions"].items() if version}}


def make_updates(n: int, d: int, seed: int) -> tuple[EncodingConfig, dict[int, Any]]:
    encoding = EncodingConfig.fit_scale(dimension=d, clients=n, clip=1.0, ring_bits=32,
                                        clip_mode=ClipMode.PER_COORDINATE)
    quantizer = Quantizer(encoding)
    rng = np.random.default_rng(seed)  # noqa: csprng-ok (benchmark data)
    return encoding, {c: quantizer.encode(rng.uniform(-1, 1, d).astype(np.float64)) for c in range(n)}


def mask_ratio(d: int, keys: int, repeats: int = 5) -> dict[str, float]:
    """Time ``apply_masks`` with ``keys`` masks of length d against raw AES-CTR for the same bytes."""
    ring = Ring(32)
    values = np.zeros(d, dtype=ring.dtype)
    pair_keys = [(os.urandom(32), i % 2 == 0) for i in range(keys - 1)]
    self_key = os.urandom(32)
    zeros = bytes(4 * d)
    buffer = bytearray(4 * d)
    masking, raw, raw_per_key = [], [], []
    for _ in range(repeats):
        started = time.perf_counter()
        apply_masks(values, ring, self_key, pair_keys)
        masking.append(time.perf_counter() - started)
        # Raw keystream: one AES-256-CTR context streaming the same number of bytes.
        encryptor = Cipher(algorithms.AES(self_key), modes.CTR(bytes(16))).encryptor()
        started = time.perf_counter()
        for _ in range(keys):
            encryptor.update_into(zeros, buffer)
        raw.append(time.perf_counter() - started)
        # The same bytes from one fresh AES-CTR context per key (the key setup any per-pair PRG pays).
        started = time.perf_counter()
        for key, _ in [(self_key, True), *pair_keys]:
            Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update_into(zeros, buffer)
        raw_per_key.append(time.perf_counter() - started)
    best_mask, best_raw = min(masking), min(raw)
    return {"mask_s": best_mask, "keystream_s": best_raw, "keystream_per_key_s": min(raw_per_key),
            "mask_ratio": best_mask / best_raw, "keystream_gbps": keys * 4 * d / best_raw / 1e9}


def run_round(protocol: ProtocolKind, n: int, d: int, dropout: float, seed: int, *,
              measure_memory: bool) -> dict[str, Any]:
    encoding, updates = make_updates(n, d, seed)
    config = RoundConfig.create(protocol=protocol, clients=range(n), encoding=encoding, threat=THREAT,
                                round_id=seed)
    rng = np.random.default_rng([seed, 1])  # noqa: csprng-ok (dropout schedule)
    schedule = DropoutSchedule.random(config.clients, dropout, protocol=protocol, rng=rng)
    probe: list[ServerMemoryProbe] = []

    def wrap(server: ServerSession) -> Any:
        probe.append(ServerMemoryProbe(server))
        return probe[0]

    if measure_memory:
        tracemalloc.start()
    started = time.perf_counter()
    report = Simulator(config, updates, schedule=schedule, wrap_server=wrap if measure_memory else None).run()
    wall = time.perf_counter() - started
    if measure_memory:
        tracemalloc.stop()
    result = report.result
    correct = False
    if result is not None:
        correct = bool(np.array_equal(plaintext_ring_sum(updates, result.survivors), result.ring_sum))
    survivors = sorted(result.survivors) if result else []
    up = statistics.mean(report.bytes_sent(c) for c in survivors) if survivors else 0.0
    record: dict[str, Any] = {
        "protocol": protocol.value, "clients": n, "dim": d, "dropout": dropout, "degree": config.degree,
        "threshold": config.threshold, "survivors": len(survivors), "aborted": report.aborted,
        "correct": correct, "round_s": wall, "client_s": report.median_client_seconds,
        "server_s": report.server_seconds, "bytes_per_param": up / d,
    }
    if measure_memory:
        record["server_peak_mib"] = probe[0].peak / 2**20
    return record


def complete_graph_too_big(protocol: ProtocolKind, n: int, d: int) -> bool:
    return protocol is ProtocolKind.SECAGG and n * n * 4 * d > MAX_COMPLETE_GRAPH_BYTES


def grid(args: argparse.Namespace) -> list[dict[str, Any]]:
    spec = QUICK_GRID if args.quick else FULL_GRID
    records = []
    for protocol in (ProtocolKind.SECAGG, ProtocolKind.SECAGG_PLUS):
        for n in spec["clients"]:
            for d in spec["dims"]:
                for dropout in spec["dropouts"]:
                    if complete_graph_too_big(protocol, n, d):
                        log(f"skip {protocol.value} n={n} d={d}: complete graph needs {n * n * 4 * d / 1e9:.0f} GB "
                            "of keystream per round")
                        continue
                    record = run_round(protocol, n, d, dropout, args.seed, measure_memory=False)
                    if dropout == spec["dropouts"][min(1, len(spec["dropouts"]) - 1)] and d == 100_000:
                        record["server_peak_mib"] = run_round(protocol, n, d, dropout, args.seed,
                                                              measure_memory=True)["server_peak_mib"]
                    record.update(mask_ratio(d, record["degree"]))
                    records.append(record)
                    log(f"{protocol.value:8} n={n:5} d={d:8} drop={dropout:.1f} k={record['degree']:4} "
                        f"round={record['round_s']:7.3f}s client={record['client_s']:.4f}s "
                        f"server={record['server_s']:.3f}s B/param={record['bytes_per_param']:.3f} "
                        f"mask/keystream={record['mask_ratio']:.2f} "
                        f"mem={record.get('server_peak_mib', float('nan')):.1f}MiB correct={record['correct']}")
    return records


def aborts(rounds: int, seed: int, *, bernoulli: bool) -> dict[str, Any]:
    """SecAgg+ for 10% dropout at n=50: count aborted rounds under 10% random dropout."""
    n, d = 50, 100
    encoding, updates = make_updates(n, d, seed)
    aborted = wrong = 0
    config = None
    for r in range(rounds):
        config = RoundConfig.create(protocol=ProtocolKind.SECAGG_PLUS, clients=range(n), encoding=encoding,
                                    threat=THREAT, round_id=r)
        rng = np.random.default_rng([seed, r])  # noqa: csprng-ok (dropout schedule)
        if bernoulli:
            # Each client drops independently with probability 0.1, at a random stage.
            dropped = [c for c in range(n) if rng.random() < 0.1]
            stages = rng.integers(0, 4, size=len(dropped))
            order = client_stages(ProtocolKind.SECAGG_PLUS)
            schedule = DropoutSchedule({c: order[int(s)] for c, s in zip(dropped, stages)})
        else:
            schedule = DropoutSchedule.random(config.clients, 0.1, protocol=ProtocolKind.SECAGG_PLUS, rng=rng)
        report = Simulator(config, updates, schedule=schedule).run()
        if report.aborted:
            aborted += 1
        else:
            wrong += not np.array_equal(plaintext_ring_sum(updates, report.result.survivors),
                                        report.result.ring_sum)
        if (r + 1) % 100 == 0:
            log(f"  {'bernoulli' if bernoulli else 'exact-10%'} rounds {r + 1}/{rounds}: aborted {aborted}")
    return {"rounds": rounds, "clients": n, "dropout_model": "bernoulli(0.1)" if bernoulli else "exactly 10%",
            "degree": config.degree if config else None, "threshold": config.threshold if config else None,
            "aborted": aborted, "wrong_sums": wrong}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small grid")
    parser.add_argument("--aborts", type=int, default=0, help="run this many SecAgg+ rounds at n=50, 10%% dropout")
    parser.add_argument("--only", help="one configuration: PROTOCOL,N,D,DROPOUT (e.g. secagg,50,100000,0)")
    parser.add_argument("--memory", action="store_true", help="with --only: measure server peak memory too")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write all records to this file")
    args = parser.parse_args()
    output: dict[str, Any] = {"machine": machine(), "threat": dataclasses.asdict(THREAT)}
    if args.only:
        name, n, d, dropout = args.only.split(",")
        protocol = ProtocolKind(name)
        record = run_round(protocol, int(n), int(d), float(dropout), args.seed, measure_memory=False)
        if args.memory:
            record["server_peak_mib"] = run_round(protocol, int(n), int(d), float(dropout), args.seed,
                                                  measure_memory=True)["server_peak_mib"]
        record.update(mask_ratio(int(d), record["degree"]))
        output["records"] = [record]
        print(json.dumps(record, indent=2))
    elif args.aborts:
        output["aborts"] = [aborts(args.aborts, args.seed, bernoulli=False),
                            aborts(args.aborts, args.seed, bernoulli=True)]
        print(json.dumps(output["aborts"], indent=2))
    else:
        output["records"] = grid(args)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(output, handle, indent=1)


if __name__ == "__main__":
    main()
