"""Flower's own SecAgg+ as a peer, run unmodified in this process (``pip install 'fedsecure[bench]'``).

The server runs Flower's ``SecAggPlusWorkflow`` inside its ``DefaultWorkflow``
over FedAvg; every client is a ``NumPyClient`` behind Flower's
``secaggplus_mod``. Neither is changed. The one piece supplied here is
:class:`DirectGrid`, an implementation of Flower's public abstract
``flwr.serverapp.Grid`` that hands each pushed message to the ``ClientApp`` at
once, with one persistent ``Context`` per node. Every message is round-tripped
through Flower's protobuf serde in both directions, which gives its real size on
the wire and, as a real transport would, a separate copy per node (Flower's setup
stage sends one shared ``RecordDict`` to every node, and ``secaggplus_mod`` pops
from it in place).

Dropouts are silent: a node that drops at a stage never replies from then on.
The grid returns at once with the replies it has, which is what Flower's grid
does when a finite ``timeout`` expires (the workflow's default, ``None``, would
wait forever for a vanished node on a real grid). Flower's simulation engine
needs Ray, which this grid does not.

Flower's masks come from NumPy's ``RandomState`` seeded with 32 bits folded
from the agreed key, and its quantisation uses the global NumPy generator: the
peer is measured for speed and bytes, not offered as equally secure.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["FLOWER_STAGES", "FlowerRound", "flower_available", "flower_mean", "flower_parameters",
           "run_flower_secaggplus", "secaggplus_apps"]

# The four client-facing stages of Flower's SecAgg+, in protocol order.
FLOWER_STAGES = ("setup", "share_keys", "collect_masked_vectors", "unmask")


def flower_available() -> str | None:
    """Flower's version if a supported one (1.41) is importable, else ``None``."""
    try:
        import flwr
    except ImportError:
        return None
    version: str = flwr.__version__
    return version if version.startswith("1.41.") else None


@dataclass(frozen=True)
class FlowerRound:
    """One round of Flower's SecAgg+: its time, bytes, and whether it produced the right mean."""

    seconds: float
    completed: bool
    survivors: int
    max_abs_error: float
    bytes_up: int
    bytes_down: int


@contextmanager
def _quiet_flower() -> Iterator[None]:
    # Flower logs every stage at INFO, each client restart at WARNING and a halted round at ERROR; the benchmark
    # reports all of these itself.
    logger = logging.getLogger("flwr")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _stage_index(stage: str) -> int:
    return FLOWER_STAGES.index(stage) if stage in FLOWER_STAGES else -1


RoundHook = Callable[[Callable[[], None], Any], None]


def secaggplus_apps(vectors: Sequence[np.ndarray], rounds: int, *, num_shares: int, threshold: int,
                    on_round: RoundHook) -> tuple[Any, Any]:
    """Flower's own SecAgg+ as a (ClientApp, ServerApp) pair over ``vectors``, unmodified.

    Node ``i`` (``partition-id`` in its node config) is a ``NumPyClient`` behind ``secaggplus_mod`` that
    contributes ``vectors[i]`` with weight 1; the ServerApp runs ``SecAggPlusWorkflow`` in ``DefaultWorkflow``
    over FedAvg for ``rounds`` rounds. Each round calls ``on_round(run, context)``: ``run()`` runs one SecAgg+
    round, and :func:`flower_mean` reads its result from ``context`` (the hook times and checks it).
    """
    from flwr.client import ClientApp, NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.common import ndarrays_to_parameters
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.serverapp import ServerApp

    n, dim = len(vectors), int(vectors[0].size)

    class VectorClient(NumPyClient):
        def __init__(self, index: int) -> None:
            self.index = index

        def fit(self, parameters: Any, config: Any) -> tuple[list[np.ndarray], int, dict[str, Any]]:
            return [vectors[self.index]], 1, {}

    def client_fn(context: Any) -> Any:
        return VectorClient(int(context.node_config["partition-id"])).to_client()

    server_app = ServerApp()

    @server_app.main()
    def main(grid_: Any, context: Any) -> None:
        strategy = FedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n, min_available_clients=n,
                          min_evaluate_clients=0, initial_parameters=ndarrays_to_parameters([np.zeros(dim)]))
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=rounds), strategy=strategy)
        # max_weight=1 because every client reports one example: the mean is then exact up to quantisation.
        workflow = SecAggPlusWorkflow(num_shares=num_shares, reconstruction_threshold=threshold, max_weight=1)

        def one_round(grid_: Any, context_: Any) -> None:
            on_round(lambda: workflow(grid_, context_), context_)

        DefaultWorkflow(fit_workflow=one_round)(grid_, legacy)

    return ClientApp(client_fn=client_fn, mods=[secaggplus_mod]), server_app


