"""House rules checked mechanically: mypy --strict, and no unsafe randomness, pickle or assert in the package."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Non-cryptographic generators, pickle and `assert` (stripped under -O) have no place in package code,
# except NumPy generators for non-secret work, which must be marked `# noqa: csprng-ok`.
RISKY = re.compile(r"np\.random\.(?!Generator\b)\w+|numpy\.random|from numpy import random"
                   r"|^\s*import random|from random import|\bsecrets\.choice|pickle\.(loads|load)\(|^\s*assert ")


def test_mypy_strict_passes() -> None:
    pytest.importorskip("mypy")
    completed = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")],
                               cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_no_insecure_randomness_or_pickle_in_the_package() -> None:
    offenders = []
    for path in (ROOT / "src" / "fedsecure").rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if RISKY.search(line) and "csprng-ok" not in line:
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
