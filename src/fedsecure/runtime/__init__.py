"""Transports that drive the sans-IO sessions: the in-process simulator (Flower comes later)."""

from ._schedule import DropoutSchedule, client_stages
from ._simulate import SimulationReport, client_data, plaintext_ring_sum, simulate
from ._simulator import Interceptor, RoundReport, Simulator, TranscriptRecord

__all__ = [
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
]
