"""Privacy against utility: digits-writers trained under each DP level and ring size, at several epsilons and seeds.

The task is one where user-level DP can learn: thousands of writers with about ten digits each, about a hundred
of them per round, hundreds of rounds (:func:`fedsecure.fl.examples.digits_writers`). Every configuration runs at
every seed, each run in its own process (two at a time on two cores), and the table reports the mean and the range
of the final test accuracy over the seeds beside the epsilon each run's privacy ledger reports.
"""

from __future__ import annotations

import functools
import math
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["UTILITY_LEVELS", "run_utility", "plot_utility", "utility_table"]

#: Each row: a label, the DP level (None: the reference without DP), the aggregation protocol and the ring bits of
#: distributed DP. Without DP and under central DP the server sees (or noises) the exact sum, which the secure
#: protocols compute exactly; those rows aggregate with the plaintext baseline, whose ring sum is the same. Distributed
#: DP's noise lives in the SecAgg ring, so its rows run SecAgg+.
UTILITY_LEVELS: tuple[tuple[str, str | None, str, int | None], ...] = (
    ("no DP", None, "plaintext", None),
    ("central DP (discrete Gaussian)", "central", "plaintext", None),
    ("distributed DDGauss, 24-bit ring", "distributed", "secagg+", 24),
    ("distributed DDGauss, 16-bit ring", "distributed", "secagg+", 16),
    ("distributed DDGauss, 12-bit ring", "distributed", "secagg+", 12),
    ("local DP-SGD (Opacus)", "local", "plaintext", None),
)
#: The levels a run includes unless asked otherwise. Local DP-SGD is record-level (one example, not one writer)
#: and costs an Opacus engine per client per round; it runs when asked for with ``levels``.
DEFAULT_LEVELS = ("none", "central", "distributed")
#: How long a run of each level takes, relative to one under central DP (digits-writers, measured on 2 cores): the
#: order runs start in.
_RELATIVE_COST = {"local": 8.0, "distributed": 4.5, "central": 1.0, None: 1.0}


@functools.lru_cache(maxsize=4)
def _writers(clients: int, seed: int) -> Any:
    """The writers of a seed, generated once per worker process: every configuration of a seed trains on the same
    ones (a few seconds to generate; up to four seeds' kept, about 13 MB each at 5,000 writers)."""
    from ..fl import make_digits_writers

    return make_digits_writers(writers=clients, seed=seed)


def _one_run(job: dict[str, Any]) -> dict[str, Any]:
    """One training run, in a worker process (one torch thread: two runs share two cores without contention)."""
    import dataclasses
    import logging

    import torch

    from .._errors import ConfigurationError
    from ..dp import Mechanism, PrivacyLevel
    from ..fl import train_federated
    from ..fl.examples import EXAMPLES, dp_config_for
    from ..protocols import ProtocolKind

    torch.set_num_threads(1)
    logging.getLogger("fedsecure").setLevel(logging.ERROR)  # clipping is the point here; no per-run warnings
    options = dict(job["options"])
    if job["example"] == "digits-writers":
        options["data"] = _writers(job["clients"], job["seed"])
    experiment = EXAMPLES[job["example"]](protocol=ProtocolKind(job["protocol"]), clients=job["clients"],
                                          seed=job["seed"], **options)
    federation = experiment.federation
    identity = {key: job[key] for key in ("config", "level", "protocol", "bits", "target_epsilon", "seed", "rounds",
                                          "clients")}
    if job["level"] is not None:
        dp = dp_config_for(experiment, level=PrivacyLevel(job["level"]), epsilon=job["target_epsilon"],
                           delta=job["delta"], rounds=job["rounds"],
                           mechanism=Mechanism.DDGAUSS if job["level"] == "distributed" else None,
                           bits=job["bits"] or 20)
        try:
            federation = dataclasses.replace(federation, dp=dp)
        except ConfigurationError as error:
            # A ring too small for the noise is a result too: the table says so.
            return identity | {"refused": str(error), "final_accuracy": None, "epsilon": None,
                               "epsilon_without_amplification": None, "adjacency": None,
                               "accountant": None, "delta": job["delta"], "noise_multiplier": None,
                               "aborted_rounds": 0, "seconds": 0.0}
    started = time.perf_counter()
    result = train_federated(federation, rounds=job["rounds"], evaluate=experiment.evaluate)
    ledger = federation.ledger
    return identity | {"refused": None,
        "epsilon": ledger.epsilon if ledger is not None else None,
        # What holds against an observer who knows every cohort: under distributed DP, the server.
        "epsilon_without_amplification": ledger.epsilon_without_amplification if ledger is not None else None,
        "adjacency": ledger.config.adjacency_name if ledger is not None else None,
        "accountant": ledger.accountant_name if ledger is not None else None,
        "delta": job["delta"] if ledger is not None else None,
        "noise_multiplier": _noise_multiplier(federation),
        "final_accuracy": result.final_accuracy,
        "aborted_rounds": sum(r.aborted for r in result.history),
        "seconds": time.perf_counter() - started}


