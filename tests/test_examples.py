"""The example programs in examples/ run as documented (with fewer rounds) and report what they trained."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script, argv, expect", [
    ("linear_784.py", ["--rounds", "2", "--clients", "4"], "round 2/2"),
    ("cnn_digits_noniid.py", ["--rounds", "1", "--clients", "8", "--protocol", "secagg"], "survivors"),
    ("logistic_gradients.py", ["--rounds", "10"], "stopped after round"),
    ("dp_digits_writers.py", ["--writers", "300", "--per-round", "30", "--rounds", "10", "--epsilon", "8"], "zero-out adjacency"),
])
def test_an_example_program_trains(script: str, argv: list[str], expect: str) -> None:
    finished = subprocess.run([sys.executable, str(ROOT / "examples" / script), *argv], capture_output=True,
                              text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr
    assert expect in finished.stdout and "final accuracy" in finished.stdout
    assert "Traceback" not in finished.stderr
