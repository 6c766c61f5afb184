"""The client half of the drop-in: a ClientApp mod, used exactly where Flower's ``secaggplus_mod`` is.

``ClientApp(client_fn=..., mods=[secure_aggregation_mod])``. The mod answers the train messages that
:class:`~fedsecure.flower.SecureAggregationWorkflow` sends: at the round start it runs the user's own
``fit`` through ``call_next``, takes the update (the parameters ``fit`` returned minus the ones it was given),
and protects it with the protocol the server's round asks for, within the node's policy
(:class:`~fedsecure.runtime.flower.ClientPolicy`, from the node config); every later stage it answers itself.
A train message without fedsecure's record goes to the user's app unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..runtime.flower import AnswerLedger, ClientUpdate, FedSecureClient, answer_ledger_path, lock_node_files
from ..runtime.flower._common import RECORD, Kind

__all__ = ["secure_aggregation_mod"]

#: The config record the user's FitRes metrics travel back in (numbers only; the server passes them to the strategy).
METRICS_PREFIX = "report-"


def _flatten(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays]) if arrays else np.zeros(0)


def secure_aggregation_mod(msg: Any, ctxt: Any, call_next: Any) -> Any:
    """A Flower ClientApp mod: fedsecure's secure aggregation around the user's ``fit``.

    Threat model: what leaves the node is the protected update (masked, or encrypted), never the parameters
    ``fit`` returned; the user's metrics are sent as they are (numbers only), as Flower's SecAgg+ does.
    """
    from flwr.app.message_type import MessageType
    from flwr.common import parameters_to_ndarrays
    from flwr.compat.common import recorddict_compat as compat

    if RECORD not in msg.content.config_records:
        return call_next(msg, ctxt)
    record = msg.content.config_records[RECORD]

    def job(context: Any, client_id: int, task: Any) -> ClientUpdate:
        # The user's own training, through the rest of the ClientApp (its fit, its other mods).
        if msg.metadata.message_type != MessageType.TRAIN:
            raise ValueError("secure aggregation runs on train messages")
        reply = call_next(msg, ctxt)
        if reply.has_error():
            raise RuntimeError(f"the client's fit failed: {reply.error.reason}")
        fit_result = compat.recorddict_to_fitres(reply.content, keep_input=True)
        given = compat.recorddict_to_fitins(msg.content, keep_input=True)
        before = _flatten(parameters_to_ndarrays(given.parameters))
        after = _flatten(parameters_to_ndarrays(fit_result.parameters))
        if before.shape != after.shape:
            raise ValueError(f"fit returned {after.size} parameters for a model of {before.size}")
        report = {"num-examples": float(fit_result.num_examples)}
        for key, value in fit_result.metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                report[f"metric-{key}"] = float(value)
        return ClientUpdate(after - before, weight=int(fit_result.num_examples), report=report)

    # The node's lock and answer ledger: a stale context.state cannot make it answer one step twice.
    handler = FedSecureClient(job if record.get("kind") == Kind.ROUND_START else _no_job, lock=lock_node_files,
                              answers=lambda context: AnswerLedger(answer_ledger_path(context)))
    return handler.handle(msg, ctxt)


def _no_job(context: Any, client_id: int, task: Any) -> ClientUpdate:  # pragma: no cover - only round starts run jobs
    raise ValueError("no training outside a round start")
