"""Run Flower's own SecAgg+ (SecAggPlusWorkflow + secaggplus_mod), unmodified,
entirely in one process, without Ray, sockets or subprocesses.

The only piece we supply is `DirectGrid`, a concrete implementation of the public
abstract class `flwr.serverapp.Grid` which delivers each server Message straight to
the (single, shared) ClientApp object with a per-node `Context`, and keeps the reply
in a dict until `pull_messages`.  Messages are round-tripped through Flower's own
protobuf serde (`message_to_proto` / `message_from_proto`) in both directions, which
(a) gives real wire sizes, (b) gives each node its own copy of the content (REQUIRED:
SecAggPlusWorkflow sends one shared RecordDict to all nodes in the setup stage and
secaggplus_mod does `configs.pop("stage")` on it in place).

Usage: python secaggplus_inprocess.py --n 10 --d 10000 [--drop-silent K@stage]
       [--drop-raise K@stage] [--num-shares X] [--threshold Y] [--max-weight W]
"""

import argparse
import logging
import time
import uuid
from collections import defaultdict

import numpy as np

from flwr.app import ConfigRecord, Context, Error, Message, RecordDict
from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.common import ndarrays_to_parameters
from flwr.common.constant import ErrorCode, SUPERLINK_NODE_ID
from flwr.common.secure_aggregation.secaggplus_constants import (
    RECORD_KEY_CONFIGS,
    Key,
)
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.server import LegacyContext, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.serverapp import Grid, ServerApp
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects


# --------------------------------------------------------------------------- grid
class DirectGrid(Grid):
    """Synchronous in-process Grid: push == run ClientApp now; pull == pop reply."""

    def __init__(self, client_app, node_ids, run, silent_drop=None):
        self.client_app = client_app
        self._node_ids = list(node_ids)
        self._run = run
        # one persistent Context per node (secaggplus_mod keeps its state in
        # context.state.config_records["secaggplus_state"])
        self.contexts = {
            nid: Context(
                run_id=run.run_id,
                node_id=nid,
                node_config={"partition-id": i, "num-partitions": len(self._node_ids)},
                state=RecordDict(),
                run_config={},
            )
            for i, nid in enumerate(self._node_ids)
        }
        self.replies = {}
        self.silent_drop = silent_drop or {}  # node_id -> stage from which it is mute
        self.dead = set()
        self.bytes = defaultdict(lambda: [0, 0, 0, 0])  # stage -> [down, up, n_down, n_up]
        self.wire = defaultdict(lambda: [0, 0])  # stage -> [down, up] deflated objects
        self.stage_time = defaultdict(float)
        self.client_time = defaultdict(float)

    # --- abstract API
    def set_run(self, run):
        self._run = run

    @property
    def run(self):
        return Run(**vars(self._run))

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self):
        return [n for n in self._node_ids if n not in self.dead]

    def push_messages(self, messages):
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = str(uuid.uuid4())
            ids.append(msg.metadata.message_id)
            stage = _stage_of(msg)
            proto = message_to_proto(msg)
            self.bytes[stage][0] += proto.ByteSize()
            self.bytes[stage][2] += 1
            self.wire[stage][0] += _deflated_size(msg)
            nid = msg.metadata.dst_node_id
            if nid in self.dead:
                continue
            if nid in self.silent_drop and _stage_idx(stage) >= _stage_idx(self.silent_drop[nid]):
                self.dead.add(nid)  # node vanishes: never replies
                continue
            copy_in = message_from_proto(proto)  # own copy, like a real transport
            t0 = time.perf_counter()
            try:
                reply = self.client_app(copy_in, self.contexts[nid])
            except Exception as ex:  # same behaviour as flwr's vce worker
                reply = Message(
                    Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                          reason=f"{type(ex)}:<'{ex}'>"),
                    reply_to=copy_in,
                )
            self.client_time[stage] += time.perf_counter() - t0
            reply.metadata.__dict__["_message_id"] = str(uuid.uuid4())
            rproto = message_to_proto(reply)
            self.bytes[stage][1] += rproto.ByteSize()
            self.bytes[stage][3] += 1
            if reply.has_content():
                self.wire[stage][1] += _deflated_size(reply)
            self.replies[msg.metadata.message_id] = message_from_proto(rproto)
        return ids

    def pull_messages(self, message_ids):
        return [self.replies.pop(i) for i in list(message_ids) if i in self.replies]

    def send_and_receive(self, messages, *, timeout=None):
        # No waiting: everything that will ever reply has replied already, so
        # missing replies behave like a real grid whose `timeout` expired.
        messages = list(messages)
        stage = _stage_of(messages[0]) if messages else "?"
        t0 = time.perf_counter()
        ids = self.push_messages(messages)
        out = self.pull_messages(ids)
        self.stage_time[stage] += time.perf_counter() - t0
        return out


