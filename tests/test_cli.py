"""The ``fedsecure`` command, run as users run it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fedsecure.cli import main

REQUIRED_KEYS = {"protocol", "clients", "dim", "survivors", "correct", "max_abs_error", "bytes_up_per_client",
                 "bytes_down_per_client", "bytes_per_param", "client_seconds", "server_seconds", "aborted",
                 "abort_reason"}


@pytest.mark.parametrize("protocol", ["plaintext", "secagg", "secagg+"])
def test_simulate_json(protocol: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["simulate", "--protocol", protocol, "--clients", "12", "--dim", "300", "--dropout", "0.2",
                 "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0
    assert REQUIRED_KEYS <= summary.keys()
    assert summary["protocol"] == protocol and summary["clients"] == 12 and summary["dim"] == 300
    assert summary["correct"] is True and summary["aborted"] is False and summary["abort_reason"] is None
    assert summary["survivors"] >= 12 - round(0.2 * 12)
    assert 0 <= summary["max_abs_error"] < 12 / summary["scale"]
    assert summary["bytes_per_param"] == pytest.approx(summary["bytes_up_per_client"] / 300)


@pytest.mark.parametrize("protocol", ["paillier", "paillier-threshold"])
def test_simulate_paillier_json(protocol: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["simulate", "--protocol", protocol, "--clients", "8", "--dim", "200", "--dropout", "0.25",
                 "--key-bits", "512", "--insecure-small-keys", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["correct"] is True and summary["protocol"] == protocol
    assert REQUIRED_KEYS | {"key_bits", "ciphertexts_per_client", "slots_per_ciphertext"} <= summary.keys()
    assert summary["key_bits"] == 512
    # 200 coordinates in slots of slot_bits: one 128-byte ciphertext per slots_per_ciphertext values.
    assert summary["ciphertexts_per_client"] == -(-200 // summary["slots_per_ciphertext"])


def test_small_paillier_keys_must_be_asked_for(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["simulate", "--protocol", "paillier", "--clients", "4", "--dim", "10", "--key-bits", "1024",
                 "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 2 and out["error"] == "ConfigurationError" and "insecure" in out["message"]


def test_simulate_reports_an_abort(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["simulate", "--protocol", "secagg", "--clients", "10", "--dim", "20", "--dropout", "0.8",
                 "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 3
    assert summary["aborted"] is True and "round aborted" in summary["abort_reason"]
    assert summary["correct"] is False


def test_impossible_configuration_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["simulate", "--clients", "9", "--tolerate-dropout", "0.45", "--tolerate-corrupt", "0.1",
                 "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 2 and out["error"] == "ConfigurationError"


def test_console_script_default_run() -> None:
    completed = subprocess.run([sys.executable, "-m", "fedsecure", "simulate", "--clients", "20", "--dim", "100"],
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert "exact sum         yes" in completed.stdout


@pytest.mark.parametrize("argv", [["--dropout", "2"], ["--dropout", "-0.1"], ["--clients", "0"], ["--dim", "x"]])
def test_out_of_range_arguments_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["simulate", *argv])
    assert info.value.code == 2
    assert "usage" in capsys.readouterr().err


@pytest.mark.parametrize("argv,keys", [
    (["--mechanism", "gaussian", "--target-epsilon", "3", "--sample-rate", "1", "--rounds", "10", "--delta", "1e-5"],
     set()),
    (["--mechanism", "gaussian", "--noise-multiplier", "1.1", "--sample-rate", "0.01", "--rounds", "100",
      "--delta", "1e-5", "--accountant", "prv"], set()),
    (["--mechanism", "skellam", "--target-epsilon", "5", "--sample-rate", "1", "--rounds", "5", "--delta", "1e-5",
      "--clients", "10", "--clip", "1", "--dim", "1000"], {"local_variance", "wrap_probability_bound", "scale"}),
])
def test_privacy_json(argv: list[str], keys: set[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["privacy", *argv, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert {"epsilon", "delta", "noise_multiplier", "mechanism", "accountant"} | keys <= summary.keys()
    if "--target-epsilon" in argv:
        assert summary["epsilon"] <= float(argv[argv.index("--target-epsilon") + 1])


@pytest.mark.parametrize("argv", [
    ["--noise-multiplier", "0", "--sample-rate", "1", "--rounds", "3", "--delta", "1e-5"],
    ["--noise-multiplier", "1", "--sample-rate", "1", "--rounds", "3", "--delta", "0.3", "--population", "5"],
    ["--mechanism", "ddgauss", "--noise-multiplier", "5", "--sample-rate", "1", "--rounds", "3", "--delta", "1e-5",
     "--clients", "100", "--clip", "1", "--bits", "6"],
    ["--noise-multiplier", "inf", "--sample-rate", "1", "--rounds", "3", "--delta", "1e-5"],
    ["--target-epsilon", "-1", "--sample-rate", "1", "--rounds", "3", "--delta", "1e-5"],
    ["--target-epsilon", "1e-6", "--sample-rate", "1", "--rounds", "3", "--delta", "1e-5"],
    ["--mechanism", "skellam", "--target-epsilon", "0.01", "--sample-rate", "1", "--rounds", "3", "--delta", "1e-5",
     "--clients", "10", "--clip", "1"],
    # Flags the Gaussian would ignore, and numbers the accounting cannot take, are refused rather than overflowing.
    ["--mechanism", "gaussian", "--noise-multiplier", "1", "--rounds", "1", "--delta", "1e-5", "--clients", "10"],
    ["--mechanism", "gaussian", "--noise-multiplier", "1", "--rounds", "1", "--delta", "1e-5", "--bits", "3"],
    ["--noise-multiplier", "1e-300", "--rounds", "1", "--delta", "1e-5"],
    ["--noise-multiplier", "1e300", "--rounds", "1", "--delta", "1e-5"],
    ["--mechanism", "ddgauss", "--noise-multiplier", "1", "--rounds", "1", "--delta", "1e-5", "--clients", "10",
     "--clip", "1e-300"],
    ["--mechanism", "ddgauss", "--noise-multiplier", "1", "--rounds", "1", "--delta", "1e-5", "--clients", "10",
     "--clip", "1e300"],
    ["--mechanism", "ddgauss", "--noise-multiplier", "1e9", "--rounds", "1", "--delta", "1e-6", "--clients", "100",
     "--clip", "1", "--dim", "1", "--population", "1000", "--bits", "62"],
])
def test_privacy_refusals_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["privacy", *argv, "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["error"] == "ConfigurationError"


def _strict(text: str) -> object:
    def refuse(constant: str) -> object:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("argv, fragment", [
    (["simulate", "--clients", "3", "--dim", "10", "--ring-bits", "0"], "--ring-bits"),
    (["simulate", "--clients", "3", "--dim", "10", "--transcript", "/nonexistent/dir/x.jsonl"], "--transcript"),
    (["train", "--example", "logistic", "--rounds", "1", "--out", "/proc/fedsecure-nope"], "--out"),
    (["bench", "--render", "/nonexistent/bench.json"], "No such file"),
    (["bench", "--render", "{garbage}"], "not a fedsecure bench.json"),
    (["audit", "{binary}"], "not JSON"),
    (["train", "--example", "logistic", "--rounds", "1", "--resume", "{corrupt}"], "not a readable fedsecure"),
    (["train", "--example", "logistic", "--rounds", "1", "--plot", "{garbage}"], "must end in .png"),
    (["train", "--example", "logistic", "--rounds", "1", "--epsilon", "3"], "only with --dp"),
    (["flower", "--job", "linear784", "--resume", "/nonexistent/run"], "no checkpoint.npz"),
])
def test_a_refused_input_exits_2_with_one_line_and_no_traceback(argv: list[str], fragment: str,
                                                                tmp_path: object) -> None:
    from pathlib import Path

    directory = Path(str(tmp_path))
    (directory / "garbage.json").write_text("{not json")
    (directory / "binary.jsonl").write_bytes(b"\x00\x01\x02 not a transcript")
    (directory / "corrupt").mkdir()
    (directory / "corrupt" / "checkpoint.npz").write_bytes(b"PK\x03\x04 truncated")
    argv = [a.replace("{garbage}", str(directory / "garbage.json")).replace("{binary}", str(directory / "binary.jsonl"))
            .replace("{corrupt}", str(directory / "corrupt")) for a in argv]
    finished = subprocess.run([sys.executable, "-m", "fedsecure.cli", *argv], capture_output=True, text=True,
                              timeout=300, cwd=directory)
    assert finished.returncode == 2, finished.stderr
    assert "Traceback" not in finished.stderr and fragment in finished.stderr
    assert len([line for line in finished.stderr.splitlines() if line.startswith(("fedsecure", "usage"))]) >= 1
    if not argv[0] == "simulate" or "--ring-bits" not in argv:
        assert len(finished.stderr.strip().splitlines()) == 1, finished.stderr
    assert not (directory / "fedsecure-bench").exists()  # nothing written unasked


def test_machine_output_is_strict_json(capsys: pytest.CaptureFixture[str]) -> None:
    from fedsecure.cli import _strict_json

    assert _strict(_strict_json({"a": float("nan"), "b": [float("inf"), 1.5]})) == {"a": None, "b": [None, 1.5]}
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    assert main(["train", "--example", "logistic", "--rounds", "2", "--json"]) == 0
    _strict(capsys.readouterr().out)
    assert main(["simulate", "--clients", "4", "--dim", "20", "--json"]) == 0
    _strict(capsys.readouterr().out)


def test_version() -> None:
    finished = subprocess.run([sys.executable, "-m", "fedsecure.cli", "--version"], capture_output=True, text=True,
                              timeout=60)
    assert finished.returncode == 0 and finished.stdout.startswith("fedsecure ")


def test_resume_keeps_saving_and_says_when_there_is_nothing_to_run(tmp_path: object) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    from pathlib import Path

    out = Path(str(tmp_path)) / "run"

    def train(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "fedsecure.cli", "train", "--example", "linear784",
                               "--clients", "3", "--quiet", *extra], capture_output=True, text=True, timeout=300)

    assert train("--rounds", "1", "--out", str(out)).returncode == 0
    assert train("--rounds", "2", "--resume", str(out)).returncode == 0  # no --out: the checkpoint is kept current
    assert json.loads((out / "history.json").read_text())["rounds_done"] == 2
    again = train("--rounds", "1", "--resume", str(out))
    assert again.returncode == 0 and "already holds 2 rounds" in again.stderr and "nothing to run" in again.stderr
