"""Auditing aggregation protocols: checks on a round's transcript of what the server could have learnt."""

from ._checks import CHECKS, CheckResult, RoundTranscript, TranscriptError, parse_transcript, read_transcript, run_checks

__all__ = ["CHECKS", "CheckResult", "RoundTranscript", "TranscriptError", "parse_transcript", "read_transcript",
           "run_checks"]
