"""The server half of the drop-in: a fit workflow, used exactly where Flower's ``SecAggPlusWorkflow`` is.

``DefaultWorkflow(fit_workflow=SecureAggregationWorkflow(...))`` in a ``ServerApp(config=..., strategy=...)``.
Each round the user's strategy selects the clients (``configure_fit``) and its fit instructions reach them with
fedsecure's round start; each client's ``fit`` runs through :func:`secure_aggregation_mod`; the server learns
only the weighted sum of the updates (weights are the clients' ``num_examples``, inside the protected vector).
The new parameters (global plus the weighted mean update) then go back through the strategy's
``aggregate_fit`` as every survivor's result, as Flower's SecAgg+ does, so FedAvg, FedProx, FedAdam, FedYogi and
custom strategies keep working, and the clients' numeric fit metrics reach ``fit_metrics_aggregation_fn``.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._errors import ConfigurationError
from ..encoding import ClipMode, EncodingConfig, Quantizer
from ..protocols import ProtocolKind, RoundConfig, ThreatModel
from ..runtime.flower import FlowerTransport, encoding_record

__all__ = ["SecureAggregationWorkflow", "RoundSummary"]

LOGGER = logging.getLogger("fedsecure.flower")
_PROTOCOLS = (ProtocolKind.SECAGG, ProtocolKind.SECAGG_PLUS)


@dataclass(frozen=True)
class RoundSummary:
    """What one secure round did: who contributed, who dropped and why, whether it aggregated."""

    server_round: int
    aggregated: bool
    survivors: tuple[int, ...]
    dropped: dict[int, str] = field(default_factory=dict)
    reason: str = ""


class SecureAggregationWorkflow:
    """Flower's fit workflow with fedsecure's secure aggregation.

    ``protocol`` is SecAgg+ (default) or SecAgg; ``threat`` the dropouts and colluding clients the round must
    withstand (it sets the threshold and neighbourhood; clients recompute and refuse less); ``clip`` the L2
    bound applied to each update before it is encoded (the ring is sized for it: an update beyond it is scaled
    down, so choose it above your updates' norms); ``max_examples`` the largest ``num_examples`` a client may
    report (its weight); ``ring_bits`` the ring (64 by default, exact to about 1e-9 of the clip at 1000
    clients); ``stage_timeout`` and ``fit_timeout`` the deadlines in seconds of each protocol stage and of the
    first (which includes the clients' training). A round that cannot aggregate (too many dropouts) leaves the
    parameters as they were and does not call the strategy's ``aggregate_fit``.
    """

    def __init__(self, *, protocol: ProtocolKind | str = ProtocolKind.SECAGG_PLUS, threat: ThreatModel | None = None,
                 clip: float = 10.0, max_examples: int = 1 << 20, ring_bits: int = 64, stage_timeout: float = 60.0,
                 fit_timeout: float = 600.0) -> None:
        try:
            protocol = ProtocolKind(protocol)
        except ValueError:
            raise ConfigurationError(f"protocol must be one of {[p.value for p in _PROTOCOLS]}",
                                     parameter="protocol") from None
        if protocol not in _PROTOCOLS:
            raise ConfigurationError(f"the drop-in runs {', '.join(p.value for p in _PROTOCOLS)}; "
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

    def __call__(self, grid: Any, context: Any) -> None:
        """One fit round: the strategy selects, the clients fit and protect, the sum goes back to the strategy."""
        import flwr.compat.common.recorddict_compat as compat
        from flwr.app.message_type import MessageType
        from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
        from flwr.server.compat.legacy_context import LegacyContext
        from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key

        if not isinstance(context, LegacyContext):
            raise TypeError(f"SecureAggregationWorkflow needs a LegacyContext (inside DefaultWorkflow), got "
                            f"{type(context).__name__}")
        current_round = context.state.config_records[MAIN_CONFIGS_RECORD][Key.CURRENT_ROUND]
        if not isinstance(current_round, int):
            raise TypeError("the workflow's current round is not an integer")
        parameters = compat.arrayrecord_to_parameters(context.state.array_records[MAIN_PARAMS_RECORD],
                                                      keep_input=True)
        instructions = context.strategy.configure_fit(server_round=current_round, parameters=parameters,
                                                      client_manager=context.client_manager)
        if not instructions:
            LOGGER.info("configure_fit: no clients selected, cancel")
            return
        arrays = parameters_to_ndarrays(parameters)
        flat = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays])
        proxies = {client: proxy for client, (proxy, _) in enumerate(instructions)}
        nodes = {client: proxy.node_id for client, proxy in proxies.items()}
        try:
            encoding = EncodingConfig.fit_scale(dimension=flat.size, clients=len(nodes), clip=self.clip,
                                                ring_bits=self.ring_bits, clip_mode=ClipMode.L2,
                                                max_weight=self.max_examples)
            config = RoundConfig.create(protocol=self.protocol, clients=nodes, encoding=encoding,
                                        round_id=self._round_base + current_round, threat=self.threat)
        except ConfigurationError as error:
            # A cohort the threat model cannot protect (too few clients for its dropouts, say): no round at all.
            LOGGER.warning("round %d: %d sampled clients cannot be aggregated securely (%s); the parameters are "
                           "unchanged and the strategy is not called", current_round, len(nodes), error)
            self.summaries.append(RoundSummary(current_round, False, (), {}, str(error)))
            return
        start = {proxy.node_id: compat.fitins_to_recorddict(fit_ins, True) for proxy, fit_ins in instructions}
        transport = FlowerTransport(grid, stage_timeout=self.stage_timeout, start_timeout=self.fit_timeout,
                                    message_type=MessageType.TRAIN)
        LOGGER.info("configure_fit: strategy sampled %d clients; fedsecure %s round", len(nodes),
                    self.protocol.value)
        report = transport.run_round(config, nodes, encoding_record(encoding), start_records=start,
                                     name=f"round {current_round}")
        dropped = {client: str(error) for client, error in report.client_errors.items()}
        if report.result is None:
            reason = str(report.abort) if report.abort is not None else "no result"
            LOGGER.warning("round %d could not aggregate securely (%s); the parameters are unchanged and the "
                           "strategy is not called", current_round, reason)
            self.summaries.append(RoundSummary(current_round, False, (), dropped, reason))
            return
        decoded = Quantizer(encoding).decode_sum(report.result.ring_sum)
        if not decoded.total_weight:
            self.summaries.append(RoundSummary(current_round, False, (), dropped, "zero total weight"))
            LOGGER.warning("round %d: the survivors reported no examples; the parameters are unchanged",
                           current_round)
            return
        new_flat = flat + decoded.total / decoded.total_weight
        new_arrays, offset = [], 0
        for array in arrays:
            size = array.size
            new_arrays.append(new_flat[offset:offset + size].reshape(array.shape).astype(array.dtype))
            offset += size
        new_parameters = ndarrays_to_parameters(new_arrays)
        survivors = sorted(report.result.survivors)
        results = []
        for client in survivors:
            reported = report.client_reports.get(client, {})
            metrics: dict[str, bool | bytes | float | int | str] = {
                key[len("metric-"):]: value for key, value in reported.items() if key.startswith("metric-")}
            results.append((proxies[client], FitRes(status=Status(code=Code.OK, message="Success"),
                                                    parameters=new_parameters,
                                                    num_examples=int(reported.get("num-examples", 1)),
                                                    metrics=metrics)))
        failures: list[Any] = [Exception(f"client {client}: {reason}") for client, reason in sorted(dropped.items())]
        LOGGER.info("aggregate_fit: %d secure results and %d failures", len(results), len(failures))
        parameters_aggregated, metrics_aggregated = context.strategy.aggregate_fit(current_round, results, failures)
        if parameters_aggregated:
            context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
                parameters_aggregated, True)
            context.history.add_metrics_distributed_fit(server_round=current_round, metrics=metrics_aggregated)
        self.summaries.append(RoundSummary(current_round, True, tuple(survivors), dropped))
