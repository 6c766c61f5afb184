"""``fedsecure bench``: the quick profile's outputs are complete and well formed. Timings are never asserted."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from fedsecure.bench import PROFILES, flower_available, run_flower_secaggplus, write_markdown
from fedsecure.bench._fedsecure import drop_plans, stage_index
from fedsecure.bench._output import MARKDOWN_BEGIN, MARKDOWN_END, PLOT_FILES
from fedsecure.bench._phe import measure_per_value_phe
from fedsecure.cli import main
from fedsecure.crypto import generate_paillier_keypair

RECORD_FIELDS = {
    "suite", "implementation", "protocol", "clients", "dim", "dropout", "dropout_model", "degree", "threshold",
    "rounds", "aborted_rounds", "wrong_rounds", "round_s", "round_s_min", "bytes_up_per_param", "server_peak_mib",
    "extrapolated", "cpu", "cores", "python", "date", "commit", "config", "fedsecure_version", "numpy_version",
    "cryptography_version", "phe_version", "flwr_version",
}
COMPARISON_FIELDS = {
    "suite", "case", "protocol", "peer", "clients", "dim", "dropout", "rounds", "fedsecure_round_s", "peer_round_s",
    "time_ratio", "fedsecure_bytes_up_per_param", "peer_bytes_up_per_param", "bytes_ratio",
    "fedsecure_aborted_rounds", "peer_aborted_rounds",
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, str]:
    """One real ``fedsecure bench --quick`` run, shared by the checks below."""
    root = tmp_path_factory.mktemp("bench")
    readme = root / "README.md"
    readme.write_text(f"# Before\n\n{MARKDOWN_BEGIN}\nold table\n{MARKDOWN_END}\n\n# After\n", encoding="utf-8")
    import contextlib
    import io

    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = main(["bench", "--quick", "--quiet", "--json", "--out", str(root / "out"),
                       "--plot", str(root / "plots"), "--markdown", str(readme)])
    assert status == 0
    return root, json.loads(stdout.getvalue()), readme.read_text(encoding="utf-8")


def test_quick_json_has_every_field_and_every_suite(quick_run: tuple[Path, dict, str]) -> None:
    root, printed, _ = quick_run
    saved = json.loads((root / "out" / "bench.json").read_text(encoding="utf-8"))
    assert saved == printed
    assert saved["format"] == "fedsecure-bench/1"
    assert saved["environment"]["cores"] >= 1 and saved["environment"]["cpu"]
    records = saved["records"]
    for record in records:
        assert RECORD_FIELDS <= record.keys(), RECORD_FIELDS - record.keys()
        assert record["config"]["profile"] == "quick" and record["config"]["key_bits"] >= 2048
    suites = {record["suite"] for record in records}
    # The peers suite is Flower's; without the bench extra it is skipped (and says so).
    assert suites == {"clients", "dim", "dropout", "phe"} | ({"peers"} if flower_available() else set())
    protocols = {(r["implementation"], r["protocol"]) for r in records}
    for protocol in ("plaintext", "secagg", "secagg+", "paillier", "paillier-threshold"):
        assert ("fedsecure", protocol) in protocols
    assert ("phe", "phe") in protocols
    # Every round fedsecure completed returned exactly the plaintext sum of its survivors.
    for record in records:
        if record["implementation"] == "fedsecure":
            assert record["wrong_rounds"] == 0, record
    # Without dropout, fedsecure never aborts; the sweeps vary what the profile says they vary.
    profile = PROFILES["quick"]
    for record in records:
        if record["implementation"] == "fedsecure" and record["dropout"] == 0:
            assert record["aborted_rounds"] == 0, record
    clients_sweep = {r["clients"] for r in records if r["suite"] == "clients"}
    assert clients_sweep == set(profile.clients_sweep)
    assert {r["dim"] for r in records if r["suite"] == "dim"} == set(profile.dim_sweep)
    assert {r["dropout"] for r in records if r["suite"] == "dropout"} == set(profile.dropout_sweep)
    # Server memory is measured for fedsecure's sessions in the clients sweep.
    assert all(r["server_peak_mib"] > 0 for r in records if r["suite"] == "clients" and r["implementation"] == "fedsecure")


@pytest.mark.skipif(flower_available() is None, reason="Flower 1.41 is not installed (the bench extra)")
def test_quick_compares_with_flower_pair_by_pair(quick_run: tuple[Path, dict, str]) -> None:
    _, data, _ = quick_run
    flower = [c for c in data["comparisons"] if c["peer"] == "flower"]
    cases = {c["case"] for c in flower}
    assert {"complete graph", "Flower's example configuration", "fedsecure's parameters"} <= cases
    for comparison in data["comparisons"]:
        assert COMPARISON_FIELDS <= comparison.keys()
        assert 0 <= comparison["matched_rounds"] <= comparison["rounds"]
        if comparison["matched_rounds"]:
            assert comparison["time_ratio"] > 0 and comparison["bytes_ratio"] > 0
        else:
            assert comparison["time_ratio"] is None
    # Each Flower comparison pairs records of the same suite, cohort, length, dropout and number of rounds,
    # and Flower ran fedsecure's neighbourhood and threshold except in Flower's own example configuration.
    for comparison in flower:
        pair = [r for r in data["records"] if r["suite"] == comparison["suite"] and r["clients"] == comparison["clients"]
                and r["dim"] == comparison["dim"] and r["dropout"] == comparison["dropout"]
                and r["protocol"] in (comparison["protocol"], "secagg+")
                and r["implementation"] in ("fedsecure", "flower")]
        assert {r["implementation"] for r in pair} == {"fedsecure", "flower"}
        assert len({r["rounds"] for r in pair}) == 1
        if comparison["case"] != "Flower's example configuration":
            assert (comparison["peer_degree"], comparison["peer_threshold"]) == (
                comparison["fedsecure_degree"], comparison["fedsecure_threshold"])
    example = next(c for c in flower if c["case"] == "Flower's example configuration")
    assert (example["clients"], example["dim"], example["peer_degree"], example["peer_threshold"]) == (5, 62006, 3, 2)
    # Flower's results are checked too: every round it completed returned the survivors' mean.
    assert all(r["wrong_rounds"] == 0 for r in data["records"] if r["implementation"] == "flower")
    assert not any("Flower" in reason for reason in data["skipped"])


def test_quick_csv_matches_json(quick_run: tuple[Path, dict, str]) -> None:
    root, data, _ = quick_run
    with open(root / "out" / "bench.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(data["records"])
    assert RECORD_FIELDS <= set(rows[0])
    for row, record in zip(rows, data["records"], strict=True):
        assert (row["suite"], row["implementation"], int(row["clients"]), int(row["dim"])) == (
            record["suite"], record["implementation"], record["clients"], record["dim"])
        assert json.loads(row["config"]) == record["config"]
        assert math.isclose(float(row["round_s"]), record["round_s"])


def test_quick_plots_are_png(quick_run: tuple[Path, dict, str]) -> None:
    root, _, _ = quick_run
    for name in PLOT_FILES:
        data = (root / "plots" / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, name


def test_markdown_is_written_between_the_markers(quick_run: tuple[Path, dict, str]) -> None:
    _, data, text = quick_run
    assert text.startswith("# Before") and text.rstrip().endswith("# After")
    assert "old table" not in text
    assert "| case | n | d |" in text and "**Seconds per round against clients**" in text
    for name in PLOT_FILES:
        assert f"(plots/{name})" in text
    assert text.count(MARKDOWN_BEGIN) == 1 and text.count(MARKDOWN_END) == 1


def test_render_redraws_from_a_saved_run(quick_run: tuple[Path, dict, str], tmp_path: Path) -> None:
    root, _, _ = quick_run
    status = main(["bench", "--render", str(root / "out" / "bench.json"), "--plot", str(tmp_path / "p"),
                   "--markdown", str(tmp_path / "table.md"), "--quiet"])
    assert status == 0
    assert (tmp_path / "table.md").read_text(encoding="utf-8").startswith(MARKDOWN_BEGIN)
    assert all((tmp_path / "p" / name).read_bytes().startswith(PNG_MAGIC) for name in PLOT_FILES)


def test_render_refuses_other_json(tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    other.write_text('{"records": []}', encoding="utf-8")
    assert main(["bench", "--render", str(other), "--quiet"]) == 2


def test_markdown_never_overwrites_a_file_without_markers(quick_run: tuple[Path, dict, str], tmp_path: Path) -> None:
    root, _, _ = quick_run
    precious = tmp_path / "README.md"
    precious.write_text("# My project\n", encoding="utf-8")
    status = main(["bench", "--render", str(root / "out" / "bench.json"), "--markdown", str(precious), "--quiet"])
    assert status == 2
    assert precious.read_text(encoding="utf-8") == "# My project\n"


def test_quick_writes_comparisons_csv(quick_run: tuple[Path, dict, str]) -> None:
    root, data, _ = quick_run
    with open(root / "out" / "comparisons.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(data["comparisons"])
    if rows:
        assert {"case", "time_ratio", "cpu", "cores", "date", "flwr_version"} <= set(rows[0])


def test_fedsecure_rounds_check_who_reached_the_sum() -> None:
    from fedsecure.bench._fedsecure import run_fedsecure_rounds, vectors
    from fedsecure.protocols import ProtocolKind, ThreatModel

    # Positions along SecAgg+'s four client stages: client 0 drops at advertise-keys, 1 at masked-input
    # (its input never arrives), 2 at unmasking (its input is in the sum).
    plan = {0: 0.1, 1: 0.6, 2: 0.9}
    _, rounds = run_fedsecure_rounds(ProtocolKind.SECAGG_PLUS, vectors(8, 30, 0), [plan], threat=ThreatModel())
    assert rounds[0].correct and not rounds[0].aborted
    assert rounds[0].survivors == 6


def test_bench_refuses_insecure_keys() -> None:
    assert main(["bench", "--quick", "--key-bits", "1024", "--quiet"]) == 2


def test_write_markdown_creates_a_file_without_markers(quick_run: tuple[Path, dict, str], tmp_path: Path) -> None:
    _, data, _ = quick_run
    path = tmp_path / "new.md"
    write_markdown(data, path)
    text = path.read_text(encoding="utf-8")
    assert text.startswith(MARKDOWN_BEGIN) and text.rstrip().endswith(MARKDOWN_END)


def test_drop_plans() -> None:
    exact = drop_plans(20, 0.1, 5, seed=3, bernoulli=False)
    assert [len(plan) for plan in exact] == [2] * 5
    assert drop_plans(20, 0.1, 5, seed=3, bernoulli=False) == exact
    assert all(0 <= position < 1 for plan in exact for position in plan.values())
    bernoulli = drop_plans(1000, 0.1, 1, seed=3, bernoulli=True)[0]
    assert 50 < len(bernoulli) < 150
    assert drop_plans(10, 0.0, 3, seed=0, bernoulli=True) == [{}, {}, {}]
    assert [stage_index(p, 4) for p in (0.0, 0.24, 0.25, 0.99)] == [0, 0, 1, 3]
    assert stage_index(0.99, 1) == 0


def test_per_value_phe_extrapolation() -> None:
    public, private = generate_paillier_keypair(1024)
    per_value = measure_per_value_phe(public, private, 3)
    assert per_value.bytes_per_value == 256
    assert per_value.round_seconds(4, 10) == pytest.approx(
        40 * per_value.encrypt_s + 30 * per_value.add_s + 10 * per_value.decrypt_s)


@pytest.mark.skipif(flower_available() is None, reason="Flower 1.41 is not installed (the bench extra)")
def test_flower_peer_returns_the_mean_and_halts_on_early_dropouts() -> None:
    rng = np.random.default_rng(0)  # noqa: csprng-ok (test data)
    vectors = [rng.uniform(-1, 1, 50) for _ in range(6)]
    rounds = run_flower_secaggplus(vectors, [{}, {0: 2}, {1: 3}, {2: 0}], num_shares=6, threshold=3)
    assert [r.completed for r in rounds[:3]] == [True, True, True]
    assert all(r.max_abs_error < 1e-4 for r in rounds[:3])
    # Flower 1.41 halts a round in which a client dropped before sharing its keys: the unmask stage wants
    # shares of every sampled client. fedsecure recovers from the same dropout.
    assert rounds[3].completed is False and math.isnan(rounds[3].max_abs_error)
    assert all(r.bytes_up > 50 * 8 for r in rounds)


def test_utility_trains_every_level_and_ring_and_plots(tmp_path: Path) -> None:
    pytest.importorskip("opacus")
    pytest.importorskip("sklearn")
    from fedsecure.bench._utility import UTILITY_LEVELS, plot_utility, run_utility, utility_table

    # A small digits-writers (the suite's own runs use 5000 writers, 100 a round, 100 rounds), in worker processes.
    utility = run_utility(clients=200, per_round=50, rounds=2, epsilons=[50.0], seeds=[0],
                          levels=["none", "central", "distributed", "local"])
    records = utility["records"]
    assert [r["config"] for r in records] == [row[0] for row in UTILITY_LEVELS]
    for record in records:
        if record["refused"]:
            # A ring too small for the noise is refused by name, and the table says so.
            assert record["bits"] == 12 and "bits" in record["refused"]
            continue
        assert 0.0 <= record["final_accuracy"] <= 1.0
        if record["level"] is None:
            assert record["epsilon"] is None
        else:
            # The ledger's epsilon for what ran never exceeds the target; every record names its guarantee.
            assert 0 < record["epsilon"] <= 50.0 + 1e-9, record
            assert record["adjacency"] and record["accountant"]
    path = plot_utility(utility, tmp_path / "utility.png", subtitle="test")
    assert path.read_bytes().startswith(PNG_MAGIC)
    table = "\n".join(utility_table(utility))
    assert "epsilon = 50" in table and "local DP-SGD" in table and "16-bit ring" in table