def _stage_of(msg):
    if msg.has_content() and RECORD_KEY_CONFIGS in msg.content.config_records:
        return msg.content.config_records[RECORD_KEY_CONFIGS].get(Key.STAGE, "?")
    return msg.metadata.message_type


_ORDER = ["setup", "share_keys", "collect_masked_vectors", "unmask"]


def _stage_idx(s):
    return _ORDER.index(s) if s in _ORDER else -1


MEASURE_DEFLATE = True


def _deflated_size(msg):
    """Bytes of all content-addressed objects Flower's gRPC transport would push."""
    if not MEASURE_DEFLATE:
        return 0
    try:
        return sum(len(o.deflate()) for o in get_all_nested_objects(msg).values())
    except Exception:  # pragma: no cover
        return -1


# ------------------------------------------------------------------- client side
def make_client_app(vectors, raise_drop, num_examples):
    class VecClient(NumPyClient):
        def __init__(self, pid):
            self.pid = pid

        def get_parameters(self, config):
            return [np.zeros_like(vectors[self.pid])]

        def fit(self, parameters, config):
            return [vectors[self.pid]], num_examples, {}

    def client_fn(context: Context):
        return VecClient(int(context.node_config["partition-id"])).to_client()

    def dropout_mod(msg, ctxt, call_next):
        """Client-side mod (outermost) that crashes at a chosen SecAgg+ stage."""
        st = _stage_of(msg)
        if ctxt.node_id in raise_drop and _stage_idx(st) >= _stage_idx(raise_drop[ctxt.node_id]):
            raise RuntimeError(f"simulated crash of node {ctxt.node_id} at {st}")
        return call_next(msg, ctxt)

    mods = ([dropout_mod] if raise_drop else []) + [secaggplus_mod]
    return ClientApp(client_fn=client_fn, mods=mods)


# ------------------------------------------------------------------- server side
def make_server_app(n, d, wf_kwargs, timing):
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = FedAvg(
            fraction_fit=1.0, fraction_evaluate=0.0,
            min_fit_clients=n, min_available_clients=n, min_evaluate_clients=0,
            initial_parameters=ndarrays_to_parameters([np.zeros(d)]),  # skip get_parameters
        )
        ctx = LegacyContext(context=context, config=ServerConfig(num_rounds=1), strategy=strategy)
        sa = SecAggPlusWorkflow(**wf_kwargs)

        def timed_fit(g, c):
            t0 = time.perf_counter()
            sa(g, c)
            timing["round"] = time.perf_counter() - t0

        DefaultWorkflow(fit_workflow=timed_fit)(grid, ctx)
        timing["context"] = ctx

    return app


