"""Wall time of a federated round of the `linear784` example: secure aggregation against plaintext, same run.

Usage::

    python benchmarks/bench_train.py [--repeats 3] [--json benchmarks/results/train.json]

Each protocol trains the same example (10 clients, 10 rounds, same seed) ``repeats`` times, interleaved;
the figure is the median round time, and the ratio is secure / plaintext.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from bench_secagg import machine  # noqa: E402

from fedsecure.fl import train_federated  # noqa: E402
from fedsecure.fl.examples import linear784  # noqa: E402
from fedsecure.protocols import ProtocolKind  # noqa: E402

PROTOCOLS = [ProtocolKind.PLAINTEXT, ProtocolKind.SECAGG, ProtocolKind.SECAGG_PLUS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    rounds: dict[str, list[float]] = {p.value: [] for p in PROTOCOLS}
    aggregation: dict[str, list[float]] = {p.value: [] for p in PROTOCOLS}
    accuracy: dict[str, float] = {}
    for _ in range(args.repeats):
        for protocol in PROTOCOLS:
            experiment = linear784(protocol=protocol, seed=0)
            result = train_federated(experiment.federation, rounds=10, evaluate=experiment.evaluate)
            rounds[protocol.value] += [r.seconds for r in result.history]
            aggregation[protocol.value] += [r.aggregation_seconds for r in result.history]
            accuracy[protocol.value] = result.final_accuracy or 0.0
    plain = statistics.median(rounds["plaintext"])
    records = []
    for protocol in PROTOCOLS:
        median = statistics.median(rounds[protocol.value])
        records.append({"protocol": protocol.value, "round_s": median,
                        "aggregation_s": statistics.median(aggregation[protocol.value]),
                        "ratio_to_plaintext": median / plain, "final_accuracy": accuracy[protocol.value]})
        print(f"{protocol.value:9} round {median * 1e3:7.1f} ms  aggregation "
              f"{records[-1]['aggregation_s'] * 1e3:6.1f} ms  x{median / plain:.3f} of plaintext  "
              f"accuracy {100 * accuracy[protocol.value]:.1f}%")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"machine": machine(), "example": "linear784", "records": records}, handle, indent=1)


if __name__ == "__main__":
    main()
