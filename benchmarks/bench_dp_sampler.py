"""Throughput of the DP noise samplers against the float Gaussian from the same keystream, in one run.

Usage::

    python benchmarks/bench_dp_sampler.py [--size 1024] [--repeats 200] [--json FILE]

Every sampler draws from the same source (AES-256-CTR keyed from the OS). The baseline is
:func:`fedsecure.dp.gaussian`, Box-Muller floats from that keystream, which costs little more than the keystream
itself; the exact discrete Gaussian (Canonne, Kamath and Steinke) and Skellam (two Poisson draws) are reported as
their time per draw and the ratio to the baseline. ``--size`` draws per call is one client's update in a
distributed-DP round (digits-writers: 1,024 padded coordinates).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from bench_secagg import machine  # noqa: E402

from fedsecure.dp import RandomSource, discrete_gaussian, gaussian, skellam  # noqa: E402


def _per_draw(sample: Callable[[], Any], size: int, repeats: int) -> float:
    sample()  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        sample()
    return (time.perf_counter() - started) / (repeats * size)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--json", help="write the records here")
    args = parser.parse_args(argv)
    source = RandomSource()
    baseline = _per_draw(lambda: gaussian(args.size, source=source), args.size, args.repeats)
    rows = []
    for variance in (10, 1_000, 1_000_000, 50_000_000):
        for name, sampler in (("discrete gaussian", discrete_gaussian), ("skellam", skellam)):
            seconds = _per_draw(lambda: sampler(variance, args.size, source=source), args.size, args.repeats)
            rows.append({"sampler": name, "variance": variance, "ns_per_draw": seconds * 1e9,
                         "ratio_to_float_gaussian": seconds / baseline})
    print(f"float Gaussian (Box-Muller on the keystream): {baseline * 1e9:.0f} ns per draw")
    print("| sampler | variance | ns per draw | x float Gaussian |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['sampler']} | {row['variance']:,} | {row['ns_per_draw']:.0f} | "
              f"{row['ratio_to_float_gaussian']:.1f}x |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"machine": machine(), "size": args.size, "repeats": args.repeats,
                       "float_gaussian_ns_per_draw": baseline * 1e9, "rows": rows}, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
