"""The client half of the drop-in: a ClientApp mod, used exactly where Flower's ``secaggplus_mod`` is.

``ClientApp(client_fn=..., mods=[secure_aggregation_mod])``. The mod answers the train messages that
:class:`~fedsecure.flower.SecureAggregationWorkflow` sends: at the round start it runs the user's own
``fit`` through ``call_next``, takes the update (the parameters ``fit`` returned minus the ones it was given),
and protects it with the protocol the server's round asks for, within the node's policy
(:class:`~fedsecure.runtime.flower.ClientPolicy`, from the node config); every later stage it answers itself.
With SecAgg's active variant or Paillier the node config also names the node's credentials
(``fedsecure-client-id`` with ``fedsecure-identity`` or ``fedsecure-paillier``; ``fedsecure-key-holder`` on the
Paillier key holder's node), as for fedsecure's own ClientApp.
A train message without fedsecure's record goes to the user's app unchanged.
"""

from __future__ import annotations

from typing import Any

from .._errors import LocalProtocolError
from ..pipeline import update_between
from ..protocols import ProtocolKind
from ..runtime.flower import (
    AnswerLedger,
    ClientPolicy,
    ClientUpdate,
    FedSecureClient,
    answer_ledger_path,
    credentials_from_node_config,
    key_holder_from_node_config,
    lock_node_files,
    save_credentials_to_node_config,
    save_key_holder_to_node_config,
)
from ..runtime.flower._credentials import key_holder_signer_from_node_config
from ..runtime.flower._common import RECORD, Kind

__all__ = ["secure_aggregation_mod"]

#: How a Message-API client reports its weight (the key Flower's strategies weight by).
WEIGHT_KEY = "num-examples"
_LEGACY_PARAMETERS = "fitins.parameters"


def secure_aggregation_mod(msg: Any, ctxt: Any, call_next: Any) -> Any:
    """A Flower ClientApp mod: fedsecure's secure aggregation around the user's ``fit``.

    Threat model: what leaves the node is the protected update (masked, or encrypted), never the parameters
    ``fit`` returned; the user's metrics are sent as they are (numbers only), as Flower's SecAgg+ does. A train
    message without fedsecure's round (a server asking for the trained parameters in the clear) is refused, unless
    the node's policy allows the plaintext baseline (``fedsecure-protocols`` lists ``plaintext``); other
    messages (evaluation, queries) go to the user's app unchanged.
    """
    from flwr.app import Error, Message
    from flwr.app.message_type import MessageType
    from flwr.common import parameters_to_ndarrays
    from flwr.compat.common import recorddict_compat as compat

    if RECORD not in msg.content.config_records:
        if _reveals_parameters(msg.metadata.message_type) and not _allows_plaintext(ctxt):
            return Message(Error(code=0, reason="fedsecure: this node sends its updates only through secure "
                                 f"aggregation, and this {msg.metadata.message_type} message has no fedsecure "
                                 "round"), reply_to=msg)
        return call_next(msg, ctxt)
    record = msg.content.config_records[RECORD]

    def job(context: Any, client_id: int, task: Any) -> ClientUpdate:
        # The user's own training, through the rest of the ClientApp (its fit or @app.train(), its other mods).
        if msg.metadata.message_type != MessageType.TRAIN:
            raise ValueError("secure aggregation runs on train messages")
        if task.get("dp-level") == "local":
            # Local DP would be the user's own fit's (Opacus inside it): a round's claim of it cannot be honoured
            # here, so a node that requires it is not satisfied by a field.
            raise ValueError("the drop-in has no local DP of its own; a round that claims it is refused")
        reply = call_next(msg, ctxt)
        if reply.has_error():
            raise RuntimeError(f"the client's training failed: {reply.error.reason}")
        if _LEGACY_PARAMETERS in msg.content.array_records:
            # Flower's strategy API (Client/NumPyClient.fit): FitIns in, FitRes out.
            fit_result = compat.recorddict_to_fitres(reply.content, keep_input=True)
            given = compat.recorddict_to_fitins(msg.content, keep_input=True)
            before_arrays = parameters_to_ndarrays(given.parameters)
            after_arrays = parameters_to_ndarrays(fit_result.parameters)
            examples: Any = fit_result.num_examples
            metrics: dict[str, Any] = dict(fit_result.metrics)
        else:
            # Flower's Message API (@app.train()): one ArrayRecord in and out, and a MetricRecord with num-examples.
            sent, returned = list(msg.content.array_records.values()), list(reply.content.array_records.values())
            if len(sent) != 1 or len(returned) != 1 or list(sent[0].keys()) != list(returned[0].keys()):
                raise ValueError("the train reply must hold one ArrayRecord with the keys it was sent")
            before_arrays = [sent[0][k].numpy() for k in sent[0].keys()]
            after_arrays = [returned[0][k].numpy() for k in returned[0].keys()]
            records = list(reply.content.metric_records.values())
            metrics = dict(records[0]) if len(records) == 1 else {}
            examples = metrics.get(WEIGHT_KEY)
            if not isinstance(examples, int) or isinstance(examples, bool) or examples < 0:
                raise ValueError(f"the train reply's MetricRecord needs an integer `{WEIGHT_KEY}`")
        report = {"num-examples": float(examples)}
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                report[f"metric-{key}"] = float(value)
        # The layout the client was sent; training must return the same tensors (a named refusal otherwise).
        return ClientUpdate(update_between(before_arrays, after_arrays), weight=int(examples), report=report)

    # The node's lock and answer ledger: a stale context.state cannot make it answer one step twice. Its
    # long-lived credentials (an identity for SecAgg's active variant, Paillier keys, or the Paillier key holder's
    # key) come from the files its node config names.
    handler = FedSecureClient(job if record.get("kind") == Kind.ROUND_START else _no_job, lock=lock_node_files,
                              answers=lambda context: AnswerLedger(answer_ledger_path(context)),
                              credentials=credentials_from_node_config,
                              save_credentials=save_credentials_to_node_config,
                              key_holder=key_holder_from_node_config, save_key_holder=save_key_holder_to_node_config,
                              key_holder_signer=key_holder_signer_from_node_config)
    return handler.handle(msg, ctxt)


def _reveals_parameters(message_type: str) -> bool:
    """Train messages (``train``, ``train.<name>``) and the legacy ``get_parameters`` answer with model parameters."""
    return message_type.split(".")[0] in ("train", "get_parameters")


def _allows_plaintext(context: Any) -> bool:
    try:
        return ProtocolKind.PLAINTEXT in ClientPolicy.from_node_config(context.node_config).protocols
    except LocalProtocolError:
        return False  # An unreadable policy allows nothing.


def _no_job(context: Any, client_id: int, task: Any) -> ClientUpdate:  # pragma: no cover - only round starts run jobs
    raise ValueError("no training outside a round start")