def _noise_multiplier(federation: Any) -> float | None:
    privacy = federation.pipeline.privacy
    plan = getattr(privacy, "plan", None)
    if plan is not None:
        return float(plan.noise_multiplier)
    noise = getattr(privacy, "noise_multiplier", None)
    return None if noise is None else float(noise)


def run_utility(*, example: str = "digits-writers", clients: int = 5000, per_round: int = 100, rounds: int = 300,
                epsilons: Sequence[float] = (1.0, 3.0, 8.0), seeds: Sequence[int] = (0, 1, 2), delta: float = 1e-5,
                levels: Sequence[str] = DEFAULT_LEVELS, workers: int = 2,
                log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train ``example`` without DP and at each epsilon under each level in ``levels``, once per seed.

    ``levels`` names any of ``none``, ``central``, ``distributed`` (every ring size) and ``local``. Each run
    trains a fresh model for ``rounds`` rounds over ``clients`` writers, ``per_round`` a round, and records its
    final test accuracy and the epsilon its privacy ledger reports (the accounting of what ran, not the plan).
    ``workers`` runs go on at once, each in its own process. Needs the ``torch`` and ``examples`` extras.
    """
    import concurrent.futures
    import multiprocessing

    say = log or (lambda _: None)
    jobs = []
    for label, level, protocol, bits in UTILITY_LEVELS:
        if (level or "none") not in levels:
            continue
        for epsilon in (epsilons if level is not None else [None]):
            for seed in seeds:
                jobs.append({"config": label, "level": level, "protocol": protocol, "bits": bits,
                             "target_epsilon": epsilon, "seed": seed, "rounds": rounds, "clients": clients,
                             "delta": delta, "example": example,
                             "options": {"per_round": per_round} if example == "digits-writers" else {}})
    # Longest first, so that the short runs fill the last gaps and no long run ends alone on one core: DP-SGD
    # (an Opacus engine per client) and distributed DP (SecAgg+ key agreements and exact noise per client) take
    # several times as long as a run without DP or under central DP. The table sorts the records afterwards.
    jobs.sort(key=lambda job: _RELATIVE_COST.get(job["level"] if isinstance(job["level"], str) else None, 1.0),
              reverse=True)
    records = []
    started = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=max(1, workers), mp_context=context) as pool:
        futures = [pool.submit(_one_run, job) for job in jobs]
        for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
            record = future.result()
            records.append(record)
            shown = "-" if record["target_epsilon"] is None else f"{record['target_epsilon']:g}"
            outcome = (f"refused ({record['refused']})" if record["refused"] else
                       f"accuracy {100 * (record['final_accuracy'] or 0):5.1f}%  ({record['seconds']:.0f} s)")
            say(f"  utility {done}/{len(jobs)}: {record['config']:<34} epsilon {shown:<4} seed {record['seed']}  "
                f"{outcome}; {time.perf_counter() - started:.0f} s in all")
    records.sort(key=lambda r: ([row[0] for row in UTILITY_LEVELS].index(r["config"]), r["target_epsilon"] or 0,
                                r["seed"]))
    return {"example": example, "clients": clients, "per_round": per_round, "rounds": rounds, "delta": delta,
            "epsilons": list(epsilons), "seeds": list(seeds), "records": records,
            "seconds": time.perf_counter() - started}


def _summary(rows: list[dict[str, Any]]) -> tuple[float, float, float] | None:
    accuracies = [100 * r["final_accuracy"] for r in rows if r["final_accuracy"] is not None]
    if not accuracies:
        return None
    return statistics.fmean(accuracies), min(accuracies), max(accuracies)


def plot_utility(utility: dict[str, Any], path: Path, *, subtitle: str) -> Path:
    """Mean accuracy against epsilon per level and ring size (bars: the range over seeds); no DP as a line."""
    from .._plotting import pyplot, save, series_style

    figure, axes = pyplot().subplots(figsize=(7.5, 4.5))
    for label, level, _, bits in UTILITY_LEVELS:
        rows = [r for r in utility["records"] if r["config"] == label]
        if not rows:
            continue
        key = "no dp" if level is None else (f"distributed {bits}-bit" if level == "distributed" else level)
        style = series_style(key)
        if level is None:
            summary = _summary(rows)
            if summary is not None:
                axes.axhline(summary[0], color=style["color"], linestyle=style["linestyle"], label=label)
            continue
        points = []
        for epsilon in utility["epsilons"]:
            summary = _summary([r for r in rows if r["target_epsilon"] == epsilon])
            if summary is not None:
                points.append((epsilon, *summary))
        if not points:
            continue
        xs = [p[0] for p in points]
        means = [p[1] for p in points]
        errors = [[p[1] - p[2] for p in points], [p[3] - p[1] for p in points]]
        axes.errorbar(xs, means, yerr=errors, capsize=3, label=label, **style)
    axes.set_xscale("log")
    axes.set_xticks(utility["epsilons"], [f"{e:g}" for e in utility["epsilons"]])
    axes.minorticks_off()
    axes.set_xlabel(f"epsilon over {utility['rounds']} rounds (delta {utility['delta']:g}, zero-out adjacency; "
                    "local DP: one example)")
    axes.set_ylabel("test accuracy (%)")
    axes.set_title(f"Privacy against utility: {utility['example']}, {utility['clients']} writers, "
                   f"{utility['per_round']} a round, {len(utility['seeds'])} seeds\n{subtitle}", fontsize=10)
    axes.grid(True, alpha=0.3)
    return save(figure, path, legend_axes=axes)


def utility_table(utility: dict[str, Any]) -> list[str]:
    """Markdown lines: mean accuracy (range over seeds) per configuration and epsilon, with the ledger's epsilon."""
    epsilons = utility["epsilons"]
    lines = [f"**Test accuracy, {utility['example']}** ({utility['clients']} writers, {utility['per_round']} a round, "
             f"{utility['rounds']} rounds, delta {utility['delta']:g}, zero-out adjacency for central and "
             f"distributed DP; mean over seeds {', '.join(map(str, utility['seeds']))}, range in brackets, then "
             "the largest epsilon a ledger reported; under distributed DP, then the largest against the server, "
             "which knows the cohorts):", "",
             f"| | no DP | {' | '.join(f'epsilon = {e:g}' for e in epsilons)} |", "|---|---|" + "---|" * len(epsilons)]

    def cell(rows: list[dict[str, Any]]) -> str:
        summary = _summary(rows)
        if summary is None:
            return "refused: the ring cannot hold the noise" if any(r.get("refused") for r in rows) else "–"
        spent = [r["epsilon"] for r in rows if r["epsilon"] is not None and math.isfinite(r["epsilon"])]
        suffix = f"; {max(spent):.2f}" if spent else ""
        # Distributed DP also holds against the server, which knows the cohorts: without amplification.
        server = [r["epsilon_without_amplification"] for r in rows if r["level"] == "distributed"
                  and r.get("epsilon_without_amplification") is not None]
        if server and math.isfinite(max(server)):
            suffix += f"; server {max(server):.1f}"
        return f"{summary[0]:.1f}% ({summary[1]:.1f}–{summary[2]:.1f}{suffix})"

    for label, level, _, _ in UTILITY_LEVELS:
        rows = [r for r in utility["records"] if r["config"] == label]
        if not rows:
            continue
        if level is None:
            lines.append(f"| {label} | {cell(rows)} |" + " |" * len(epsilons))
        else:
            lines.append(f"| {label} | – | "
                         f"{' | '.join(cell([r for r in rows if r['target_epsilon'] == e]) for e in epsilons)} |")
    lines.append("")
    return lines
