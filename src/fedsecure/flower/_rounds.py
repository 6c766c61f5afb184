"""What both drop-in drivers share: their settings, and one secure round from global arrays to new arrays.

:class:`SecureAggregationWorkflow` (Flower's strategy API) and :class:`SecureGrid` (its Message API) differ only
in how a strategy hands over its fit instructions and takes back the result; the round itself is this.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._errors import ConfigurationError
from ..encoding import ClipMode, EncodingConfig, Quantizer, VectorSpec
from ..protocols import ProtocolKind, RoundConfig, ThreatModel
from ..runtime.flower import FlowerTransport, encoding_record

__all__ = ["RoundSummary", "SecureRounds"]

LOGGER = logging.getLogger("fedsecure.flower")
PROTOCOLS = (ProtocolKind.SECAGG, ProtocolKind.SECAGG_PLUS)


@dataclass(frozen=True)
class RoundSummary:
    """What one secure round did: who contributed, who dropped and why, whether it aggregated."""

    server_round: int
    aggregated: bool
    survivors: tuple[int, ...]
    dropped: dict[int, str] = field(default_factory=dict)
    reason: str = ""


@dataclass(frozen=True)
class RoundOutcome:
    """A secure round's result: the new arrays (None if it could not aggregate) and the clients' reports."""

    arrays: list[np.ndarray] | None
    summary: RoundSummary
    reports: Mapping[int, Mapping[str, float]]


class SecureRounds:
    """The drop-in's settings, checked once, and the secure round they run (see the drivers for each keyword)."""

    def __init__(self, *, protocol: ProtocolKind | str, threat: ThreatModel | None, clip: float, max_examples: int,
                 ring_bits: int, stage_timeout: float, fit_timeout: float) -> None:
        try:
            protocol = ProtocolKind(protocol)
        except ValueError:
            raise ConfigurationError(f"protocol must be one of {[p.value for p in PROTOCOLS]}",
                                     parameter="protocol") from None
        if protocol not in PROTOCOLS:
            raise ConfigurationError(f"the drop-in runs {', '.join(p.value for p in PROTOCOLS)}; "
                                     f"{protocol.value} runs on fedsecure's own Flower apps", parameter="protocol")
        if not clip > 0 or not np.isfinite(clip):
            raise ConfigurationError("clip must be a positive number (an L2 bound)", parameter="clip")
        if not isinstance(max_examples, int) or max_examples < 1:
            raise ConfigurationError("max_examples must be a positive integer", parameter="max_examples")
        self.protocol = protocol
        self.threat = threat or ThreatModel()
        self.clip = float(clip)
        self.max_examples = max_examples
        self.ring_bits = ring_bits
        self.stage_timeout = stage_timeout
        self.fit_timeout = fit_timeout
        #: Round ids have a random base, so a second run with the same nodes never repeats a configuration.
        self._round_base = secrets.randbits(62)
        self.summaries: list[RoundSummary] = []

    def secure_round(self, grid: Any, server_round: int, arrays: list[np.ndarray], nodes: Mapping[int, int],
            start_records: Mapping[int, Any]) -> RoundOutcome:
        """One secure round: ``nodes`` (client id -> node id) get ``start_records`` (the strategy's instructions)
        with the round start; the result is ``arrays`` plus the survivors' weighted mean update, in their dtypes."""
        spec = VectorSpec.from_parameters(arrays)
        flat = spec.flatten(arrays)

        def give_up(reason: str, dropped: dict[int, str] | None = None) -> RoundOutcome:
            LOGGER.warning("round %d could not aggregate securely (%s); the parameters are unchanged", server_round,
                           reason)
            summary = RoundSummary(server_round, False, (), dropped or {}, reason)
            self.summaries.append(summary)
            return RoundOutcome(None, summary, {})

        try:
            encoding = EncodingConfig.fit_scale(dimension=flat.size, clients=len(nodes), clip=self.clip,
                                                ring_bits=self.ring_bits, clip_mode=ClipMode.L2,
                                                max_weight=self.max_examples)
            config = RoundConfig.create(protocol=self.protocol, clients=nodes, encoding=encoding,
                                        round_id=self._round_base + server_round, threat=self.threat)
        except ConfigurationError as error:
            # A cohort the threat model cannot protect (too few clients for its dropouts, say): no round at all.
            return give_up(f"{len(nodes)} sampled clients: {error}")
        # Replies are pulled every 10 ms: a stage's latency, not its deadline, sets the round's time.
        transport = FlowerTransport(grid, stage_timeout=self.stage_timeout, start_timeout=self.fit_timeout,
                                    message_type="train", poll_interval=0.01)
        LOGGER.info("round %d: %d clients, fedsecure %s", server_round, len(nodes), self.protocol.value)
        report = transport.run_round(config, nodes, encoding_record(encoding), start_records=start_records,
                                     name=f"round {server_round}")
        dropped = {client: str(error) for client, error in report.client_errors.items()}
        if report.result is None:
            return give_up(str(report.abort) if report.abort is not None else "no result", dropped)
        decoded = Quantizer(encoding).decode_sum(report.result.ring_sum)
        if not decoded.total_weight:
            return give_up("the survivors reported no examples", dropped)
        new_arrays = list(spec.unflatten(flat + decoded.total / decoded.total_weight))  # each in its own dtype
        summary = RoundSummary(server_round, True, tuple(sorted(report.result.survivors)), dropped)
        self.summaries.append(summary)
        return RoundOutcome(new_arrays, summary, report.client_reports)
