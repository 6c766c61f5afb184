"""The figures' shared style: one colour per system everywhere, plain count axes, legends off the data."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from fedsecure._plotting import clients_axis, dp_title, integer_axis, pyplot, save, series_style  # noqa: E402

SYSTEMS = ["fedsecure plaintext", "fedsecure secagg", "fedsecure secagg+", "fedsecure paillier",
           "fedsecure paillier-threshold", "Flower SecAgg+", "per-value phe (extrapolated)"]


def test_every_system_has_its_own_colour_and_keeps_it() -> None:
    colours = [series_style(label)["color"] for label in SYSTEMS]
    assert len(set(colours)) == len(SYSTEMS)
    # SecAgg must not hide under SecAgg+ where their curves coincide.
    secagg, secagg_plus = series_style("fedsecure secagg"), series_style("fedsecure secagg+")
    assert secagg["marker"] != secagg_plus["marker"] and secagg["linestyle"] != secagg_plus["linestyle"]
    assert series_style("central DP-FedAvg, SecAgg+")["color"] == series_style("central")["color"]


def test_count_axes_read_as_counts_and_the_legend_sits_outside(tmp_path: Path) -> None:
    figure, axes = pyplot().subplots()
    axes.plot([6, 20, 100], [1, 2, 3], label="fedsecure secagg+", **series_style("fedsecure secagg+"))
    axes.set_xscale("log")
    clients_axis(axes.xaxis, [6, 20, 100])
    integer_axis(axes.yaxis)
    figure.canvas.draw()
    assert [t.get_text() for t in axes.get_xticklabels()] == ["6", "20", "100"]
    assert all(float(t.get_text().replace("\u2212", "-")).is_integer() for t in axes.get_yticklabels())
    path = save(figure, tmp_path / "plot.png", legend_axes=axes)
    assert path.stat().st_size > 0
    assert axes.get_legend() is not None
    assert axes.get_legend().get_bbox_to_anchor().x0 >= axes.get_window_extent().x1


def test_a_dp_title_names_the_level_and_guarantee() -> None:
    assert dp_title("cnn", level=None) == "cnn, no DP"
    assert dp_title("cnn", level="central", epsilon=3.0, delta=1e-5, adjacency="zero-out") == (
        "cnn, central DP, epsilon 3 (delta 1e-05), zero-out adjacency")
