"""Wall time of a federated round of the `linear784` example: secure aggregation against plaintext, same run.

Usage::

    python benchmarks/bench_train.py [--repeats 3] [--json benchmarks/results/train.json]

Each protocol trains the same example (10 clients, 10 rounds, same seed) ``repeats`` times, interleaved;
the figures are the median round time and the median aggregation time. Two ratios are reported:
the round ratio (secure / plaintext median round) and the *added fraction*, (secure aggregation -
plaintext aggregation) / plaintext round, which is what secure aggregation adds to a round. The
added fraction is the stable one: local training varies between runs by more than the whole
aggregation costs, so single round ratios scatter around it.
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

from fedsecure.fl import train_federated  # noqa: E402
from fedsecure.fl.examples import linear784  # noqa: E402
from fedsecure.protocols import ProtocolKind  # noqa: E402

PROTOCOLS = [ProtocolKind.PLAINTEXT, ProtocolKind.SECAGG, ProtocolKind.SECAGG_PLUS]


def _per_call(function: Any, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - started) / calls


def crypto_floor(clients: int, words: int) -> dict[str, float]:
    """The cost of the cryptography one SecAgg round over the complete graph cannot avoid, in seconds.

    Each primitive is timed here, through ``fedsecure.crypto``, and multiplied by how many times the
    protocol needs it (Bonawitz et al. 2017, section 4): two key pairs per client; two X25519
    agreements per ordered pair (share encryption and pairwise mask); one HKDF per agreement plus the
    self-mask key on both sides; one AES-GCM seal and one open per ordered pair; and n + 1 masks of
    ``words`` words per client plus the server's n self-masks. Message handling, Shamir sharing and
    encoding are left out, so the real round can only cost more. Plaintext aggregation pays the same
    encoding and nothing of this, so the floor is also a lower bound on what SecAgg adds to a round.
    """
    from fedsecure.crypto import KeyAgreementKey, MaskExpander, Purpose, derive_key, open_envelope, seal

    pairs = clients * (clients - 1)
    alice, bob = KeyAgreementKey.generate(), KeyAgreementKey.generate()
    key = alice.exchange(bob.public_bytes)
    envelope = seal(key, bytes(64), sender=0, recipient=1, round_id=0, stage=1)
    expander = MaskExpander(words)
    accumulator = np.zeros(words, dtype=np.uint32)
    costs = {
        "key generation": 2 * clients * _per_call(KeyAgreementKey.generate, 2000),
        "X25519 agreements": 2 * pairs * _per_call(lambda: alice.exchange(bob.public_bytes), 2000),
        "HKDF": (2 * pairs + 2 * clients) * _per_call(
            lambda: derive_key(key, purpose=Purpose.PAIRWISE_MASK, salt=bytes(32), round_id=0, context=(0, 1)), 5000),
        "AES-GCM envelopes": pairs * _per_call(
            lambda: open_envelope(key, seal(key, bytes(64), sender=0, recipient=1, round_id=0, stage=1),
                                  sender=0, recipient=1, round_id=0, stage=1), 5000),
        "AES-CTR masks": (clients * clients + clients) * _per_call(
            lambda: expander.fold_into(accumulator, [(key, True)]), 2000),
    }
    del envelope
    return costs


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
    plain_aggregation = statistics.median(aggregation["plaintext"])
    records = []
    for protocol in PROTOCOLS:
        median = statistics.median(rounds[protocol.value])
        aggregation_s = statistics.median(aggregation[protocol.value])
        added = (aggregation_s - plain_aggregation) / plain
        records.append({"protocol": protocol.value, "round_s": median, "aggregation_s": aggregation_s,
                        "ratio_to_plaintext": median / plain, "added_fraction": added,
                        "final_accuracy": accuracy[protocol.value]})
        print(f"{protocol.value:9} round {median * 1e3:7.1f} ms  aggregation {aggregation_s * 1e3:6.1f} ms  "
              f"x{median / plain:.3f} of plaintext  adds {100 * added:4.1f}% to a round  "
              f"accuracy {100 * accuracy[protocol.value]:.1f}%")
    experiment = linear784(protocol=ProtocolKind.SECAGG, seed=0)
    floor = crypto_floor(len(experiment.federation.clients), experiment.federation.spec.size + 1)
    floor_s = sum(floor.values())
    print(f"cryptographic floor of one SecAgg round (n={len(experiment.federation.clients)}): "
          f"{floor_s * 1e3:.1f} ms = {100 * floor_s / plain:.1f}% of a plaintext round, "
          "before any message handling (" + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in floor.items()) + ")")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"machine": machine(), "example": "linear784", "records": records,
                       "secagg_crypto_floor_s": floor, "floor_fraction_of_round": floor_s / plain},
                      handle, indent=1)


if __name__ == "__main__":
    main()
