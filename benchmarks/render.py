"""Render benchmark JSON results into the tables of benchmarks/README.md (never typed by hand).

Usage::

    python benchmarks/render.py benchmarks/results/secagg.json benchmarks/results/aborts.json \
        benchmarks/results/train.json > benchmarks/RESULTS.md
"""

from __future__ import annotations

import json
import sys
from typing import Any


def _machine(machine: dict[str, Any]) -> str:
    return (f"Machine: {machine['cpu']}, {machine['cores']} cores; Python {machine['python']}, numpy "
            f"{machine['numpy']}, cryptography {machine['cryptography']}, fedsecure {machine['fedsecure']} (commit {machine.get('commit') or 'unrecorded'}); "
            f"run {machine['date']}.")


def grid_table(records: list[dict[str, Any]]) -> str:
    lines = [
        "| protocol | n | d | dropout | k | t | round s | client s (median) | server s | bytes/param | "
        "server peak MiB | mask / keystream | mask / per-key keystream | correct |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in records:
        memory = f"{r['server_peak_mib']:.1f}" if "server_peak_mib" in r else ""
        per_key = f"{r['mask_s'] / r['keystream_per_key_s']:.2f}" if "keystream_per_key_s" in r else ""
        status = "aborted" if r["aborted"] else ("yes" if r["correct"] else "NO")
        lines.append(
            f"| {r['protocol']} | {r['clients']} | {r['dim']} | {r['dropout']} | {r['degree']} | {r['threshold']} | "
            f"{r['round_s']:.3f} | {r['client_s']:.4f} | {r['server_s']:.3f} | {r['bytes_per_param']:.3f} | "
            f"{memory} | {r['mask_ratio']:.2f} | {per_key} | {status} |")
    return "\n".join(lines)


def train_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| protocol | round ms (median) | aggregation ms (median) | round / plaintext "
             "| aggregation adds to a round | final accuracy |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        added = f"{100 * r['added_fraction']:.1f}%" if "added_fraction" in r else "n/a"
        lines.append(f"| {r['protocol']} | {1e3 * r['round_s']:.1f} | {1e3 * r['aggregation_s']:.1f} | "
                     f"{r['ratio_to_plaintext']:.3f} | {added} | {100 * r['final_accuracy']:.1f}% |")
    return "\n".join(lines)


def aborts_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| dropout model | rounds | n | k | t | aborted rounds | wrong sums |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['dropout_model']} | {r['rounds']} | {r['clients']} | {r['degree']} | {r['threshold']} | "
                     f"{r['aborted']} | {r['wrong_sums']} |")
    return "\n".join(lines)


def paillier_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| key bits | ring bits | slots x bits | ciphertexts | encrypt s | phe per value s (extrapolated) "
             "| speed-up | bytes/param (phe) | decrypt aggregate s | phe decrypt s | exact |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(
            f"| {r['key_bits']} | {r['ring_bits']} | {r['slots']} x {r['slot_bits']} | {r['ciphertexts']} | "
            f"{r['encrypt_s']:.2f} | {r['phe_encrypt_extrapolated_s']:.0f} | {r['speedup_encrypt_vs_phe']:.0f}x | "
            f"{r['bytes_per_param']:.2f} ({r['phe_bytes_per_param']:.0f}) | {r['decrypt_aggregate_s']:.2f} | "
            f"{r['phe_decrypt_extrapolated_s']:.0f} | {r['exact']} |")
    threshold = [r for r in rows if "deal_s" in r]
    if threshold:
        lines += ["", "| key bits | dealing s (3 runs) | t of n | one partial decryption s | combining s | exact |",
                  "|---:|---|---:|---:|---:|---|"]
        for r in threshold:
            lines.append(f"| {r['key_bits']} | {', '.join(f'{s:.1f}' for s in r['deal_s'])} | "
                         f"{r['decryption_threshold']} of {r['clients']} | {r['partial_decrypt_s']:.1f} | "
                         f"{r['combine_s']:.1f} | {r['threshold_exact']} |")
    return "\n".join(lines)


def dp_table(data: dict[str, Any]) -> str:
    lines = [f"cnn-digits, target epsilon {data['epsilon']:g}, delta {data['delta']:g}, {data['rounds']} rounds, "
             f"clip {data['clip']:g}, 20% dropout; accuracy is the mean over seeds, epsilon the largest. Epsilon is "
             "the ledger's, from the survivors actually summed, except for the replace-one central row, whose "
             "ledger shows the add/remove epsilon of twice the noise. Central DP-FedAvg alone is accounted for "
             "add/remove neighbours; distributed DP for replace-one (twice the sensitivity).", "",
             "| clients | configuration | accuracy | epsilon | seeds |", "|---:|---|---:|---:|---:|"]
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for r in data["dp_records"]:
        groups.setdefault((r["clients"], r["config"]), []).append(r)
    for (clients, name), rows in groups.items():
        accuracy = sum(r["final_accuracy"] for r in rows) / len(rows)
        epsilons = [r["epsilon"] for r in rows if r["epsilon"] is not None]
        epsilon = f"{max(epsilons):.3f}" if epsilons else "n/a"
        lines.append(f"| {clients} | {name} | {100 * accuracy:.1f}% | {epsilon} | {len(rows)} |")
    return "\n".join(lines)


def main(paths: list[str]) -> None:
    for path in paths:
        with open(path) as handle:
            data = json.load(handle)
        print(f"### `{path}`\n\n{_machine(data['machine'])}\n")
        if "dp_records" in data:
            print(dp_table(data) + "\n")
        elif "example" in data:
            print(train_table(data["records"]) + "\n")
            if "secagg_crypto_floor_s" in data:
                floor = data["secagg_crypto_floor_s"]
                parts = ", ".join(f"{name} {1e3 * seconds:.2f} ms" for name, seconds in floor.items())
                print(f"Cryptographic floor of one SecAgg round at these settings: {1e3 * sum(floor.values()):.1f} ms, "
                      f"{100 * data['floor_fraction_of_round']:.1f}% of a plaintext round ({parts}).\n")
        elif data.get("records") and "key_bits" in data["records"][0]:
            print(paillier_table(data["records"]) + "\n")
        elif "records" in data:
            print(grid_table(data["records"]) + "\n")
        if "aborts" in data:
            print(aborts_table(data["aborts"]) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
