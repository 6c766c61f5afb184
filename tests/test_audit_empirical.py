"""The one-run canary audit: its p-value against a direct computation, and its verdicts on real and broken DP."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from fedsecure.audit._empirical import canary_audit, epsilon_lower_bound, guesses_for, one_run_p_value
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


def test_the_default_central_audit_can_certify_epsilon_above_eight() -> None:
    assert epsilon_lower_bound(30_000, 30_000, 30_000, 1e-5) > 8.0
    assert guesses_for(30_000, 4.0, 1e-5, 0.95) == 15_000


@pytest.mark.slow
def test_the_central_audit_catches_half_the_noise_and_never_flags_the_real_mechanism() -> None:
    # Twenty trials each, with the defaults: the audit has the power to matter, and no false alarm.
    pytest.importorskip("opacus")
    flagged = sum(canary_audit("central", epsilon=2.0, noise_scale=0.5).violation for _ in range(20))
    false_alarms = sum(canary_audit("central", epsilon=2.0).violation for _ in range(20))
    assert flagged >= 18 and false_alarms == 0


def test_cli_dp_audit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("opacus")
    assert main(["audit", "--dp-audit", "--canaries", "600", "--json", "--report", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["claimed_epsilon"] == 2.0 and out["empirical_epsilon_lower_bound"] <= 2.0
    # 600 canaries keep this quick; they have too little power to catch half the noise (the slow test above has).
    assert [(a["level"], a["miscalibrated"], a["violation"]) for a in out["dp_audit"]][:2] == [
        ("central", False, False), ("distributed", False, False)]
    half = out["dp_audit"][2]
    assert half["miscalibrated"] and half["noise_multiplier"] == pytest.approx(half["claimed_noise_multiplier"] / 2)
    assert "2x too little noise" in (tmp_path / "report.md").read_text(encoding="utf-8")
