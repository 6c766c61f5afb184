"""Secure aggregation for Flower's Message-API strategies (``flwr.serverapp.strategy``), which Flower's own
SecAgg+ does not cover.

A strategy of that API runs its rounds itself (``strategy.start(grid=..., ...)``) and sends each round's train
messages with ``grid.send_and_receive``. :class:`SecureGrid` wraps the ServerApp's grid and answers that call
with a secure round: the strategy's train messages (its arrays and config) go to the clients with fedsecure's
round start, each client's ``@app.train()`` function runs through :func:`secure_aggregation_mod`, and the
strategy receives, as every survivor's reply, the securely aggregated arrays (the weighted mean of the
updates, weights from the clients' ``num-examples``) with that client's own metrics. ``aggregate_train`` of
FedAvg, FedProx, FedAdam, FedYogi or a custom strategy then proceeds as usual. Evaluation messages, and any
other, pass through unchanged.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable
from typing import Any

import numpy as np

from .._errors import ConfigurationError
from ..encoding import ClipMode, EncodingConfig, Quantizer
from ..protocols import ProtocolKind, RoundConfig, ThreatModel
from ..runtime.flower import FlowerTransport, encoding_record
from ._workflow import _PROTOCOLS, RoundSummary

__all__ = ["SecureGrid"]

LOGGER = logging.getLogger("fedsecure.flower")


class SecureGrid:
    """A Flower ``Grid`` whose train rounds are aggregated securely: ``strategy.start(grid=SecureGrid(grid), ...)``.

    The keyword arguments are :class:`SecureAggregationWorkflow`'s. A client's reply must hold one ArrayRecord
    (the trained arrays, with the keys it was sent) and one MetricRecord with the strategy's weighting key
    (``num-examples``); metrics travel as they are, numbers only. A round that cannot aggregate gives the
    strategy only error replies, so it keeps its arrays.
    """

    def __init__(self, grid: Any, *, protocol: ProtocolKind | str = ProtocolKind.SECAGG_PLUS,
                 threat: ThreatModel | None = None, clip: float = 10.0, max_examples: int = 1 << 20,
                 ring_bits: int = 64, stage_timeout: float = 60.0, fit_timeout: float = 600.0,
                 weighted_by_key: str = "num-examples") -> None:
        try:
            protocol = ProtocolKind(protocol)
        except ValueError:
            raise ConfigurationError(f"protocol must be one of {[p.value for p in _PROTOCOLS]}",
                                     parameter="protocol") from None
        if protocol not in _PROTOCOLS:
            raise ConfigurationError(f"the drop-in runs {', '.join(p.value for p in _PROTOCOLS)}",
                                     parameter="protocol")
        if not clip > 0 or not np.isfinite(clip):
            raise ConfigurationError("clip must be a positive number (an L2 bound)", parameter="clip")
        self._grid = grid
        self.protocol = protocol
        self.threat = threat or ThreatModel()
        self.clip = float(clip)
        self.max_examples = max_examples
        self.ring_bits = ring_bits
        self.stage_timeout = stage_timeout
        self.fit_timeout = fit_timeout
        self.weighted_by_key = weighted_by_key
        self._round_base = secrets.randbits(62)
        self._rounds = 0
        self.summaries: list[RoundSummary] = []

    def __getattr__(self, name: str) -> Any:
        # Everything but send_and_receive is the wrapped grid's (run, node ids, create/push/pull messages).
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Iterable[Any], *, timeout: float | None = None) -> Iterable[Any]:
        from flwr.app.message_type import MessageType

        messages = list(messages)
        if not messages or any(m.metadata.message_type != MessageType.TRAIN for m in messages):
            replies: Iterable[Any] = self._grid.send_and_receive(messages, timeout=timeout)
            return replies
        return self._secure_round(messages)

    def _secure_round(self, messages: list[Any]) -> list[Any]:
        from flwr.app import Array, ArrayRecord, Error, Message, MetricRecord, RecordDict

        self._rounds += 1
        (key,) = messages[0].content.array_records.keys()
        record = messages[0].content.array_records[key]
        names = list(record.keys())
        arrays = [record[name].numpy() for name in names]
        flat = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays])
        by_client = dict(enumerate(messages))
        nodes = {client: message.metadata.dst_node_id for client, message in by_client.items()}
        try:
            encoding = EncodingConfig.fit_scale(dimension=flat.size, clients=len(nodes), clip=self.clip,
                                                ring_bits=self.ring_bits, clip_mode=ClipMode.L2,
                                                max_weight=self.max_examples)
            config = RoundConfig.create(protocol=self.protocol, clients=nodes, encoding=encoding,
                                        round_id=self._round_base + self._rounds, threat=self.threat)
        except ConfigurationError as error:
            # A cohort the threat model cannot protect (too few clients for its dropouts, say): no round at all.
            LOGGER.warning("train round %d: %d sampled clients cannot be aggregated securely: %s", self._rounds,
                           len(nodes), error)
            self.summaries.append(RoundSummary(self._rounds, False, (), {}, str(error)))
            return [Message(Error(code=0, reason=f"fedsecure: {error}"), reply_to=m) for m in messages]
        transport = FlowerTransport(self._grid, stage_timeout=self.stage_timeout, start_timeout=self.fit_timeout,
                                    message_type="train")
        start = {message.metadata.dst_node_id: message.content for message in messages}
        report = transport.run_round(config, nodes, encoding_record(encoding), start_records=start,
                                     name=f"train {self._rounds}")
        dropped = {client: str(error) for client, error in report.client_errors.items()}
        if report.result is None:
            reason = str(report.abort) if report.abort is not None else "no result"
            LOGGER.warning("train round %d could not aggregate securely (%s); the strategy receives only errors",
                           self._rounds, reason)
            self.summaries.append(RoundSummary(self._rounds, False, (), dropped, reason))
            return [Message(Error(code=0, reason=f"fedsecure: the round could not aggregate: {reason}"),
                            reply_to=message) for message in messages]
        decoded = Quantizer(encoding).decode_sum(report.result.ring_sum)
        total_weight = decoded.total_weight or 0
        if total_weight <= 0:
            self.summaries.append(RoundSummary(self._rounds, False, (), dropped, "zero total weight"))
            return [Message(Error(code=0, reason="fedsecure: the survivors reported no examples"), reply_to=m)
                    for m in messages]
        new_flat = flat + decoded.total / total_weight
        new_arrays: dict[str, Any] = {}
        offset = 0
        for name, array in zip(names, arrays):
            new_arrays[name] = Array(new_flat[offset:offset + array.size].reshape(array.shape).astype(array.dtype))
            offset += array.size
        survivors = sorted(report.result.survivors)
        replies = []
        for client, message in by_client.items():
            if client not in survivors:
                reason = dropped.get(client, "dropped from the secure round")
                replies.append(Message(Error(code=0, reason=f"fedsecure: {reason}"), reply_to=message))
                continue
            reported = report.client_reports.get(client, {})
            metrics: dict[str, int | float | list[int] | list[float]] = {
                k[len("metric-"):]: v for k, v in reported.items() if k.startswith("metric-")}
            metrics[self.weighted_by_key] = int(reported.get("num-examples", 1))
            content = RecordDict({key: ArrayRecord(dict(new_arrays)), "metrics": MetricRecord(metrics)})
            replies.append(Message(content, reply_to=message))
        self.summaries.append(RoundSummary(self._rounds, True, tuple(survivors), dropped))
        return replies
