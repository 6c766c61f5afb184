"""Merge bench_dp.py result files of one epsilon into one JSON for render.py.

Usage::

    python benchmarks/merge_dp.py OUT.json IN.json [IN.json ...]

For the "central DP-FedAvg, replace-one" rows, whose ledger shows the add/remove epsilon of twice the
noise, the merged file carries the replace-one epsilon of the calibrated noise (half the recorded multiplier).
"""

from __future__ import annotations

import json
import sys

from fedsecure.dp import gaussian_epsilon

REPLACE_ONE = "central DP-FedAvg, replace-one"


def main(out: str, paths: list[str]) -> None:
    parts = [json.load(open(path)) for path in paths]
    merged = dict(parts[0])
    merged["dp_records"] = []
    for part in parts:
        if (part["epsilon"], part["delta"], part["rounds"]) != (merged["epsilon"], merged["delta"], merged["rounds"]):
            raise SystemExit(f"cannot merge runs at different (epsilon, delta, rounds): {paths}")
        for record in part["dp_records"]:
            if record["config"] == REPLACE_ONE:
                record["epsilon"] = gaussian_epsilon(record["noise_multiplier"] / 2, 1.0, merged["rounds"],
                                                     merged["delta"])
            merged["dp_records"].append(record)
    merged["dp_records"].sort(key=lambda r: r["clients"])
    with open(out, "w") as handle:
        json.dump(merged, handle, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
