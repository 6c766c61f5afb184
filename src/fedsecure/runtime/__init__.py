"""Transports that drive the sans-IO sessions: the in-process simulator here, Flower in ``fedsecure.runtime.flower``."""

from ._schedule import DropoutSchedule, client_stages
from ._simulate import SimulationReport, client_data, plaintext_ring_sum, simulate
from ._simulator import Interceptor, RoundReport, Simulator, TranscriptRecord
from ._transcript import TRANSCRIPT_FORMAT, TRANSCRIPT_VERSION, transcript_lines, write_transcript

__all__ = [
    "TRANSCRIPT_FORMAT",
    "TRANSCRIPT_VERSION",
    "DropoutSchedule",
    "Interceptor",
    "RoundReport",
    "SimulationReport",
    "Simulator",
    "TranscriptRecord",
    "client_data",
    "client_stages",
    "plaintext_ring_sum",
    "simulate",
    "transcript_lines",
    "write_transcript",
]
