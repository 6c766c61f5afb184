"""The audit's outputs for people: a Markdown report and a terminal summary, from the same results as ``--json``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._attacks import AttackResult
from ._checks import CheckResult
from ._empirical import CanaryAudit
from ._leakage import LeakageResult

__all__ = ["report_json", "report_markdown", "summary_lines"]


def _yes_no(value: bool | None, *, yes: str, no: str) -> str:
    return "n/a" if value is None else (yes if value else no)


def report_markdown(*, transcript: str | None, checks: Sequence[CheckResult], attacks: Sequence[AttackResult],
                    leakage: Sequence[LeakageResult], audits: Sequence[tuple[CanaryAudit, bool]],
                    canaries: int | None, leakage_plot: str | None) -> str:
    """The report a reviewer reads: every check with its evidence, the attack table, leakage and the DP audit."""
    lines = ["# fedsecure audit report", ""]
    if checks:
        lines += [f"Transcript: `{transcript}`.", "", "| check | verdict | detail | evidence |", "|---|---|---|---|"]
        for result in checks:
            verdict = "n/a" if not result.applicable else ("pass" if result.passed else "**FAIL**")
            evidence = "<br>".join(result.evidence[:10]) + (" ..." if len(result.evidence) > 10 else "")
            lines.append(f"| {result.name} | {verdict} | {result.detail} | {evidence or '–'} |")
        lines.append("")
    if attacks:
        first = attacks[0]
        lines += ["## Attacks by a malicious server", "",
                  f"Each attack targets client 0 of {first.clients} ({first.protocol}). \"Defeated\" means the server "
                  "reconstructed the victim's update; the error is the relative L2 error of that reconstruction.",
                  "", "| attack | protective configuration defeated | weakened configuration defeated | "
                  "reconstruction error | what happened (protective / weakened) |", "|---|---|---|---|---|"]
        for attack in attacks:
            error = attack.weakened.reconstruction_error
            lines.append(f"| {attack.name} | {_yes_no(attack.protected.defeated, yes='**yes**', no='no')} | "
                         f"{_yes_no(attack.weakened.defeated, yes='**yes**', no='no')} | "
                         f"{'–' if error is None else f'{error:.2g}'} | {attack.protected.detail} / "
                         f"{attack.weakened.detail} |")
        lines.append("")
    if leakage:
        lines += ["## Gradient leakage on linear784", "",
                  "Each client sends the gradient of one example; client 0 is the victim. The attack divides a "
                  "weight-gradient row by its bias gradient in the victim's input message as the server receives it.",
                  "", "| protocol | relative L2 error of the reconstruction | secure sum correct |", "|---|---|---|"]
        lines += [f"| {r.protocol} | {r.relative_error:.3g} | {r.sum_correct} |" for r in leakage]
        if leakage_plot:
            lines += ["", f"![gradient leakage]({leakage_plot})"]
        lines.append("")
    if audits:
        lines += ["## Empirical privacy audit (one run, canaries)", "",
                  "Steinke, Nasr and Jagielski (NeurIPS 2023): canaries each included with probability 1/2 by a "
                  "coin from the OS, one release, guesses fixed from the claim in advance, zero-out adjacency (an "
                  "excluded canary client sends a zero update). A lower bound above the claimed epsilon proves the "
                  "claim false at the stated confidence.", "",
                  "| mechanism | canaries | noise multiplier (claimed) | correct / guesses | epsilon lower bound | "
                  "claimed epsilon | verdict |", "|---|---|---|---|---|---|---|"]
        for audit, miscalibrated in audits:
            name = audit.level + (
                f", {audit.claimed_noise_multiplier / audit.noise_multiplier:.3g}x too little noise"
                if miscalibrated else "")
            lines.append(f"| {name} | {audit.canaries} | {audit.noise_multiplier:.3g} "
                         f"({audit.claimed_noise_multiplier:.3g}) | "
                         f"{audit.correct} / {audit.guesses} | {audit.empirical_epsilon_lower_bound:.3g} "
                         f"({audit.confidence:.0%}) | {audit.claimed_epsilon:g} | "
                         f"{'**VIOLATION**' if audit.violation else 'consistent'} |")
        lines.append("")
    return "\n".join(lines)


#: What a check that does not apply says instead of its claim.
_NOT_APPLICABLE = {"dp-accounted": "no round ran under DP", "inputs-hidden": "no rounds",
                   "": "no SecAgg or SecAgg+ round to check"}


def summary_lines(*, checks: Sequence[CheckResult], attacks: Sequence[AttackResult],
                  leakage: Sequence[LeakageResult], audits: Sequence[tuple[CanaryAudit, bool]]) -> list[str]:
    """One line per finding (and the evidence of failed checks), for the terminal."""
    lines = []
    for result in checks:
        verdict = "n/a " if not result.applicable else ("PASS" if result.passed else "FAIL")
        # A check that does not apply to these rounds claims nothing about them.
        detail = result.detail if result.applicable else _NOT_APPLICABLE.get(result.name, _NOT_APPLICABLE[""])
        lines.append(f"{verdict}  {result.name:<22} {detail}")
        lines += [f"        {line}" for line in result.evidence[:20]]
        if len(result.evidence) > 20:
            lines.append(f"        ... and {len(result.evidence) - 20} more")
    for attack in attacks:
        error = attack.weakened.reconstruction_error
        shown = "" if error is None else f" (reconstruction error {error:.2g})"
        lines.append(f"attack   {attack.name:<17} protective: "
                     f"{_yes_no(attack.protected.defeated, yes='DEFEATED', no='held'):<8} weakened: "
                     f"{_yes_no(attack.weakened.defeated, yes='DEFEATED', no='held')}{shown}")
    for leak in leakage:
        lines.append(f"leakage  {leak.protocol:<10} reconstruction error {leak.relative_error:.3g} (relative L2)")
    for audit, miscalibrated in audits:
        name = audit.level + (" (10x too little noise)" if miscalibrated else "")
        lines.append(f"dp-audit {name:<34} epsilon >= {audit.empirical_epsilon_lower_bound:.3g} at "
                     f"{audit.confidence:.0%} ({audit.correct}/{audit.guesses} correct); claimed "
                     f"{audit.claimed_epsilon:g}: {'VIOLATION' if audit.violation else 'consistent'}")
    return lines


def report_json(*, transcript: str | None, checks: Sequence[CheckResult], attacks: Sequence[AttackResult],
                leakage: Sequence[LeakageResult], audits: Sequence[tuple[CanaryAudit, bool]]) -> dict[str, Any]:
    """The machine-readable audit (``--json`` and ``audit.json``)."""
    output: dict[str, Any] = {}
    if checks:
        output |= {"transcript": transcript, "checks": [r.to_json() for r in checks]}
    if attacks:
        output["attacks"] = [a.to_json() for a in attacks]
    if leakage:
        output["gradient_leakage"] = [r.to_json() for r in leakage]
    if audits:
        output["dp_audit"] = [a.to_json() | {"miscalibrated": m} for a, m in audits]
        output["claimed_epsilon"] = audits[0][0].claimed_epsilon
        output["empirical_epsilon_lower_bound"] = max(a.empirical_epsilon_lower_bound for a, m in audits if not m)
    return output
