"""The one-run canary audit: its p-value against a direct computation, and its verdicts on real and broken DP."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from fedsecure.audit._empirical import canary_audit, epsilon_lower_bound, one_run_p_value
from fedsecure.cli import main

stats = pytest.importorskip("scipy.stats")


def _reference_p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    # Steinke, Nasr, Jagielski 2023, Appendix D, computed term by term with scipy.
    q = 1 / (1 + math.exp(-epsilon))
    alpha = running = 0.0
    for i in range(1, v + 1):
        running += stats.binom.pmf(v - i, r, q)
        alpha = max(alpha, running / i)
    return min(float(stats.binom.sf(v - 1, r, q)) + 2 * m * delta * alpha, 1.0)


@pytest.mark.parametrize("m, r, v, epsilon, delta", [
    (1000, 100, 100, 3.0, 1e-5), (1000, 100, 80, 1.0, 1e-5), (1000, 600, 600, 2.0, 1e-5),
    (5000, 1000, 990, 4.0, 1e-6), (200, 50, 20, 0.5, 0.0), (10, 10, 0, 1.0, 1e-3),
])
def test_p_value_matches_the_direct_computation(m: int, r: int, v: int, epsilon: float, delta: float) -> None:
    assert one_run_p_value(m, r, v, epsilon, delta) == pytest.approx(_reference_p_value(m, r, v, epsilon, delta),
                                                                     rel=1e-9, abs=1e-15)


def test_lower_bound_properties() -> None:
    # Perfect guesses: with r guesses, the pure-DP bound at 95% is log(p / (1 - p)) for p = 0.05^(1/r).
    p = 0.05 ** (1 / 100)
    assert epsilon_lower_bound(1000, 100, 100, 0.0) == pytest.approx(math.log(p / (1 - p)), rel=1e-6)
    # delta only ever weakens the bound; more correct guesses only strengthen it; chance proves nothing.
    assert epsilon_lower_bound(1000, 100, 100, 1e-5) <= epsilon_lower_bound(1000, 100, 100, 0.0)
    bounds = [epsilon_lower_bound(1000, 100, v, 1e-5) for v in (50, 70, 90, 100)]
    assert bounds[0] == 0.0 and bounds == sorted(bounds)
    with pytest.raises(ValueError):
        epsilon_lower_bound(10, 20, 5, 1e-5)


@pytest.mark.parametrize("level", ["central", "distributed"])
def test_calibrated_mechanisms_pass_and_ten_times_too_little_noise_is_flagged(level: str) -> None:
    pytest.importorskip("opacus")
    honest = canary_audit(level, epsilon=2.0, canaries=500, guesses_per_side=50)
    assert honest.empirical_epsilon_lower_bound <= honest.claimed_epsilon and not honest.violation
    broken = canary_audit(level, epsilon=2.0, canaries=500, guesses_per_side=50, noise_scale=0.1)
    assert broken.noise_multiplier == pytest.approx(honest.claimed_noise_multiplier / 10)
    assert broken.violation and broken.empirical_epsilon_lower_bound > 2.0


def test_cli_dp_audit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("opacus")
    assert main(["audit", "--dp-audit", "--canaries", "400", "--json", "--report", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["claimed_epsilon"] == 2.0 and out["empirical_epsilon_lower_bound"] <= 2.0
    assert [(a["level"], a["miscalibrated"], a["violation"]) for a in out["dp_audit"]] == [
        ("central", False, False), ("distributed", False, False), ("central", True, True)]
    assert "**VIOLATION**" in (tmp_path / "report.md").read_text(encoding="utf-8")