def parse_drop(spec, node_ids):
    """'3@collect_masked_vectors' -> {first 3 node ids: stage}"""
    if not spec:
        return {}
    k, stage = spec.split("@")
    assert stage in _ORDER, stage
    return {nid: stage for nid in node_ids[: int(k)]}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=10)
    p.add_argument("--d", type=int, default=10_000)
    p.add_argument("--num-shares", type=float, default=None)
    p.add_argument("--threshold", type=float, default=None)
    p.add_argument("--max-weight", type=float, default=1000.0)
    p.add_argument("--num-examples", type=int, default=1)
    p.add_argument("--clipping-range", type=float, default=8.0)
    p.add_argument("--drop-silent", default="")
    p.add_argument("--drop-raise", default="")
    p.add_argument("--timeout", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--no-deflate", action="store_true", help="skip deflated-size accounting (faster)")
    a = p.parse_args()
    global MEASURE_DEFLATE
    MEASURE_DEFLATE = not a.no_deflate
    if a.quiet:
        logging.getLogger("flwr").setLevel(logging.WARNING)

    as_num = lambda x: int(x) if x is not None and x >= 1 and float(x).is_integer() else x
    wf_kwargs = dict(
        num_shares=as_num(a.num_shares) if a.num_shares is not None else a.n,
        reconstruction_threshold=as_num(a.threshold) if a.threshold is not None else max(2, (2 * a.n) // 3),
        max_weight=a.max_weight,
        clipping_range=a.clipping_range,
        quantization_range=2**22,
        modulus_range=2**32,
        timeout=a.timeout,
    )

    # Global identity used by Message(...) constructor (run_simulation does the same)
    run_id = 4242
    TaskIdentity.run_id = run_id
    TaskIdentity.task_id = 1
    TaskIdentity.node_id = SUPERLINK_NODE_ID
    run = Run.create_empty(run_id=run_id)

    rng = np.random.default_rng(a.seed)
    vectors = [rng.uniform(-1, 1, a.d) for _ in range(a.n)]
    node_ids = [1000 + i for i in range(a.n)]  # any distinct ints

    grid = DirectGrid(None, node_ids, run,
                      silent_drop=parse_drop(a.drop_silent, node_ids))
    raise_drop = parse_drop(a.drop_raise, node_ids)
    grid.client_app = make_client_app(vectors, raise_drop, a.num_examples)
    timing = {}
    server_app = make_server_app(a.n, a.d, wf_kwargs, timing)
    server_ctx = Context(run_id=run_id, node_id=0, node_config={}, state=RecordDict(), run_config={})

    t0 = time.perf_counter()
    server_app(grid=grid, context=server_ctx)
    total = time.perf_counter() - t0

    ctx = timing["context"]
    from flwr.compat.common import recorddict_compat as compat
    from flwr.common import parameters_to_ndarrays
    from flwr.server.workflow.constant import MAIN_PARAMS_RECORD
    agg = parameters_to_ndarrays(
        compat.arrayrecord_to_parameters(ctx.state.array_records[MAIN_PARAMS_RECORD], keep_input=True))[0]

    dropped = set(grid.silent_drop) | set(raise_drop)
    # Which clients survived to stage 2 (their masked vector is in the sum)?
    def survives(nid):
        st = grid.silent_drop.get(nid) or raise_drop.get(nid)
        return st is None or _stage_idx(st) > 2
    surv = [i for i, nid in enumerate(node_ids) if survives(nid)]
    mean = np.mean([vectors[i] for i in surv], axis=0)
    ssum = np.sum([vectors[i] for i in surv], axis=0)
    print(f"\n=== n={a.n} d={a.d} wf={ {k: v for k, v in wf_kwargs.items()} }")
    print(f"dropped(spec)={len(dropped)} surviving-in-sum={len(surv)}")
    print(f"round wall time (SecAggPlusWorkflow) = {timing.get('round', float('nan')):.3f}s; "
          f"whole ServerApp = {total:.3f}s")
    changed = not np.allclose(agg, 0.0)
    print(f"aggregate updated: {changed}; max|agg-mean| = {np.max(np.abs(agg-mean)):.3e}; "
          f"max|agg-sum| = {np.max(np.abs(agg-ssum)):.3e}")
    print("per stage: time_total  time_in_clientapps  bytes_down(n msgs)  bytes_up(n msgs)  deflated down/up")
    tot_up = tot_down = 0
    for st in _ORDER:
        b = grid.bytes[st]
        w = grid.wire[st]
        tot_down += b[0]; tot_up += b[1]
        print(f"  {st:24s} {grid.stage_time[st]:7.3f}s {grid.client_time[st]:7.3f}s "
              f"{b[0]:>12,d}({b[2]}) {b[1]:>12,d}({b[3]})  {w[0]:>12,d}/{w[1]:>12,d}")
    print(f"total bytes down={tot_down:,d} up={tot_up:,d}; up bytes per client per parameter = "
          f"{tot_up / max(1, len(surv)) / a.d:.3f}; down+up per client per param = "
          f"{(tot_up + tot_down) / max(1, len(surv)) / a.d:.3f}")
    print(f"history: {ctx.history.metrics_distributed_fit}")


if __name__ == "__main__":
    main()
