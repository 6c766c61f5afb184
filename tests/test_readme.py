"""The README's Python snippets, run exactly as printed."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

README = (Path(__file__).parent.parent / "README.md").read_text()


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)


def _run(block: str, namespace: dict[str, Any]) -> None:
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 (the README's own snippet)


def test_the_sessions_snippet_returns_the_mean_it_promises(capsys: pytest.CaptureFixture[str]) -> None:
    sessions, paillier = _python_blocks()[:2]
    namespace: dict[str, Any] = {}
    _run(sessions, namespace)
    report, mean, vectors = namespace["report"], namespace["mean"], namespace["vectors"]
    assert report.clipped == 0
    survivors = sorted(report.result.survivors)
    expected = np.mean([vectors[c] for c in survivors], axis=0)
    assert np.abs(mean - expected).max() < 1e-3  # quantisation: 20 steps of 1/scale at most
    assert "0 updates clipped" in capsys.readouterr().out
    _run(paillier, namespace)
    assert namespace["report"].result is not None


def test_a_clip_below_the_updates_norms_is_reported_not_silent(caplog: pytest.LogCaptureFixture) -> None:
    # The same snippet with clip=1.0 (an L2 bound far below these updates' norms of about 18): every update is
    # scaled down, and the round says so.
    sessions = _python_blocks()[0].replace("clip=25.0", "clip=1.0").replace("print(", "(")
    namespace: dict[str, Any] = {}
    with caplog.at_level(logging.WARNING, logger="fedsecure.runtime"):
        _run(sessions, namespace)
    assert namespace["report"].clipped == 20
    assert "20 of 20 updates were clipped" in caplog.text
