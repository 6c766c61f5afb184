"""Transcripts and the auditor's checks: a real round passes, and each check fails on a transcript doctored to break it."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedsecure.audit import RoundTranscript, TranscriptError, read_transcript, run_checks
from fedsecure.cli import main
from fedsecure.protocols import ProtocolKind, Stage, ThreatModel
from fedsecure.runtime import DropoutSchedule, simulate, write_transcript

THREAT = ThreatModel()


def _lines(protocol: ProtocolKind = ProtocolKind.SECAGG_PLUS, clients: int = 12, round_id: int = 0,
           schedule: DropoutSchedule | None = None) -> list[dict[str, Any]]:
    # Clients 0 and 1 drop after sending their masked inputs' shares: the server asks for their key shares.
    schedule = schedule or DropoutSchedule.at_stages({Stage.MASKED_INPUT: [0, 1]})
    report = simulate(protocol=protocol, clients=clients, dimension=16, threat=THREAT, schedule=schedule,
                      round_id=round_id, record_fields=True)
    assert report.correct
    return report.transcript()


def _checks(lines: list[dict[str, Any]], tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "t.jsonl"
    write_transcript(path, [lines])
    return {result.name: result for result in run_checks(read_transcript(path))}


def _messages(lines: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [line for line in lines if line["kind"] == "message" and line["type"] == kind]


@pytest.mark.parametrize("protocol", [ProtocolKind.SECAGG, ProtocolKind.SECAGG_PLUS])
def test_an_honest_round_passes_every_check(protocol: ProtocolKind, tmp_path: Path) -> None:
    results = _checks(_lines(protocol), tmp_path)
    assert all(result.passed for result in results.values()), results
    # Every check applies to a simulated round except the DP one: no DP ran.
    assert [name for name, result in results.items() if not result.applicable] == ["dp-accounted"]


def test_transcript_has_public_fields_and_never_a_share_value_or_vector(tmp_path: Path) -> None:
    lines = _lines()
    header, outcome = lines[0], lines[-1]
    assert header["kind"] == "round" and header["format"] == "fedsecure-transcript" and header["version"] == 1
    assert outcome["kind"] == "outcome" and outcome["survivors"] == list(range(2, 12))
    advertised = _messages(lines, "AdvertiseKeys")[0]["fields"]
    assert len(bytes.fromhex(advertised["cipher_public_key"])) == 32
    unmasking = _messages(lines, "UnmaskingShares")[0]["fields"]
    assert {share["owner"] for share in unmasking["key_shares"]} == {0, 1}
    assert all(set(share) == {"owner"} for share in unmasking["self_mask_shares"] + unmasking["key_shares"])
    masked = _messages(lines, "MaskedInput")[0]["fields"]
    assert set(masked["vector"]) == {"length", "sha256"}
    # Every line is JSON; nothing in the file is a share value or a vector element.
    text = "\n".join(json.dumps(line) for line in lines)
    assert '"value"' not in text


def test_double_reveal_is_caught(tmp_path: Path) -> None:
    lines = _lines()
    # The server asks every survivor for client 0's self-mask share too, although client 0 dropped: doctor
    # every UnmaskingShares to carry it.
    for message in _messages(lines, "UnmaskingShares"):
        message["fields"]["self_mask_shares"].append({"owner": 0})
    result = _checks(lines, tmp_path)["no-double-reveal"]
    assert not result.passed and "client 0" in result.evidence[0]


def test_weak_threshold_is_caught(tmp_path: Path) -> None:
    lines = _lines()
    lines[0]["threshold"] = 2
    result = _checks(lines, tmp_path)["graph-security-bound"]
    assert not result.passed and "t=2" in result.evidence[0]


def test_missing_threat_model_fails_the_bound(tmp_path: Path) -> None:
    lines = _lines()
    lines[0]["threat"] = None
    assert not _checks(lines, tmp_path)["graph-security-bound"].passed


def test_short_neighbourhood_is_caught(tmp_path: Path) -> None:
    lines = _lines(clients=60)
    assert lines[0]["degree"] < 60
    first = next(iter(lines[0]["neighbours"]))
    lines[0]["neighbours"][first] = lines[0]["neighbours"][first][:-1]
    result = _checks(lines, tmp_path)["graph-security-bound"]
    assert not result.passed and f"client {first}" in result.evidence[0]


def test_reused_public_key_is_caught_within_and_across_rounds(tmp_path: Path) -> None:
    lines = _lines()
    adverts = _messages(lines, "AdvertiseKeys")
    adverts[1]["fields"]["mask_public_key"] = adverts[0]["fields"]["mask_public_key"]
    assert not _checks(lines, tmp_path)["fresh-public-keys"].passed
    # Across rounds: round 1 re-advertises a key of round 0.
    first, second = _lines(round_id=0), _lines(round_id=1)
    _messages(second, "AdvertiseKeys")[3]["fields"]["cipher_public_key"] = (
        _messages(first, "AdvertiseKeys")[3]["fields"]["cipher_public_key"])
    path = tmp_path / "two.jsonl"
    write_transcript(path, [first, second])
    results = {r.name: r for r in run_checks(read_transcript(path))}
    assert not results["fresh-public-keys"].passed and "round 0" in results["fresh-public-keys"].evidence[0]
    assert results["no-double-reveal"].passed


def test_ring_without_headroom_is_caught(tmp_path: Path) -> None:
    lines = _lines()
    lines[0]["max_coordinate"] = 2**30
    result = _checks(lines, tmp_path)["ring-headroom"]
    assert not result.passed


def test_redirected_or_replayed_share_is_caught(tmp_path: Path) -> None:
    lines = _lines()
    deliveries = _messages(lines, "SharesDelivery")
    redirected = copy.deepcopy(lines)
    target = _messages(redirected, "SharesDelivery")
    # The server hands recipient A the envelope B's neighbour sealed for B.
    target[0]["fields"]["shares"][0] = copy.deepcopy(deliveries[1]["fields"]["shares"][0])
    assert not _checks(redirected, tmp_path)["share-binding"].passed
    replayed = copy.deepcopy(lines)
    again = _messages(replayed, "SharesDelivery")[0]
    again["fields"]["shares"].append(copy.deepcopy(again["fields"]["shares"][0]))
    again["fields"]["shares"][-1]["peer"] = again["fields"]["shares"][0]["peer"]
    assert not _checks(replayed, tmp_path)["share-binding"].passed


@pytest.mark.parametrize("damage, complaint", [
    (lambda text: text.replace('"version":1', '"version":9', 1), "version 1 header"),
    (lambda text: text.replace('"seq":3,', '"seq":4,', 1), "out of order"),
    (lambda text: "\n".join(text.splitlines()[:-1]) + "\n", "no outcome"),
    (lambda text: text + "{not json\n", "not JSON"),
    (lambda text: text.replace('"kind":"message"', '"kind":"gossip"', 1), "unknown line kind"),
])
def test_malformed_transcripts_are_refused_with_the_line(damage: Any, complaint: str, tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    write_transcript(path, [_lines()])
    path.write_text(damage(path.read_text(encoding="utf-8")), encoding="utf-8")
    with pytest.raises(TranscriptError, match=complaint):
        read_transcript(path)


def test_cli_simulate_writes_a_transcript_and_audit_reads_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "round.jsonl"
    assert main(["simulate", "--clients", "15", "--dim", "50", "--quiet", "--transcript", str(path)]) == 0
    capsys.readouterr()
    assert main(["audit", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {c["name"] for c in report["checks"]} == {"inputs-hidden", "no-double-reveal", "graph-security-bound",
                                                    "fresh-public-keys", "ring-headroom", "share-binding",
                                                    "dp-accounted"}
    assert all(c["passed"] for c in report["checks"])
    # A doctored file fails with exit status 1; a broken one is refused with 2.
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    lines[0]["threshold"] = 1
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n", encoding="utf-8")
    assert main(["audit", str(path)]) == 1
    assert "FAIL  graph-security-bound" in capsys.readouterr().out
    assert main(["audit", str(tmp_path / "missing.jsonl")]) == 2


def test_round_transcript_helpers() -> None:
    round_ = RoundTranscript(header={"round_id": 7}, messages=[{"type": "A"}, {"type": "B"}, {"type": "A"}])
    assert round_.round_id == 7 and len(round_.of_type("A")) == 2


def test_gradient_leakage_reads_plaintext_exactly_and_secagg_as_noise(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    from fedsecure.audit._leakage import gradient_leakage, plot_leakage

    plain = gradient_leakage(ProtocolKind.PLAINTEXT, clients=5)
    # Exact up to the 32-bit quantisation of the update.
    assert plain.relative_error < 1e-5 and plain.sum_correct
    for protocol in (ProtocolKind.SECAGG, ProtocolKind.SECAGG_PLUS):
        masked = gradient_leakage(protocol, clients=5)
        assert masked.sum_correct
        assert masked.relative_error > 0.5
        # The masked vector tells the attacker nothing about the image: no correlation with it.
        correlation = np.corrcoef(masked.reconstruction, masked.victim_input)[0, 1]
        assert abs(correlation) < 0.2
    png = plot_leakage([plain], tmp_path / "leak.png")
    assert png.read_bytes().startswith(b"\x89PNG")


def test_cli_audit_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    transcript = tmp_path / "round.jsonl"
    assert main(["simulate", "--clients", "8", "--dim", "20", "--quiet", "--transcript", str(transcript)]) == 0
    capsys.readouterr()
    report = tmp_path / "report"
    assert main(["audit", str(transcript), "--leakage", "--clients", "4", "--report", str(report), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert json.loads((report / "audit.json").read_text(encoding="utf-8")) == printed
    assert [r["protocol"] for r in printed["gradient_leakage"]] == ["plaintext", "secagg", "secagg+"]
    text = (report / "report.md").read_text(encoding="utf-8")
    assert "| no-double-reveal | pass |" in text and "gradient_leakage.png" in text
    assert (report / "gradient_leakage.png").read_bytes().startswith(b"\x89PNG")
    assert main(["audit"]) == 2


def test_withheld_share_is_caught(tmp_path: Path) -> None:
    lines = _lines()
    delivery = _messages(lines, "SharesDelivery")[0]
    withheld = delivery["fields"]["shares"].pop(0)
    result = _checks(lines, tmp_path)["share-binding"]
    assert not result.passed and "withheld" in result.evidence[0]
    assert f"of {withheld['peer']}'s others" in result.evidence[0]


@pytest.fixture(scope="module")
def dp_transcripts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("torch")
    pytest.importorskip("opacus")
    pytest.importorskip("sklearn")
    root = tmp_path_factory.mktemp("dp")
    paths = {}
    for level in ("central", "distributed", "local"):
        paths[level] = root / f"{level}.jsonl"
        assert main(["train", "--example", "linear784", "--rounds", "2", "--clients", "6", "--dp", level,
                     "--epsilon", "20", "--transcript", str(paths[level]), "--quiet", "--json"]) == 0
    return paths


def _load(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _check_lines(lines: list[dict[str, Any]], tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "doctored.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return {result.name: result for result in run_checks(read_transcript(path))}


def test_training_transcripts_record_dp_and_pass(dp_transcripts: dict[str, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    for level, path in dp_transcripts.items():
        rounds = read_transcript(path)
        assert len(rounds) == 2 and all(r.header["dp"]["level"] == level for r in rounds)
        results = {r.name: r for r in run_checks(rounds)}
        assert all(r.passed for r in results.values()), results
        assert results["dp-accounted"].applicable
        epsilons = [r.header["dp"]["epsilon"] for r in rounds]
        assert epsilons == sorted(epsilons) and epsilons[-1] <= 20.0 + 1e-9
    # Distributed DP has no hard coordinate bound: the ring check reads the plan's wrap probability instead.
    assert read_transcript(dp_transcripts["distributed"])[0].header["max_coordinate"] is None


@pytest.mark.parametrize("damage, check", [
    (lambda rounds: rounds[-1]["dp"].update(epsilon=25.0), "dp-accounted"),
    (lambda rounds: rounds[-1]["dp"].update(epsilon=rounds[0]["dp"]["epsilon"] / 2), "dp-accounted"),
    (lambda rounds: rounds[0]["dp"].update(mechanism=None), "dp-accounted"),
])
def test_dp_check_fails_on_doctored_training_transcripts(dp_transcripts: dict[str, Path], tmp_path: Path,
                                                         damage: Any, check: str) -> None:
    lines = _load(dp_transcripts["central"])
    damage([line for line in lines if line["kind"] == "round"])
    assert not _check_lines(lines, tmp_path)[check].passed


def test_local_dp_records_the_epsilon_after_each_round(dp_transcripts: dict[str, Path]) -> None:
    rounds = read_transcript(dp_transcripts["local"])
    epsilons = [r.header["dp"]["epsilon"] for r in rounds]
    assert 0 < epsilons[0] < epsilons[1] <= 20.0 + 1e-9


def test_a_missing_dp_record_or_a_fake_bound_is_caught(dp_transcripts: dict[str, Path], tmp_path: Path) -> None:
    lines = _load(dp_transcripts["central"])
    [line for line in lines if line["kind"] == "round"][-1]["dp"] = None
    assert not _check_lines(lines, tmp_path)["dp-accounted"].passed
    # A round without a coordinate bound passes only as distributed DP with a small wrap probability.
    lines = _load(dp_transcripts["central"])
    header = [line for line in lines if line["kind"] == "round"][0]
    header["max_coordinate"] = None
    header["dp"] |= {"wrap_bound": 0.0, "wrap_probability": 1.0}
    assert not _check_lines(lines, tmp_path)["ring-headroom"].passed


def test_distributed_dp_ring_and_bits_are_checked(dp_transcripts: dict[str, Path], tmp_path: Path) -> None:
    lines = _load(dp_transcripts["distributed"])
    headers = [line for line in lines if line["kind"] == "round"]
    headers[0]["dp"]["wrap_bound"] = 0.5
    assert not _check_lines(lines, tmp_path)["ring-headroom"].passed
    lines = _load(dp_transcripts["distributed"])
    [line for line in lines if line["kind"] == "round"][1]["dp"]["bits"] = 16
    assert not _check_lines(lines, tmp_path)["dp-accounted"].passed


def test_a_plaintext_round_fails_the_audit_and_not_applicable_checks_claim_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "plain.jsonl"
    assert main(["simulate", "--protocol", "plaintext", "--clients", "4", "--dim", "20", "--quiet",
                 "--transcript", str(path)]) == 0
    capsys.readouterr()
    assert main(["audit", str(path)]) == 1  # the server saw every update: the check fails, and says so
    out = capsys.readouterr().out
    assert "FAIL  inputs-hidden" in out and "the server saw each of its 4 clients' updates" in out
    assert "reached its intended recipient" not in out and "never held" not in out
    assert "n/a   share-binding          no SecAgg or SecAgg+ round to check" in out


@pytest.mark.parametrize("level", ["central", "distributed"])
def test_dp_accounted_recomputes_epsilon_from_the_recorded_noise(dp_transcripts: dict[str, Path], tmp_path: Path,
                                                                 level: str) -> None:
    # Epsilons that only shrink consistently (each round's halved, still rising and within the target) are caught
    # because the recorded noise and contributors give more.
    lines = _load(dp_transcripts[level])
    for header in [line for line in lines if line["kind"] == "round"]:
        header["dp"]["epsilon"] /= 2
    result = _check_lines(lines, tmp_path)["dp-accounted"]
    assert not result.passed and "recorded noise and contributors" in " ".join(result.evidence)
    if level == "distributed":
        # A plan whose noise multiplier is not what its own local variance gives cannot pass either. (Whether the
        # noise a record states was really added is the canary audit's question, not the transcript's.)
        lines = _load(dp_transcripts[level])
        header = [line for line in lines if line["kind"] == "round"][0]
        plan = json.loads(header["dp"]["plan"])
        plan["noise_multiplier"] *= 3
        header["dp"]["plan"] = json.dumps(plan)
        assert not _check_lines(lines, tmp_path)["dp-accounted"].passed


def _outcomes(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line["kind"] == "outcome"]


@pytest.mark.parametrize("level, damage, why", [
    # The same survivor counted twice would add a noise share nobody added.
    ("distributed", lambda lines: _outcomes(lines)[0]["survivors"].append(_outcomes(lines)[0]["survivors"][0]),
     "listed twice"),
    ("distributed", lambda lines: _outcomes(lines)[0]["survivors"].append(999), "not among the round's clients"),
    ("distributed", lambda lines: _headers(lines)[0]["dp"].update(sample_rate=0.0), "sampling rate"),
    ("distributed", lambda lines: _headers(lines)[0]["dp"].update(mechanism="skellam"), "plan is ddgauss"),
    ("central", lambda lines: _headers(lines)[0]["dp"].update(sample_rate=1e-9), "sampling rate"),
    ("central", lambda lines: _headers(lines)[0]["dp"].update(delta=0.0), "delta"),
    ("central", lambda lines: _headers(lines)[0]["dp"].update(epsilon=-1.0), "finite non-negative"),
    # Renaming a level to skip recomputation: an unknown name, or local DP on a record with central fields.
    ("central", lambda lines: [h["dp"].update(level="Central") for h in _headers(lines)], "not central"),
    ("central", lambda lines: [h["dp"].update(level="local") for h in _headers(lines)], "not one of local"),
    ("central", lambda lines: [h["dp"].update(level="local", mechanism="gaussian (DP-SGD, per client)")
                               for h in _headers(lines)], "local-DP record names user-level adjacency"),
    ("distributed", lambda lines: [h["dp"].update(level="central") for h in _headers(lines)], "not one of central"),
    ("distributed", lambda lines: [h["dp"].update(level="central", mechanism="gaussian") for h in _headers(lines)],
     "central-DP record carries a distributed plan"),
    ("central", lambda lines: _headers(lines)[1]["dp"].update(level="distributed"), "changes"),
    # One run has one population and one delta.
    ("distributed", lambda lines: _headers(lines)[1]["dp"].update(sample_rate=0.5), "changes mid-run"),
    ("central", lambda lines: _headers(lines)[1]["dp"].update(delta=1e-3), "changes mid-run"),
    # And one adjacency: a last round relabelled replace-one, with the epsilon of the mixed composition, would
    # claim replace-one for the run at less than its rounds cost under replace-one.
    ("central", lambda lines: _mix_adjacencies(lines), "changes mid-run"),
    ("distributed", lambda lines: _mix_adjacencies(lines), "changes mid-run"),
    # A plan made to look less noisy after the fact (a tenth of the clip, every derived field recomputed to match)
    # is no longer the plan the round's encoding digest binds; without the rotation seed nothing binds it.
    ("distributed", lambda lines: _shrink_clip(_headers(lines)[0]), "encoding digest binds"),
    ("distributed", lambda lines: _headers(lines)[0].update(rotation_seed=None), "no 32-byte rotation seed"),
    # A plan of 2^39 coordinates: refused for not being the round's vectors, without building its rotation.
    ("distributed", lambda lines: _headers(lines)[0]["dp"].update(plan=_resized_plan(_headers(lines)[0], 2**39)),
     "pads to 549755813888 coordinates"),
    ("distributed", lambda lines: (_headers(lines)[0]["dp"].update(plan=_resized_plan(_headers(lines)[0], 2**39)),
                                   _headers(lines)[0].update(vector_length=2**39)), "encoding digest binds"),
    # Survivors must be the senders of masked inputs the server named in its unmask requests.
    ("distributed", lambda lines: _outcomes(lines)[0]["survivors"].pop(), "unmask request"),
    # A round that released its sum cannot be relabelled as aborted to spend nothing.
    ("distributed", lambda lines: (_outcomes(lines)[1].update(aborted=True),
                                   _headers(lines)[1]["dp"].update(noise_multiplier=None)), "unmasking shares"),
    # Under central DP a round without noise is a refusal, which only a budget the release would exceed justifies.
    ("central", lambda lines: (_outcomes(lines)[1].update(aborted=True),
                               _headers(lines)[1]["dp"].update(noise_multiplier=None,
                                                               epsilon=_headers(lines)[0]["dp"]["epsilon"])),
     "nothing justifies a refusal"),
    ("central", lambda lines: _headers(lines)[1]["dp"].update(noise_multiplier=None,
                                                              epsilon=_headers(lines)[0]["dp"]["epsilon"]),
     "nothing justifies a refusal"),
    # The target is the run's: one round's lowered to what was spent would make a hidden release look refused.
    ("central", lambda lines: _headers(lines)[1]["dp"].update(target_epsilon=_headers(lines)[0]["dp"]["epsilon"]),
     "changes mid-run"),
    ("central", lambda lines: [h["dp"].update(target_epsilon=float("nan")) for h in _headers(lines)],
     "target epsilon"),
    # Encoding parameters no round can have are refused, not packed into a digest (which would raise).
    ("central", lambda lines: _headers(lines)[0]["encoding"].update(dimension=2**64), "not a quantised encoding's"),
    ("local", lambda lines: _headers(lines)[0]["encoding"].update(max_weight=2**70), "weight bound"),
])
def test_dp_accounted_refuses_records_that_cannot_be_reaccounted(dp_transcripts: dict[str, Path], tmp_path: Path,
                                                                 level: str, damage: Any, why: str) -> None:
    lines = _load(dp_transcripts[level])
    damage(lines)
    result = _check_lines(lines, tmp_path)["dp-accounted"]
    assert not result.passed and why in " ".join(result.evidence), result.evidence


def _headers(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line["kind"] == "round"]


def _mix_adjacencies(lines: list[dict[str, Any]]) -> None:
    from fedsecure.dp import Adjacency, DistributedPlan, rdp_to_epsilon
    from fedsecure.dp._accounting import GAUSSIAN_ORDERS
    from fedsecure.dp._ledger import central_rdp

    first, last = (h["dp"] for h in _headers(lines))
    rdp: Any = 0
    for dp, outcome, adjacency in zip((first, last), _outcomes(lines), (Adjacency.ZERO_OUT, Adjacency.REPLACE_ONE)):
        if dp["level"] == "central":
            orders = GAUSSIAN_ORDERS
            rdp = rdp + central_rdp(dp["noise_multiplier"] / adjacency.sensitivity_factor, 1.0, orders)
        else:
            plan = DistributedPlan.from_json(dp["plan"], max_dimension=2**20)
            orders, rdp = plan.orders, rdp + plan.rdp(len(outcome["survivors"]), adjacency=adjacency)
    last.update(adjacency="replace-one", epsilon=rdp_to_epsilon(orders, rdp, last["delta"]))
    for dp in (first, last):
        dp["target_epsilon"] = None


def _resized_plan(header: dict[str, Any], padded: int) -> str:
    # Every derived field recomputed to match, so that only the size is wrong.
    from fedsecure.dp._accounting import rounded_l1_bound, rounded_l2_bound

    plan = json.loads(header["dp"]["plan"])
    plan.update(dimension=padded, padded_dimension=padded)
    l2 = rounded_l2_bound(plan["clip"] * plan["scale"], padded, plan["beta"])
    plan.update(l2_sensitivity=l2, l1_sensitivity=rounded_l1_bound(l2, padded),
                noise_multiplier=math.sqrt(plan["expected_clients"] * plan["local_variance"]) / l2)
    return json.dumps(plan)


def _shrink_clip(header: dict[str, Any]) -> None:
    from fedsecure.dp._accounting import rounded_l1_bound, rounded_l2_bound

    plan = json.loads(header["dp"]["plan"])
    plan["clip"] /= 10
    l2 = rounded_l2_bound(plan["clip"] * plan["scale"], plan["padded_dimension"], plan["beta"])
    plan.update(l2_sensitivity=l2, l1_sensitivity=rounded_l1_bound(l2, plan["padded_dimension"]),
                noise_multiplier=math.sqrt(plan["expected_clients"] * plan["local_variance"]) / l2)
    header["dp"]["plan"] = json.dumps(plan)
    header["dp"]["noise_multiplier"] = plan["noise_multiplier"]


def test_dp_accounted_reports_the_servers_epsilon_which_a_claimed_population_cannot_lower(
        dp_transcripts: dict[str, Path], tmp_path: Path) -> None:
    # A transcript cannot show how many users the cohorts were drawn from: claiming a huge population (a tiny
    # sampling rate) in every round passes, but the check reports the epsilon against the server beside it,
    # recomputed without amplification, and that is the honest run's.
    lines = _load(dp_transcripts["distributed"])
    honest = _headers(lines)[-1]["dp"]["epsilon"]
    for header in _headers(lines):
        header["dp"]["sample_rate"] = 1e-9
    result = _check_lines(lines, tmp_path)["dp-accounted"]
    assert result.passed, result.evidence
    reported = float(result.detail.split("against the server, which knows every cohort: epsilon ")[1].split()[0])
    assert reported == pytest.approx(honest, rel=1e-3)


def test_dp_accounted_passes_an_honest_sampled_distributed_run(dp_transcripts: dict[str, Path], tmp_path: Path) -> None:
    # The ledger reports the smaller of the amplified and the unamplified composition; the check recomputes the
    # same, so a run at a sampling rate where the unamplified one is smaller is not failed for it.
    from fedsecure.dp import DistributedPlan

    lines = _load(dp_transcripts["distributed"])
    for rounds, header in enumerate(_headers(lines), 1):
        dp = header["dp"]
        plan = DistributedPlan.from_json(dp["plan"], max_dimension=2**20)
        survivors = len(_outcomes(lines)[rounds - 1]["survivors"])
        amplified = plan.epsilon(survivors=survivors, rounds=rounds, delta=dp["delta"], sample_rate=0.5)
        assert amplified <= plan.epsilon(survivors=survivors, rounds=rounds, delta=dp["delta"])
        dp.update(sample_rate=0.5, epsilon=amplified, target_epsilon=None)
    result = _check_lines(lines, tmp_path)["dp-accounted"]
    assert result.passed, result.evidence


@pytest.mark.parametrize("disguise, why", [
    ("relabel", "encoding is distributed DP's"),
    # Dropping the rotation seed leaves no quantised encoding to tie the record to.
    ("drop seed", "no quantised encoding"),
    # Quantised parameters put in its place do not give the round's encoding digest, which is over the plan.
    ("forge encoding", "encoding digest binds"),
])
def test_dp_accounted_refuses_a_distributed_round_relabelled_as_central(dp_transcripts: dict[str, Path],
                                                                        tmp_path: Path, disguise: str,
                                                                        why: str) -> None:
    lines = _load(dp_transcripts["distributed"])
    honest = _load(dp_transcripts["central"])
    for header, central in zip(_headers(lines), _headers(honest)):
        header["dp"].pop("plan")
        header["dp"].update(level="central", mechanism="gaussian", noise_multiplier=50.0)
        header["max_coordinate"] = 1000
        if disguise != "relabel":
            header["rotation_seed"] = None
        if disguise == "forge encoding":
            header["encoding"] = central["encoding"]
    result = _check_lines(lines, tmp_path)["dp-accounted"]
    assert not result.passed and why in " ".join(result.evidence), result.evidence


@pytest.mark.parametrize("protocol", ["plaintext", "paillier"])
def test_dp_accounted_sees_a_central_release_relabelled_as_aborted_over_other_protocols(
        tmp_path: Path, protocol: str) -> None:
    # The plaintext baseline's server holds the inputs, and a separate Paillier key holder sends it the decrypted
    # aggregate: either way it recovered the sum, whatever the outcome line says.
    pytest.importorskip("torch")
    pytest.importorskip("opacus")
    pytest.importorskip("sklearn")
    path = tmp_path / f"{protocol}.jsonl"
    assert main(["train", "--example", "linear784", "--rounds", "2", "--clients", "4", "--protocol", protocol,
                 "--key-bits", "1024", "--insecure-small-keys", "--dp", "central", "--epsilon", "20",
                 "--transcript", str(path), "--quiet", "--json"]) == 0
    lines = _load(path)
    assert _check_lines(lines, tmp_path)["dp-accounted"].passed
    _outcomes(lines)[1].update(aborted=True, survivors=[])
    _headers(lines)[1]["dp"].update(noise_multiplier=None, epsilon=_headers(lines)[0]["dp"]["epsilon"])
    result = _check_lines(lines, tmp_path)["dp-accounted"]
    assert "nothing justifies a refusal" in " ".join(result.evidence), result.evidence


def test_dp_accounted_reads_a_clip_written_as_an_integer(dp_transcripts: dict[str, Path], tmp_path: Path) -> None:
    # A user's clip of 10 is written by JSON as the integer 10; the encoding it gives is the same.
    lines = _load(dp_transcripts["central"])
    for header in _headers(lines):
        assert header["encoding"]["clip"] == 10.0
        header["encoding"]["clip"] = 10
    result = _check_lines(lines, tmp_path)["dp-accounted"]
    assert result.passed, result.evidence


def test_dp_accounted_passes_a_central_round_refused_over_budget(tmp_path: Path) -> None:
    # An honest refusal: the server has the sum, but releasing it would take epsilon above the target, so the
    # round releases nothing and spends nothing. Its record has no noise, and the check accepts it.
    pytest.importorskip("torch")
    pytest.importorskip("opacus")
    pytest.importorskip("sklearn")
    import dataclasses

    from fedsecure.dp import DPConfig, PrivacyLevel
    from fedsecure.fl import train_federated
    from fedsecure.fl.examples import linear784
    from fedsecure.protocols import ProtocolKind

    experiment = linear784(protocol=ProtocolKind.SECAGG_PLUS, clients=6)
    path = tmp_path / "refused.jsonl"
    federation = dataclasses.replace(
        experiment.federation, transcript=str(path),
        dp=DPConfig(level=PrivacyLevel.CENTRAL, delta=1e-5, target_epsilon=20.0, rounds=1, refuse_over_budget=True))
    result = train_federated(federation, rounds=2, evaluate=experiment.evaluate)
    assert [r.aborted for r in result.history] == [False, True]
    lines = _load(path)
    assert _headers(lines)[1]["dp"]["noise_multiplier"] is None and not _outcomes(lines)[1]["aborted"]
    checked = _check_lines(lines, tmp_path)["dp-accounted"]
    assert checked.passed, checked.evidence
    # The same record with a target the release would have kept is a hidden release.
    for header in _headers(lines):
        header["dp"]["target_epsilon"] = 1e6
    assert "nothing justifies a refusal" in " ".join(_check_lines(lines, tmp_path)["dp-accounted"].evidence)
