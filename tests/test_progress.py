"""Progress display: bars on a terminal, plain lines elsewhere, nothing on stdout, nothing when quiet."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from fedsecure import _progress
from fedsecure._progress import ProgressDisplay


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    fake = _Clock()
    monkeypatch.setattr(_progress.time, "monotonic", fake)
    return fake


def test_plain_lines_report_a_long_stage_and_skip_a_quick_one(clock: _Clock) -> None:
    stream = io.StringIO()
    progress = ProgressDisplay(stream=stream, terminal=False, interval=10.0)
    for done in range(4):
        progress("quick", done, 3)
    assert stream.getvalue() == ""
    for done in range(21):
        progress("commitment", done, 20)
        clock.now += 1.5  # Thirty seconds in all.
    progress.close()
    lines = stream.getvalue().splitlines()
    assert lines[0].strip().startswith("commitment 7/20")  # The first line after ten seconds.
    assert lines[-1].strip() == "commitment 20/20 (30 s)"
    assert len(lines) == 3  # Ten seconds apart, then the end.


def test_a_step_says_when_it_starts_and_how_long_it_took(clock: _Clock) -> None:
    stream = io.StringIO()
    progress = ProgressDisplay(stream=stream, terminal=False)
    with progress.step("gradient leakage against secagg+"):
        clock.now += 12.5
    assert stream.getvalue().splitlines() == ["  gradient leakage against secagg+ ...",
                                              "  gradient leakage against secagg+ done (12.5 s)"]


def test_on_a_terminal_each_stage_is_a_bar_that_goes_away() -> None:
    stream = io.StringIO()
    progress = ProgressDisplay(stream=stream, terminal=True)
    for done in range(11):
        progress("masked-input", done, 10)
    progress.note("round 1/3  loss 0.5")
    progress.close()
    shown = stream.getvalue()
    assert "masked-input" in shown and "10/10" in shown and "round 1/3  loss 0.5\n" in shown


def test_quiet_shows_nothing(clock: _Clock) -> None:
    stream = io.StringIO()
    progress = ProgressDisplay(enabled=False, stream=stream, terminal=False)
    progress("commitment", 0, 2)
    clock.now += 60
    progress("commitment", 2, 2)
    with progress.step("keygen"):
        pass
    progress.note("a line")
    assert stream.getvalue() == ""


def test_train_json_off_a_terminal_reports_each_round_on_stderr() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    finished = subprocess.run([sys.executable, "-m", "fedsecure.cli", "train", "--example", "linear784", "--clients",
                               "3", "--rounds", "2", "--json"], capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert json.loads(finished.stdout)["rounds"] == 2  # stdout holds the result alone.
    rounds = [line for line in finished.stderr.splitlines() if line.strip().startswith("round ")]
    assert [line.split()[1] for line in rounds] == ["1/2", "2/2"]
