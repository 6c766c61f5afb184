"""A user's own training job on fedsecure's Flower apps (``fedsecure flower --job package.module:function``), over
fedsecure's in-process Flower ``Grid``: client sampling, checkpoints and resuming, and the node's job policy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("flwr")
pytest.importorskip("torch")
pytest.importorskip("sklearn")

from fedsecure import ConfigurationError  # noqa: E402

EXAMPLE = Path(__file__).parent.parent / "examples" / "flower-own-job"
JOB = "mlp_digits:make"


def _grid(nodes: int, **node_config: Any) -> Any:
    from fedsecure.runtime.flower import LocalGrid, client_app
    from fedsecure.runtime.flower._jobs import auto_job

    return LocalGrid.create(client_app(job=auto_job), [
        {"partition-id": i, "num-partitions": nodes, "fedsecure-jobs": JOB} | node_config for i in range(nodes)])


def test_a_users_job_trains_with_client_sampling_checkpoints_and_resume(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from fedsecure.runtime.flower._jobs import run_server_job

    monkeypatch.syspath_prepend(str(EXAMPLE))
    checkpoint = tmp_path / "checkpoint"
    settings = {"job": JOB, "nodes": 5, "min-clients": 2, "fraction": 0.6, "stage-timeout": 10.0,
                "checkpoint": str(checkpoint)}
    history = run_server_job(_grid(5), settings | {"rounds": 3})
    assert [r["aborted"] for r in history] == [False, False, False]
    assert [r["cohort"] for r in history] == [3, 3, 3]  # 60% of five clients, drawn per round
    assert len({tuple(r["clients"]) for r in history}) > 1
    assert history[-1]["accuracy"] > 0.5
    saved = json.loads((checkpoint / "history.json").read_text())
    assert saved["rounds_done"] == 3
    # Resuming runs only the rounds still to do, from the saved model and history.
    resumed = run_server_job(_grid(5), settings | {"rounds": 5, "resume": str(checkpoint)})
    assert [r["round"] for r in resumed] == [3, 4] and not any(r["aborted"] for r in resumed)
    assert resumed[-1]["accuracy"] > 0.7
    assert json.loads((checkpoint / "history.json").read_text())["rounds_done"] == 5
    # A checkpoint is refused by a run with another sampling fraction (its fingerprint differs).
    with pytest.raises(ConfigurationError, match="fraction"):
        run_server_job(_grid(5), settings | {"rounds": 6, "resume": str(checkpoint), "fraction": 1.0})


def test_a_node_runs_only_the_jobs_its_operator_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    from fedsecure.runtime.flower._jobs import run_server_job

    monkeypatch.syspath_prepend(str(EXAMPLE))
    # The nodes list only the built-in jobs: a server naming another job is refused by every node, by name.
    grid = _grid(3, **{"fedsecure-jobs": "linear784"})
    (summary,) = run_server_job(grid, {"job": JOB, "rounds": 1, "nodes": 3, "min-clients": 2, "stage-timeout": 5.0})
    assert summary["aborted"] and summary["survivors"] == []
    assert all("not among this node's fedsecure-jobs" in reason for reason in summary["dropped"].values())


@pytest.mark.parametrize(("job", "message"), [
    ("no_such_module_here:make", "cannot import"),
    ("json:no_such_function", "has no function"),
    ("rm -rf /", "neither simulate"),
    ("json", "neither simulate"),
])
def test_a_job_that_cannot_be_loaded_is_refused_before_any_round(job: str, message: str) -> None:
    from fedsecure.runtime.flower._jobs import JobSettings

    with pytest.raises(ConfigurationError, match=message):
        JobSettings.from_run_config({"job": job})


@pytest.mark.slow
def test_fedsecure_flower_runs_a_users_job_on_real_processes(tmp_path: Path) -> None:
    # The documented command, from the example's directory: a SuperLink and SuperNodes as processes import the
    # user's module from the current directory.
    import subprocess
    import sys

    pytest.importorskip("ray")
    command = [sys.executable, "-m", "fedsecure.cli", "flower", "--job", JOB, "--supernodes", "4", "--rounds", "3",
               "--fraction", "0.75", "--checkpoint", str(tmp_path / "checkpoint"), "--workdir", str(tmp_path / "run"),
               "--json", "--quiet"]
    finished = subprocess.run(command, cwd=EXAMPLE, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-2000:] + finished.stdout[-2000:]
    summary = json.loads(finished.stdout)
    assert summary["completed"] and [r["cohort"] for r in summary["rounds"]] == [3, 3, 3]
    assert summary["rounds"][-1]["accuracy"] > 0.6
    assert json.loads((tmp_path / "checkpoint" / "history.json").read_text())["rounds_done"] == 3
    # A cohort the threat model cannot protect is refused up front, in one line, before any process starts.
    refused = subprocess.run([*command[:6], "--supernodes", "3", "--fraction", "0.67", "--workdir",
                              str(tmp_path / "refused")], cwd=EXAMPLE, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "cannot survive" in refused.stderr and "Traceback" not in refused.stderr
