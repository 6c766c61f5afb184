"""Privacy and utility of the three DP levels on the cnn-digits example, in one run.

Usage::

    python benchmarks/bench_dp.py [--clients 20 200] [--epsilon 3] [--delta 1e-5] [--rounds 10] [--clip 1.0]
                                  [--seeds 0 1] [--json benchmarks/results/dp.json]

For each cohort size it trains ``cnn-digits`` (Dirichlet 0.3 label skew, 20% dropout) without DP under
SecAgg+, and at the same (epsilon, delta) over ``rounds`` rounds with: central DP-FedAvg (Gaussian noise
added by the aggregator after SecAgg+), distributed DP under SecAgg+ (discrete Gaussian in 20- and 16-bit
rings, Skellam in a 20-bit ring) and local DP-SGD through Opacus. It records the final test accuracy and
the epsilon the ledger actually reports (actual survivors, not the plan).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from bench_secagg import machine  # noqa: E402

from fedsecure.dp import DPConfig, Mechanism, PrivacyLevel, local_noise_multiplier  # noqa: E402
from fedsecure.fl import train_federated  # noqa: E402
from fedsecure.fl.examples import cnn_digits  # noqa: E402
from fedsecure.protocols import ProtocolKind  # noqa: E402

# Distributed DP is accounted for replace-one neighbours (twice the sensitivity); central DP-FedAvg for add/remove.
# This row gives central DP the same neighbour notion: twice the calibrated noise multiplier, whose add/remove
# epsilon equals the replace-one epsilon of the calibrated one.
REPLACE_ONE = "central DP-FedAvg, replace-one"


CONFIGS: list[tuple[str, PrivacyLevel | None, Mechanism | None, int]] = [
    ("no DP (SecAgg+)", None, None, 20),
    ("central DP-FedAvg", PrivacyLevel.CENTRAL, Mechanism.GAUSSIAN, 20),
    (REPLACE_ONE, PrivacyLevel.CENTRAL, Mechanism.GAUSSIAN, 20),
    ("distributed DDGauss, 20 bits", PrivacyLevel.DISTRIBUTED, Mechanism.DDGAUSS, 20),
    ("distributed DDGauss, 16 bits", PrivacyLevel.DISTRIBUTED, Mechanism.DDGAUSS, 16),
    ("distributed Skellam, 20 bits", PrivacyLevel.DISTRIBUTED, Mechanism.SKELLAM, 20),
    ("local DP-SGD (record level)", PrivacyLevel.LOCAL, Mechanism.GAUSSIAN, 20),
]


def run(name: str, level: PrivacyLevel | None, mechanism: Mechanism | None, bits: int, *, clients: int,
        epsilon: float, delta: float, rounds: int, clip: float, seed: int) -> dict[str, Any]:
    experiment = cnn_digits(protocol=ProtocolKind.SECAGG_PLUS, clients=clients, seed=seed)
    federation = dataclasses.replace(experiment.federation, clip=clip)
    dp = None
    if level is PrivacyLevel.LOCAL:
        # Opacus' Poisson loader samples each example with probability 1 / (batches per epoch); 2 local epochs.
        noise = max(local_noise_multiplier(target_epsilon=epsilon, delta=delta, sample_rate=1.0 / len(c.data),
                                           steps=rounds * 2 * len(c.data)) for c in federation.clients)
        dp = DPConfig(level=level, delta=delta, noise_multiplier=noise, max_grad_norm=1.0)
    elif name == REPLACE_ONE:
        noise = dataclasses.replace(federation, dp=DPConfig(level=PrivacyLevel.CENTRAL, delta=delta, target_epsilon=epsilon,
                                                            rounds=rounds)).central_noise_multiplier
        dp = DPConfig(level=PrivacyLevel.CENTRAL, delta=delta, noise_multiplier=2 * noise)
    elif level is not None:
        dp = DPConfig(level=level, delta=delta, target_epsilon=epsilon, rounds=rounds, mechanism=mechanism, bits=bits)
    started = time.perf_counter()
    federation = dataclasses.replace(federation, dp=dp)
    result = train_federated(federation, rounds=rounds, evaluate=experiment.evaluate)
    ledger = federation.ledger
    record = {"config": name, "clients": clients, "seed": seed, "final_accuracy": result.final_accuracy,
              "epsilon": ledger.epsilon if ledger else None, "delta": delta if ledger else None,
              "aborted_rounds": sum(r.aborted for r in result.history), "seconds": time.perf_counter() - started}
    if federation.distributed_plan is not None:
        plan = federation.distributed_plan
        record.update(noise_multiplier=plan.noise_multiplier, bits=plan.bits, wrap_bound=plan.wrap_bound)
    elif level is PrivacyLevel.CENTRAL:
        record["noise_multiplier"] = federation.central_noise_multiplier
    print(f"{clients:>4} clients  {name:<30} accuracy {100 * (result.final_accuracy or 0):5.1f}%  epsilon "
          f"{record['epsilon'] if record['epsilon'] is not None else float('nan'):.3f}  {record['seconds']:.0f} s",
          flush=True)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[20, 200])
    parser.add_argument("--epsilon", type=float, default=3.0)
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--clip", type=float, default=1.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--no-local", action="store_true", help="skip local DP-SGD (slow with many clients)")
    parser.add_argument("--only", nargs="+", help="run only the configurations with these names")
    parser.add_argument("--json")
    args = parser.parse_args()
    records = []
    for clients in args.clients:
        for name, level, mechanism, bits in CONFIGS:
            if (args.no_local and level is PrivacyLevel.LOCAL) or (args.only and name not in args.only):
                continue
            for seed in args.seeds:
                records.append(run(name, level, mechanism, bits, clients=clients, epsilon=args.epsilon,
                                   delta=args.delta, rounds=args.rounds, clip=args.clip, seed=seed))
    summary = {}
    for record in records:
        summary.setdefault((record["clients"], record["config"]), []).append(record["final_accuracy"])
    for (clients, name), accuracies in summary.items():
        print(f"{clients:>4} {name:<30} mean accuracy {100 * statistics.mean(accuracies):.1f}%")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"machine": machine(), "epsilon": args.epsilon, "delta": args.delta, "rounds": args.rounds,
                       "clip": args.clip, "dp_records": records}, handle, indent=1)


if __name__ == "__main__":
    main()