def flower_parameters(context: Any) -> Any:
    """The global parameters record in a ServerApp's context (a new object after every completed round)."""
    from flwr.server.workflow.constant import MAIN_PARAMS_RECORD

    return context.state.array_records[MAIN_PARAMS_RECORD]


def flower_mean(record: Any) -> np.ndarray:
    """The mean vector held in a parameters record from :func:`flower_parameters`."""
    from flwr.common import parameters_to_ndarrays
    from flwr.compat.common import recorddict_compat

    mean: np.ndarray = parameters_to_ndarrays(recorddict_compat.arrayrecord_to_parameters(record, keep_input=True))[0]
    return mean


def run_flower_secaggplus(
    vectors: Sequence[np.ndarray],
    drops_per_round: Sequence[Mapping[int, int]],
    *,
    num_shares: int,
    threshold: int,
) -> list[FlowerRound]:
    """Run ``len(drops_per_round)`` rounds of Flower's SecAgg+ over ``vectors`` (one per client).

    ``drops_per_round[r]`` maps a client index to the index in
    :data:`FLOWER_STAGES` of the first stage in which it is silent in round r.
    ``num_shares`` is Flower's closed neighbourhood size (the client counts
    itself, as in fedsecure) and ``threshold`` its reconstruction threshold.
    Flower returns the mean of the survivors' vectors; each round's result is
    compared with the true mean. Raises ``ImportError`` without Flower 1.41.
    """
    if flower_available() is None:
        raise ImportError("Flower's SecAgg+ peer needs flwr 1.41: pip install 'fedsecure[bench]'")
    from flwr.app import Context, Error, Message, RecordDict
    from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
    from flwr.common.serde import message_from_proto, message_to_proto
    from flwr.proto.message_pb2 import Message as ProtoMessage
    from flwr.serverapp import Grid
    from flwr.supercore.run import Run
    from flwr.supercore.task_identity import TaskIdentity

    n = len(vectors)
    node_ids = [1000 + i for i in range(n)]

    def stage_of(message: Any) -> str:
        if message.has_content() and RECORD_KEY_CONFIGS in message.content.config_records:
            return str(message.content.config_records[RECORD_KEY_CONFIGS].get(Key.STAGE, "?"))
        return str(message.metadata.message_type)

    class DirectGrid(Grid):
        """Delivers each pushed message to the ClientApp at once; missing replies behave like expired deadlines."""

        def __init__(self, client_app: Any, run: Any) -> None:
            self.client_app = client_app
            self._run = run
            self.contexts = {
                node: Context(run_id=run.run_id, node_id=node, node_config={"partition-id": i},
                              state=RecordDict(), run_config={})
                for i, node in enumerate(node_ids)
            }
            self.replies: dict[str, Any] = {}
            self.silent_from: dict[int, int] = {}
            self.silent: set[int] = set()
            self.bytes_up: dict[int, int] = defaultdict(int)
            self.bytes_down: dict[int, int] = defaultdict(int)

        def start_round(self, drops: Mapping[int, int]) -> None:
            self.silent_from = {node_ids[c]: s for c, s in drops.items()}
            self.silent = set()
            self.bytes_up.clear()
            self.bytes_down.clear()

        def set_run(self, run: Any) -> None:
            self._run = run

        @property
        def run(self) -> Any:
            return Run(**vars(self._run))

        def create_message(self, content: Any, message_type: str, dst_node_id: int, group_id: str,
                           ttl: float | None = None) -> Any:
            return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

        def get_node_ids(self) -> Iterable[int]:
            # A dropped node stays registered, as a briefly unreachable SuperNode does.
            return list(node_ids)

        def push_messages(self, messages: Iterable[Any]) -> Iterable[str]:
            ids = []
            for message in messages:
                message.metadata.__dict__["_message_id"] = str(uuid.uuid4())
                ids.append(message.metadata.message_id)
                node = message.metadata.dst_node_id
                # Real bytes both ways, as Flower's gRPC transport sends them: the whole Message proto, metadata
                # included, serialised and parsed again (which also gives each node its own copy).
                down = message_to_proto(message).SerializeToString()
                self.bytes_down[node] += len(down)
                stage = _stage_index(stage_of(message))
                if node in self.silent or (node in self.silent_from and stage >= self.silent_from[node]):
                    self.silent.add(node)
                    continue
                delivered = message_from_proto(ProtoMessage.FromString(down))
                try:
                    reply = self.client_app(delivered, self.contexts[node])
                except Exception as error:  # noqa: BLE001 (Flower's own simulation worker does the same)
                    reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=repr(error)),
                                    reply_to=delivered)
                reply.metadata.__dict__["_message_id"] = str(uuid.uuid4())
                up = message_to_proto(reply).SerializeToString()
                self.bytes_up[node] += len(up)
                self.replies[message.metadata.message_id] = message_from_proto(ProtoMessage.FromString(up))
            return ids

        def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Any]:
            return [self.replies.pop(i) for i in list(message_ids) if i in self.replies]

        def send_and_receive(self, messages: Iterable[Any], *, timeout: float | None = None) -> Iterable[Any]:
            return self.pull_messages(self.push_messages(list(messages)))

    run_id = 4242
    # Flower's Message constructor reads this global task identity (its simulation engine sets it too); it is
    # restored when the run ends.
    identity = ("_run_id", "_task_id", "_node_id")
    saved_identity = {name: getattr(TaskIdentity, name) for name in identity}
    TaskIdentity.run_id = run_id
    TaskIdentity.task_id = 1
    TaskIdentity.node_id = SUPERLINK_NODE_ID
    rounds: list[FlowerRound] = []

    def timed_round(run: Callable[[], None], context_: Any) -> None:
        drops = drops_per_round[len(rounds)]
        grid.start_round(drops)
        before = flower_parameters(context_)
        started = time.perf_counter()
        run()
        seconds = time.perf_counter() - started
        after = flower_parameters(context_)
        completed = after is not before
        # Flower folds in the vectors of clients that sent a masked vector (stage 2).
        survivors = [i for i in range(n) if drops.get(i, len(FLOWER_STAGES)) > 2]
        error = float("nan")
        if completed and survivors:
            mean = np.mean([vectors[i] for i in survivors], axis=0)
            error = float(np.max(np.abs(flower_mean(after) - mean)))
        # Bytes are those of a client that took part in every stage.
        answered = [node_ids[i] for i in range(n) if i not in drops]
        rounds.append(FlowerRound(
            seconds=seconds, completed=completed, survivors=len(survivors), max_abs_error=error,
            bytes_up=int(np.mean([grid.bytes_up[node] for node in answered])) if answered else 0,
            bytes_down=int(np.mean([grid.bytes_down[node] for node in answered])) if answered else 0))

    client_app, server_app = secaggplus_apps(vectors, len(drops_per_round), num_shares=num_shares,
                                             threshold=threshold, on_round=timed_round)
    grid = DirectGrid(client_app, Run.create_empty(run_id=run_id))
    server_context = Context(run_id=run_id, node_id=0, node_config={}, state=RecordDict(), run_config={})
    try:
        with _quiet_flower():
            server_app(grid=grid, context=server_context)
    finally:
        for name, value in saved_identity.items():
            setattr(TaskIdentity, name, value)
    return rounds
