"""Privacy against utility: a digits example (cnn-digits by default) trained under each DP level at several epsilons."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["UTILITY_LEVELS", "run_utility", "plot_utility", "utility_table"]

# Each row: a label, the DP level (None for the references without DP) and the aggregation protocol.
UTILITY_LEVELS: tuple[tuple[str, str | None, str], ...] = (
    ("plaintext, no DP", None, "plaintext"),
    ("SecAgg+, no DP", None, "secagg+"),
    ("local DP-SGD (Opacus), SecAgg+", "local", "secagg+"),
    ("central DP-FedAvg, SecAgg+", "central", "secagg+"),
    ("distributed DDGauss (20-bit ring), SecAgg+", "distributed", "secagg+"),
)


def run_utility(*, clients: int, rounds: int, epsilons: Sequence[float], delta: float = 1e-5, seed: int = 0,
                example: str = "cnn-digits", clip: float = 1.0,
                log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train ``example`` (on scikit-learn's bundled digits) without DP and at each epsilon under each DP level.

    Every run trains a fresh model for ``rounds`` rounds over ``clients``
    clients with the example's own partition and dropout, every update clipped to
    L2 norm ``clip`` (user-level DP's sensitivity; the references use it too), and records
    the final test accuracy and the epsilon the privacy ledger reports (the
    accounting of what actually ran, not the plan). Needs the ``torch`` and
    ``examples`` extras.
    """
    from ..dp import Mechanism, PrivacyLevel
    from ..fl import train_federated
    from ..fl.examples import EXAMPLES, dp_config_for
    from ..protocols import ProtocolKind

    say = log or (lambda _: None)
    records = []
    for label, level, protocol in UTILITY_LEVELS:
        for epsilon in (epsilons if level is not None else [None]):
            experiment = EXAMPLES[example](protocol=ProtocolKind(protocol), clients=clients, seed=seed)
            federation = dataclasses.replace(experiment.federation, clip=clip)
            if level is not None and epsilon is not None:
                dp = dp_config_for(experiment, level=PrivacyLevel(level), epsilon=epsilon, delta=delta, rounds=rounds,
                                   mechanism=Mechanism.DDGAUSS if level == "distributed" else None, bits=20)
                federation = dataclasses.replace(federation, dp=dp)
            started = time.perf_counter()
            result = train_federated(federation, rounds=rounds, evaluate=experiment.evaluate)
            ledger = federation.ledger
            record = {"config": label, "level": level, "protocol": protocol, "target_epsilon": epsilon,
                      "epsilon": ledger.epsilon if ledger is not None else None,
                      "delta": delta if level is not None else None, "clients": clients, "rounds": rounds,
                      "seed": seed, "final_accuracy": result.final_accuracy,
                      "aborted_rounds": sum(r.aborted for r in result.history),
                      "seconds": time.perf_counter() - started}
            records.append(record)
            say(f"  utility {label:<45} epsilon {epsilon if epsilon is not None else '-':<6} accuracy "
                f"{100 * (result.final_accuracy or 0):5.1f}%  ({record['seconds']:.0f} s)")
    return {"example": example, "clients": clients, "rounds": rounds, "delta": delta, "clip": clip,
            "epsilons": list(epsilons), "records": records}


def plot_utility(utility: dict[str, Any], path: Path, *, subtitle: str) -> Path:
    """Accuracy against epsilon per DP level, with the runs without DP as horizontal reference lines."""
    from .._plotting import pyplot, save, series_style

    figure, axes = pyplot().subplots(figsize=(7.5, 4.5))
    for label, level, _ in UTILITY_LEVELS:
        rows = [r for r in utility["records"] if r["config"] == label and r["final_accuracy"] is not None]
        if not rows:
            continue
        if level is None:
            style = series_style("no dp")
            if "plaintext" in label:
                style["color"] = series_style("fedsecure plaintext")["color"]
            axes.axhline(100 * rows[0]["final_accuracy"], color=style["color"], linestyle=style["linestyle"],
                         label=label)
            continue
        rows.sort(key=lambda r: r["target_epsilon"])
        axes.plot([r["target_epsilon"] for r in rows], [100 * r["final_accuracy"] for r in rows], label=label,
                  **series_style(label))
    axes.set_xscale("log")
    axes.set_xlabel(f"epsilon (delta = {utility['delta']:g}, over {utility['rounds']} rounds)")
    axes.set_ylabel("test accuracy (%)")
    axes.set_ylim(0, 100)
    axes.set_title(f"Privacy against utility: {utility['example']}, {utility['clients']} clients\n{subtitle}",
                   fontsize=10)
    axes.grid(True, which="both", alpha=0.3)
    return save(figure, path, legend_axes=axes)


def utility_table(utility: dict[str, Any]) -> list[str]:
    """Markdown lines: final accuracy per configuration and target epsilon (and the epsilon the ledger reports)."""
    epsilons = utility["epsilons"]
    lines = [f"**Test accuracy, {utility['example']}** ({utility['clients']} clients, {utility['rounds']} rounds, "
             f"clip {utility.get('clip', '–')}, delta = {utility['delta']:g}; the ledger's epsilon in brackets):", "",
             f"| | no DP | {' | '.join(f'epsilon = {e:g}' for e in epsilons)} |", "|---|---|" + "---|" * len(epsilons)]
    for label, level, _ in UTILITY_LEVELS:
        rows = {r["target_epsilon"]: r for r in utility["records"] if r["config"] == label}

        def cell(row: dict[str, Any] | None) -> str:
            if row is None or row["final_accuracy"] is None:
                return "–"
            spent = row["epsilon"]
            suffix = f" ({spent:.2f})" if spent is not None and math.isfinite(spent) else ""
            return f"{100 * row['final_accuracy']:.1f}%{suffix}"

        if level is None:
            lines.append(f"| {label} | {cell(rows.get(None))} |" + " |" * len(epsilons))
        else:
            lines.append(f"| {label} | – | {' | '.join(cell(rows.get(e)) for e in epsilons)} |")
    lines.append("")
    return lines
