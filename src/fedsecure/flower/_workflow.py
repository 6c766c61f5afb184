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

import os
from typing import Any

from ..dp import DPConfig
from ..protocols import IdentityKeys, ProtocolKind, ThreatModel
from ._rounds import LOGGER, RoundSummary, SecureRounds

__all__ = ["SecureAggregationWorkflow", "RoundSummary"]


class SecureAggregationWorkflow(SecureRounds):
    """Flower's fit workflow with fedsecure's secure aggregation.

    ``protocol`` is ``secagg+`` (default), ``secagg``, ``paillier`` or ``paillier-threshold``; ``threat`` the
    dropouts and colluding clients the round must withstand (it sets the threshold and neighbourhood; clients
    recompute and refuse less); ``clip`` the L2 bound applied to each update before it is encoded (the ring is
    sized for it: an update beyond it is scaled down, so choose it above your updates' norms);
    ``max_examples`` the largest ``num_examples`` a client may report (its weight); ``ring_bits`` the ring (64
    by default, exact to about 1e-9 of the clip at 1000 clients; 32 halves the upload, at a quantisation error of
    the mean of at most n² · max_examples · clip / (2³¹ · total weight) for n clients); ``stage_timeout`` and ``fit_timeout`` the
    deadlines in seconds of each protocol stage and of the first (which includes the clients' training).

    ``identities`` (an identity registry, or the path of the ``registry.json`` that
    :func:`~fedsecure.runtime.flower.write_identities` writes) runs SecAgg's active-adversary variant: every
    message is signed with the client's registered key, so a server that forges or drops messages selectively
    is caught (Bonawitz et al. 2017, §6). ``paillier`` (the path of the ``paillier-public.json`` that
    :func:`~fedsecure.runtime.flower.write_paillier_deployment` writes) runs Paillier with the deployment's
    keys; its separate key holder is a node of the federation whose node config names its key file. With either,
    each node states its client id (``fedsecure-client-id`` in its node config) and a node the registry does not
    list is left out of the round. ``dp`` (a :class:`~fedsecure.dp.DPConfig`, ``central`` or ``distributed``)
    adds user-level differential privacy: updates are clipped and summed unweighted, noise is added by the
    server (central) or by every client inside the ring (distributed, SecAgg only), and :attr:`ledger` counts
    epsilon; the noise is planned for the first round's cohort less the threat model's dropouts, and no
    amplification by sampling is claimed.

    A round that cannot aggregate (too many dropouts) leaves the parameters as they were and does not call the
    strategy's ``aggregate_fit``; :attr:`summaries` says why.
    """

    def __init__(self, *, protocol: ProtocolKind | str = ProtocolKind.SECAGG_PLUS, threat: ThreatModel | None = None,
                 clip: float = 10.0, max_examples: int = 1 << 20, ring_bits: int = 64, stage_timeout: float = 60.0,
                 fit_timeout: float = 600.0, identities: IdentityKeys | str | os.PathLike[str] | None = None,
                 paillier: str | os.PathLike[str] | None = None, dp: DPConfig | None = None) -> None:
        super().__init__(protocol=protocol, threat=threat, clip=clip, max_examples=max_examples, ring_bits=ring_bits,
                         stage_timeout=stage_timeout, fit_timeout=fit_timeout, identities=identities,
                         paillier=paillier, dp=dp)

    def __call__(self, grid: Any, context: Any) -> None:
        """One fit round: the strategy selects, the clients fit and protect, the sum goes back to the strategy."""
        import flwr.compat.common.recorddict_compat as compat
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
        proxies = {proxy.node_id: proxy for proxy, _ in instructions}
        nodes = self.client_ids(grid, list(proxies))
        left_out = sorted(set(proxies) - set(nodes.values()))
        if left_out:
            LOGGER.warning("nodes %s have no registered key and are left out of round %d", left_out, current_round)
        outcome = self.secure_round(grid, current_round, parameters_to_ndarrays(parameters), nodes,
                                    {proxy.node_id: compat.fitins_to_recorddict(fit_ins, True)
                                     for proxy, fit_ins in instructions if proxy.node_id in nodes.values()})
        if outcome.arrays is None:
            return  # The strategy is not told a round succeeded that did not.
        new_parameters = ndarrays_to_parameters(outcome.arrays)
        results = []
        for client in outcome.summary.survivors:
            reported = outcome.reports.get(client, {})
            metrics: dict[str, bool | bytes | float | int | str] = {
                key[len("metric-"):]: value for key, value in reported.items() if key.startswith("metric-")}
            results.append((proxies[nodes[client]], FitRes(status=Status(code=Code.OK, message="Success"),
                                                           parameters=new_parameters,
                                                           num_examples=int(reported.get("num-examples", 1)),
                                                           metrics=metrics)))
        failures: list[Any] = [Exception(f"client {client}: {reason}")
                               for client, reason in sorted(outcome.summary.dropped.items())]
        failures += [Exception(f"node {node}: no registered key") for node in left_out]
        LOGGER.info("aggregate_fit: %d secure results and %d failures", len(results), len(failures))
        parameters_aggregated, metrics_aggregated = context.strategy.aggregate_fit(current_round, results, failures)
        if parameters_aggregated:
            context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
                parameters_aggregated, True)
            context.history.add_metrics_distributed_fit(server_round=current_round, metrics=metrics_aggregated)
