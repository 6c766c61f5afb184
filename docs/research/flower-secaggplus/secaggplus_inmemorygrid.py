"""Variant B: Flower's own InMemoryGrid + InMemoryLinkState (what run_simulation uses),
with the Ray backend replaced by a tiny synchronous "fleet" loop in the main thread.
ServerApp runs in a second thread, exactly like flwr.simulation.run_simulation does.
Usage: python secaggplus_inmemorygrid.py N D [pull_interval]
"""
import sys, threading, time, uuid
import numpy as np
from flwr.app import Context, RecordDict, Message, Error
from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.common.serde import message_to_proto, message_from_proto
from flwr.compat.common import recorddict_compat as compat
from flwr.proto.task_pb2 import Task
from flwr.server import LegacyContext, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.superlink.fleet.vce.vce_api import _register_nodes  # private helper
from flwr.server.superlink.linkstate import LinkStateFactory
from flwr.server.superlink.linkstate.in_memory_linkstate import RunRecord
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_PARAMS_RECORD
from flwr.serverapp import ServerApp
from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME, NOOP_FEDERATION_ID
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity
from flwr.superlink.federation import NoOpFederationManager
from flwr.superlink.grid import InMemoryGrid

n, d = int(sys.argv[1]), int(sys.argv[2])
pull_interval = float(sys.argv[3]) if len(sys.argv) > 3 else 0.1
run_id, task_id = 777, 1
TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = run_id, task_id, SUPERLINK_NODE_ID
run = Run.create_empty(run_id=run_id); run.primary_task_id = task_id; run.federation_id = NOOP_FEDERATION_ID

state_factory = LinkStateFactory(FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(), ObjectStoreFactory())
state = state_factory.state()
state.run_ids[run_id] = RunRecord(run=run)
state.task_store[task_id] = Task(task_id=task_id, run_id=run_id)
nodes = _register_nodes(num_nodes=n, state_factory=state_factory)  # {node_id: partition_id}
grid = InMemoryGrid(state_factory=state_factory, pull_interval=pull_interval)
grid.set_run(run)

rng = np.random.default_rng(0)
vecs = [rng.uniform(-1, 1, d) for _ in range(n)]
class C(NumPyClient):
    def __init__(self, i): self.i = i
    def fit(self, parameters, config): return [vecs[self.i]], 1, {}
client_app = ClientApp(client_fn=lambda ctx: C(int(ctx.node_config["partition-id"])).to_client(),
                       mods=[secaggplus_mod])
ctxs = {nid: Context(run_id, nid, {"partition-id": p, "num-partitions": n}, RecordDict(), {})
        for nid, p in nodes.items()}

server_app = ServerApp()
out = {}
@server_app.main()
def main(grid, context):
    strat = FedAvg(fraction_evaluate=0.0, min_fit_clients=n, min_available_clients=n,
                   initial_parameters=ndarrays_to_parameters([np.zeros(d)]))
    lc = LegacyContext(context, config=ServerConfig(num_rounds=1), strategy=strat)
    sa = SecAggPlusWorkflow(num_shares=n, reconstruction_threshold=max(2, 2 * n // 3), max_weight=1.0)
    def timed(g, c):
        t0 = time.perf_counter(); sa(g, c); out["round"] = time.perf_counter() - t0
    DefaultWorkflow(fit_workflow=timed)(grid, lc)
    out["ctx"] = lc

done = threading.Event()
def server_thread():
    try:
        server_app(grid=grid, context=Context(run_id, 0, {}, RecordDict(), {}))
    finally:
        done.set()
th = threading.Thread(target=server_thread); th.start()
while not done.is_set():                       # replaces vce worker + RayBackend
    busy = False
    for nid in nodes:
        for msg in state.get_message_ins(node_id=nid, limit=None):
            busy = True
            m = message_from_proto(message_to_proto(msg))   # private copy (REQUIRED)
            try:
                rep = client_app(m, ctxs[nid])
            except Exception as ex:
                rep = Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, str(ex)), reply_to=m)
            rep.metadata.__dict__["_message_id"] = str(uuid.uuid4())
            state.store_message_res(rep)
    if not busy:
        done.wait(0.001)
th.join()
lc = out["ctx"]
agg = parameters_to_ndarrays(compat.arrayrecord_to_parameters(lc.state.array_records[MAIN_PARAMS_RECORD], True))[0]
print(f"n={n} d={d} pull_interval={pull_interval} round={out['round']:.3f}s "
      f"max|agg-mean|={np.max(np.abs(agg - np.mean(vecs, 0))):.2e}")
