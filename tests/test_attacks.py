"""Attack simulations: each fails against the protective configuration and, where one exists, succeeds against
the weakened one, reconstructing the victim's update."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedsecure.audit._attacks import ATTACKS, run_attack
from fedsecure.cli import main
from fedsecure.protocols import ProtocolKind

RECONSTRUCTING = ("split-view", "key-substitution", "below-threshold", "replay")


@pytest.mark.parametrize("name", RECONSTRUCTING)
@pytest.mark.parametrize("protocol, clients", [(ProtocolKind.SECAGG, 10), (ProtocolKind.SECAGG_PLUS, 60)])
def test_attack_fails_when_protected_and_reconstructs_when_weakened(name: str, protocol: ProtocolKind,
                                                                     clients: int) -> None:
    result = run_attack(name, protocol=protocol, clients=clients)
    assert result.protected.defeated is False, result.protected.detail
    assert result.protected.reconstruction_error is None
    assert result.weakened.defeated is True, result.weakened.detail
    # Exact up to the quantisation of the update.
    assert result.weakened.reconstruction_error is not None and result.weakened.reconstruction_error < 1e-6


def test_redirected_shares_have_no_weaker_configuration() -> None:
    # An envelope's key is pairwise, so a redirected envelope opens for no one; there is nothing to weaken.
    result = run_attack("redirect-shares", protocol=ProtocolKind.SECAGG, clients=8)
    assert result.protected.defeated is False, result.protected.detail
    assert result.weakened.defeated is None and "no weakened configuration" in result.weakened.detail


def test_sybils_hide_the_victim_only_behind_another_honest_client() -> None:
    result = run_attack("sybils", protocol=ProtocolKind.SECAGG, clients=8)
    # With every other client a sybil the victim's input falls out of the sum exactly.
    assert result.weakened.defeated is True and result.weakened.reconstruction_error < 1e-6
    assert "Nothing in the protocol prevents this" in result.weakened.detail
    # One other honest client leaves the server with the sum of two unknown inputs. That is a property of the
    # cohort, not a fedsecure setting, so the verdict is n/a and the detail and error show its effect.
    assert result.protected.defeated is None and "assumed one other honest client" in result.protected.detail
    assert result.protected.reconstruction_error is not None and result.protected.reconstruction_error > 0.3


def test_unknown_attack_and_protocol_are_refused() -> None:
    with pytest.raises(ValueError):
        run_attack("telepathy")
    with pytest.raises(ValueError):
        run_attack("split-view", protocol=ProtocolKind.PLAINTEXT)


def test_cli_attack_all(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "--attack", "all", "--clients", "10", "--json", "--report", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [a["name"] for a in out["attacks"]] == list(ATTACKS)
    for attack in out["attacks"]:
        assert {"name", "protected_config_defeated", "weakened_config_defeated", "reconstruction_error"} <= attack.keys()
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "| split-view | no | **yes** |" in report and "| sybils | n/a | **yes** |" in report
    # "all" is the whole audit: a fresh round's transcript checked, and (with torch) leakage and the DP audit.
    assert (tmp_path / "transcript.jsonl").exists() and all(c["passed"] for c in out["checks"])
    if "gradient_leakage" in out:
        assert (tmp_path / "gradient_leakage.png").exists()
        assert out["empirical_epsilon_lower_bound"] <= out["claimed_epsilon"]
