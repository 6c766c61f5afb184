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

import os
from collections.abc import Iterable
from typing import Any

from ..dp import DPConfig
from ..protocols import IdentityKeys, ProtocolKind, ThreatModel
from ._rounds import SecureRounds

__all__ = ["SecureGrid"]


class SecureGrid(SecureRounds):
    """A Flower ``Grid`` whose train rounds are aggregated securely: ``strategy.start(grid=SecureGrid(grid), ...)``.

    The keyword arguments are :class:`SecureAggregationWorkflow`'s, and ``weighted_by_key`` the strategy's. A
    client's reply must hold one ArrayRecord (the trained arrays, with the keys it was sent) and one MetricRecord
    with ``num-examples``; metrics travel as they are, numbers only. A round that cannot aggregate gives the
    strategy only error replies, so it keeps its arrays; :attr:`summaries` says why.
    """

    def __init__(self, grid: Any, *, protocol: ProtocolKind | str = ProtocolKind.SECAGG_PLUS,
                 threat: ThreatModel | None = None, clip: float = 10.0, max_examples: int = 1 << 20,
                 ring_bits: int = 64, stage_timeout: float = 60.0, fit_timeout: float = 600.0,
                 identities: IdentityKeys | str | os.PathLike[str] | None = None,
                 paillier: str | os.PathLike[str] | None = None, dp: DPConfig | None = None,
                 weighted_by_key: str = "num-examples") -> None:
        super().__init__(protocol=protocol, threat=threat, clip=clip, max_examples=max_examples, ring_bits=ring_bits,
                         stage_timeout=stage_timeout, fit_timeout=fit_timeout, identities=identities,
                         paillier=paillier, dp=dp)
        self._grid = grid
        self.weighted_by_key = weighted_by_key
        self._rounds = 0

    def __getattr__(self, name: str) -> Any:
        # Everything but send_and_receive is the wrapped grid's (run, node ids, create/push/pull messages).
        return getattr(self._grid, name)

    @property
    def run(self) -> Any:
        """The wrapped grid's run (Flower's ``Grid.run``)."""
        return self._grid.run

    def send_and_receive(self, messages: Iterable[Any], *, timeout: float | None = None) -> Iterable[Any]:
        from flwr.app.message_type import MessageType

        messages = list(messages)
        if not messages or any(m.metadata.message_type != MessageType.TRAIN for m in messages):
            replies: Iterable[Any] = self._grid.send_and_receive(messages, timeout=timeout)
            return replies
        return self._train_round(messages)

    def _train_round(self, messages: list[Any]) -> list[Any]:
        from flwr.app import Array, ArrayRecord, Error, Message, MetricRecord, RecordDict

        self._rounds += 1
        (key,) = messages[0].content.array_records.keys()
        record = messages[0].content.array_records[key]
        names = list(record.keys())
        nodes = self.client_ids(self._grid, [message.metadata.dst_node_id for message in messages])
        outcome = self.secure_round(self._grid, self._rounds, [record[name].numpy() for name in names], nodes,
                                    {message.metadata.dst_node_id: message.content for message in messages
                                     if message.metadata.dst_node_id in nodes.values()})
        if outcome.arrays is None:
            reason = f"fedsecure: the round could not aggregate: {outcome.summary.reason}"
            return [Message(Error(code=0, reason=reason), reply_to=message) for message in messages]
        new_arrays = {name: Array(array) for name, array in zip(names, outcome.arrays)}
        client_of = {node: client for client, node in nodes.items()}
        replies = []
        for message in messages:
            client = client_of.get(message.metadata.dst_node_id)
            if client is None or client not in outcome.summary.survivors:
                reason = ("no registered key" if client is None
                          else outcome.summary.dropped.get(client, "dropped from the secure round"))
                replies.append(Message(Error(code=0, reason=f"fedsecure: {reason}"), reply_to=message))
                continue
            reported = outcome.reports.get(client, {})
            metrics: dict[str, int | float | list[int] | list[float]] = {
                k[len("metric-"):]: v for k, v in reported.items() if k.startswith("metric-")}
            metrics[self.weighted_by_key] = int(reported.get("num-examples", 1))
            content = RecordDict({key: ArrayRecord(dict(new_arrays)), "metrics": MetricRecord(metrics)})
            replies.append(Message(content, reply_to=message))
        return replies
