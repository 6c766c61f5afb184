"""An in-process implementation of Flower's ``Grid``, for tests and benchmarks of the Flower runtime.

:class:`LocalGrid` implements Flower's public abstract ``flwr.serverapp.Grid``
and hands each pushed message to a node's ``ClientApp`` at once. It keeps what
matters about Flower's deployment engine: every message and reply is
serialised to Flower's protobuf and parsed back (so sizes are real and nothing
is shared by reference), and each node's ``Context`` is serialised and parsed
again around every message, as a SuperNode hands it to a fresh ClientApp
process, so a client that kept anything outside ``context.state`` would break
here as it would there. It drops Flower's network and process boundaries;
those are exercised by the loopback end-to-end test.

Faults are injected per node: :meth:`LocalGrid.crash` makes a node vanish
(Flower reports it unavailable, error code 5, as a SuperLink does once the
node's heartbeat lapses), ``silence`` makes it stop answering at a given
fedsecure stage, and ``tamper`` rewrites a node's replies.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ...protocols import Stage
from ._common import RECORD

__all__ = ["LocalGrid", "Tamper"]

#: ``(node, stage label, reply bytes) -> bytes``: what a misbehaving node sends instead.
Tamper = Callable[[int, str, bytes], bytes]


class LocalGrid:
    """Flower's ``Grid`` over ClientApps in this process. Build with :meth:`create`; node ids are 1000 + index."""

    def __init__(self) -> None:
        raise TypeError("use LocalGrid.create(...)")

    @staticmethod
    def create(client_app: Any, node_configs: Iterable[Mapping[str, Any]], *, run_config: Mapping[str, Any] | None = None,
               run_id: int = 4242) -> Any:
        """A grid with one node per entry of ``node_configs``, all running ``client_app``."""
        from flwr.app import Context, Error, Message, RecordDict
        from flwr.common.constant import ErrorCode
        from flwr.common.serde import context_from_proto, context_to_proto, message_from_proto, message_to_proto
        from flwr.proto.message_pb2 import Context as ProtoContext
        from flwr.proto.message_pb2 import Message as ProtoMessage
        from flwr.serverapp import Grid
        from flwr.common.constant import SUPERLINK_NODE_ID
        from flwr.supercore.run import Run
        from flwr.supercore.task_identity import TaskIdentity

        if getattr(TaskIdentity, "_run_id", None) is None:
            # Flower's Message constructor reads the process's task identity, which a ServerApp process has; this
            # process plays the ServerApp, so it takes that identity unless it already has one.
            TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = run_id, 1, SUPERLINK_NODE_ID

        class _LocalGrid(Grid):
            def __init__(self) -> None:
                configs = [dict(c) for c in node_configs]
                self.node_ids = [1000 + i for i in range(len(configs))]
                self._configs = dict(zip(self.node_ids, configs))
                self._contexts = {
                    node: context_to_proto(Context(run_id=run_id, node_id=node, node_config=config,
                                                   state=RecordDict(), run_config=dict(run_config or {})))
                    .SerializeToString()
                    for node, config in zip(self.node_ids, configs)}
                self._run = Run.create_empty(run_id=run_id)
                self._replies: dict[str, Any] = {}
                self.crashed: set[int] = set()
                self.silence: dict[int, Stage] = {}
                self.tamper: dict[int, Tamper] = {}
                self.bytes_up: dict[int, int] = defaultdict(int)
                self.bytes_down: dict[int, int] = defaultdict(int)
                self.delivered: list[tuple[int, str]] = []

            def crash(self, node: int) -> None:
                """The node's process dies: from now on Flower reports it unavailable."""
                self.crashed.add(node)

            def restart(self, node: int) -> int:
                """The node's SuperNode restarts: Flower lists it under a new node id, with the same node config
                and an empty state (the old id is unavailable from now on). Returns the new node id."""
                new = max(self.node_ids) + 1
                self.node_ids[self.node_ids.index(node)] = new
                self._configs[new] = config = self._configs[node]
                del self._contexts[node]
                self._contexts[new] = context_to_proto(Context(
                    run_id=run_id, node_id=new, node_config=config, state=RecordDict(),
                    run_config=dict(run_config or {}))).SerializeToString()
                return new

            def join(self, node_config: Mapping[str, Any]) -> int:
                """A new SuperNode connects with ``node_config``, listed beside the others (a restarted one, say,
                whose old node id Flower still lists until its heartbeat lapses). Returns its node id."""
                new = max(self.node_ids) + 1
                self.node_ids.append(new)
                self._configs[new] = config = dict(node_config)
                self._contexts[new] = context_to_proto(Context(
                    run_id=run_id, node_id=new, node_config=config, state=RecordDict(),
                    run_config=dict(run_config or {}))).SerializeToString()
                return new

            def set_run(self, run: Any) -> None:
                self._run = run

            @property
            def run(self) -> Any:
                return self._run

            def create_message(self, content: Any, message_type: str, dst_node_id: int, group_id: str,
                               ttl: float | None = None) -> Any:
                return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

            def get_node_ids(self) -> Iterable[int]:
                return list(self.node_ids)

            def push_messages(self, messages: Iterable[Any]) -> Iterable[str]:
                ids = []
                for message in messages:
                    message.metadata.__dict__["_message_id"] = str(uuid.uuid4())
                    ids.append(message.metadata.message_id)
                    node = message.metadata.dst_node_id
                    wire = message_to_proto(message).SerializeToString()
                    self.bytes_down[node] += len(wire)
                    delivered = message_from_proto(ProtoMessage.FromString(wire))
                    if node in self.crashed or node not in self._contexts:
                        reply = Message(Error(code=ErrorCode.NODE_UNAVAILABLE, reason="node unavailable"),
                                        reply_to=delivered)
                        reply.metadata.__dict__["_src_node_id"] = 1
                        self._replies[message.metadata.message_id] = reply
                        continue
                    record = delivered.content.config_records.get(RECORD)
                    stage = str(record.get("stage", "")) if record is not None else ""
                    if self._silent(node, stage):
                        continue
                    self.delivered.append((node, stage))
                    # A fresh process per message: the context is rebuilt from its serialised form.
                    context = context_from_proto(ProtoContext.FromString(self._contexts[node]))
                    try:
                        reply = client_app(delivered, context)
                    except Exception as error:  # noqa: BLE001 (Flower turns a crashed ClientApp into this)
                        reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=repr(error)),
                                        reply_to=delivered)
                    self._contexts[node] = context_to_proto(context).SerializeToString()
                    if node in self.tamper and not reply.has_error():
                        reply_record = reply.content.config_records.get(RECORD)
                        original = reply_record.get("message") if reply_record is not None else None
                        if reply_record is not None and isinstance(original, bytes):
                            reply_record["message"] = self.tamper[node](node, stage, original)
                    reply.metadata.__dict__["_message_id"] = str(uuid.uuid4())
                    up = message_to_proto(reply).SerializeToString()
                    self.bytes_up[node] += len(up)
                    self._replies[message.metadata.message_id] = message_from_proto(ProtoMessage.FromString(up))
                return ids

            def _silent(self, node: int, stage: str) -> bool:
                first = self.silence.get(node)
                if first is None:
                    return False
                labels = {s.label: s for s in Stage}
                return stage in labels and labels[stage] >= first

            def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Any]:
                return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]

            def send_and_receive(self, messages: Iterable[Any], *, timeout: float | None = None) -> Iterable[Any]:
                return self.pull_messages(self.push_messages(list(messages)))

            def state_of(self, node: int) -> Any:
                """The node's ``context.state`` as the next message will see it."""
                return context_from_proto(ProtoContext.FromString(self._contexts[node])).state

        return _LocalGrid()
