"""One look for every figure fedsecure draws: a colour, marker and line per system, legends beside the data.

Every plot (``fedsecure bench --plot``, ``fedsecure train --plot``, the audit's figures, the scripts in
``benchmarks/``) takes its series' colours from :func:`series_style`, so a system keeps its colour from one
figure to the next, and finishes through :func:`save`, which puts the legend outside the axes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["SERIES", "pyplot", "save", "series_style", "integer_axis", "clients_axis", "dp_title"]

# Colour-blind-safe (Okabe & Ito) colours, one per system or privacy level. The same key means the same colour in
# every figure; a key is matched against a series' label by `series_style`, longest key first.
SERIES: dict[str, dict[str, Any]] = {
    "fedsecure plaintext": {"color": "#7f7f7f", "marker": "x", "linestyle": ":"},
    "fedsecure secagg+": {"color": "#0072B2", "marker": "o", "linestyle": "-"},
    # SecAgg is drawn dashed with larger, hollow squares, so it shows where it runs under SecAgg+.
    "fedsecure secagg": {"color": "#56B4E9", "marker": "s", "linestyle": "--", "markersize": 8,
                         "markerfacecolor": "none"},
    "fedsecure paillier-threshold": {"color": "#CC79A7", "marker": "D", "linestyle": "-"},
    "fedsecure paillier": {"color": "#009E73", "marker": "^", "linestyle": "-"},
    "flower secagg+": {"color": "#D55E00", "marker": "v", "linestyle": "-."},
    "per-value phe": {"color": "#E69F00", "marker": "P", "linestyle": "--"},
    # Privacy levels in the privacy-utility figures.
    "no dp": {"color": "#000000", "marker": "", "linestyle": "--"},
    "local": {"color": "#E69F00", "marker": "P", "linestyle": "-"},
    "central": {"color": "#0072B2", "marker": "o", "linestyle": "-"},
    "distributed 24-bit": {"color": "#009E73", "marker": "^", "linestyle": "-"},
    "distributed 16-bit": {"color": "#CC79A7", "marker": "D", "linestyle": "-"},
    "distributed 12-bit": {"color": "#D55E00", "marker": "v", "linestyle": "-"},
    "distributed": {"color": "#009E73", "marker": "^", "linestyle": "-"},
}


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (files only, no screen needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def series_style(label: str) -> dict[str, Any]:
    """The plot keywords (colour, marker, line style) of the system or level a label names."""
    lowered = label.lower()
    for key in sorted(SERIES, key=len, reverse=True):
        if lowered.startswith(key) or f" {key}" in f" {lowered}":
            return dict(SERIES[key])
    return {"color": "#999999", "marker": "o", "linestyle": "-"}


def integer_axis(axis: Any) -> None:
    """Ticks at whole numbers only (rounds, clients): never 1.5 rounds."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def clients_axis(axis: Any, values: list[float]) -> None:
    """A logarithmic count axis labelled with the measured counts themselves (20, 100), not 2x10^1."""
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

    ticks = sorted({float(v) for v in values})
    axis.set_major_locator(FixedLocator(ticks))
    formatter = ScalarFormatter()
    formatter.set_scientific(False)
    axis.set_major_formatter(formatter)
    axis.set_minor_formatter(NullFormatter())


def dp_title(title: str, *, level: str | None, epsilon: float | None = None, delta: float | None = None,
             adjacency: str | None = None) -> str:
    """A figure title that names the DP level and its guarantee, or says there is none."""
    if level is None or level == "none":
        return f"{title}, no DP"
    guarantee = f"{level} DP"
    if epsilon is not None:
        guarantee += f", epsilon {epsilon:.3g}"
        if delta is not None:
            guarantee += f" (delta {delta:g})"
    if adjacency:
        guarantee += f", {adjacency} adjacency"
    return f"{title}, {guarantee}"


def save(figure: Any, path: Path, *, legend_axes: Any | None = None, dpi: int = 110) -> Path:
    """Writes ``figure`` to ``path``, with ``legend_axes``' legend to the right of the axes, off the data."""
    plt = pyplot()
    if legend_axes is not None:
        handles, labels = legend_axes.get_legend_handles_labels()
        if handles:
            legend_axes.legend(handles, labels, fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                               borderaxespad=0.0, frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(figure)
    return path
