"""What both drop-in drivers share: their settings, and one secure round from global arrays to new arrays.

:class:`SecureAggregationWorkflow` (Flower's strategy API) and :class:`SecureGrid` (its Message API) differ only
in how a strategy hands over its fit instructions and takes back the result; the round itself is this, on the
aggregation pipeline every fedsecure driver uses: the round's encoding and DP level come from a
:class:`~fedsecure.pipeline.ServerPipeline`, which also turns the aggregate into the new arrays.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._errors import ConfigurationError
from ..dp import DPConfig, PrivacyLedger, PrivacyLevel
from ..encoding import VectorSpec
from ..pipeline import RoundStep, ServerPipeline, round_privacy
from ..protocols import IdentityKeys, PaillierKeys, ProtocolKind, RoundConfig, ThreatModel
from ..runtime.flower import FlowerTransport, encoding_record, load_paillier_keys, load_registry
from ..runtime.flower._common import task_digest
from ..runtime.flower._paillier import load_key_holder_verify_key

__all__ = ["RoundSummary", "SecureRounds"]

LOGGER = logging.getLogger("fedsecure.flower")
PROTOCOLS = (ProtocolKind.SECAGG, ProtocolKind.SECAGG_PLUS, ProtocolKind.PAILLIER, ProtocolKind.PAILLIER_THRESHOLD)


@dataclass(frozen=True)
class RoundSummary:
    """What one secure round did: who contributed, who dropped and why, whether it aggregated, and (with DP)
    the epsilon spent so far."""

    server_round: int
    aggregated: bool
    survivors: tuple[int, ...]
    dropped: dict[int, str] = field(default_factory=dict)
    reason: str = ""
    epsilon: float | None = None
    #: Client id -> the Flower node id it ran on (client ids are per round unless nodes registered theirs).
    nodes: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class RoundOutcome:
    """A secure round's result: the new arrays (None if it could not aggregate), the summary, and the clients'
    reports and node ids (client id -> node id)."""

    arrays: list[np.ndarray] | None
    summary: RoundSummary
    reports: Mapping[int, Mapping[str, float]]
    nodes: Mapping[int, int] = field(default_factory=dict)


def _path_or(value: Any, loader: Any) -> Any:
    return loader(value) if isinstance(value, (str, os.PathLike)) else value


class SecureRounds:
    """The drop-in's settings, checked once, and the secure round they run (see the drivers for each keyword)."""

    def __init__(self, *, protocol: ProtocolKind | str, threat: ThreatModel | None, clip: float, max_examples: int,
                 ring_bits: int, stage_timeout: float, fit_timeout: float,
                 identities: IdentityKeys | str | os.PathLike[str] | None = None,
                 paillier: str | os.PathLike[str] | None = None, dp: DPConfig | None = None) -> None:
        try:
            protocol = ProtocolKind(protocol)
        except ValueError:
            raise ConfigurationError(f"protocol must be one of {[p.value for p in PROTOCOLS]}",
                                     parameter="protocol") from None
        if protocol not in PROTOCOLS:
            raise ConfigurationError(f"the drop-in runs {', '.join(p.value for p in PROTOCOLS)}, not "
                                     f"{protocol.value}", parameter="protocol")
        if not clip > 0 or not np.isfinite(clip):
            raise ConfigurationError("clip must be a positive number (an L2 bound)", parameter="clip")
        if not isinstance(max_examples, int) or max_examples < 1:
            raise ConfigurationError("max_examples must be a positive integer", parameter="max_examples")
        self.registry: IdentityKeys | None = _path_or(identities, load_registry)
        if self.registry is not None and not protocol.is_paillier:
            self.active = True
        elif self.registry is not None:
            raise ConfigurationError("identities are SecAgg's active variant; Paillier signs with its own keys",
                                     parameter="identities")
        else:
            self.active = False
        self.paillier_keys: PaillierKeys | None = None
        self.key_holder_key: bytes | None = None
        if protocol.is_paillier:
            if paillier is None:
                raise ConfigurationError("Paillier needs its deployment's public file (paillier=, written by "
                                         "fedsecure.runtime.flower.write_paillier_deployment)", parameter="paillier")
            self.paillier_keys = load_paillier_keys(paillier)
            self.key_holder_key = load_key_holder_verify_key(paillier)
            wanted = ProtocolKind.PAILLIER_THRESHOLD if self.paillier_keys.threshold_decryption \
                else ProtocolKind.PAILLIER
            if protocol is not wanted:
                raise ConfigurationError(f"the Paillier keys in {paillier} are for {wanted.value}",
                                         parameter="protocol")
        elif paillier is not None:
            raise ConfigurationError("paillier= is for protocol paillier or paillier-threshold", parameter="paillier")
        if dp is not None:
            if dp.level is PrivacyLevel.LOCAL:
                raise ConfigurationError("local DP runs inside the clients' own training (Opacus in your fit); "
                                         "the drop-in offers central and distributed DP", parameter="dp")
            if dp.level is PrivacyLevel.DISTRIBUTED and protocol.is_paillier:
                raise ConfigurationError("distributed DP adds noise in the SecAgg ring: use secagg or secagg+",
                                         parameter="dp")
        self.protocol = protocol
        self.threat = threat or ThreatModel()
        self.clip = float(clip)
        self.max_examples = max_examples
        self.ring_bits = ring_bits
        self.stage_timeout = stage_timeout
        self.fit_timeout = fit_timeout
        self.dp = dp
        #: The aggregation pipeline, set up at the first round (it needs the model's layout and the cohort size).
        self.pipeline: ServerPipeline | None = None
        self._cohort_bound = 0
        #: Round ids have a random base, so a second run with the same nodes never repeats a configuration.
        self._round_base = secrets.randbits(62)
        #: Flower node id -> registered client id (the active variant and Paillier bind keys to client ids).
        self._registered: dict[int, int] = {}
        self._transport: FlowerTransport | None = None
        self.summaries: list[RoundSummary] = []

    @property
    def ledger(self) -> PrivacyLedger | None:
        """The privacy ledger of a run with DP (None before the first round and without DP)."""
        return self.pipeline.privacy.ledger if self.pipeline is not None else None

    @property
    def _needs_registration(self) -> bool:
        return self.registry is not None or self.paillier_keys is not None

    def _transport_for(self, grid: Any) -> FlowerTransport:
        if self._transport is None or self._transport.grid is not grid:
            # Replies are pulled every 10 ms: a stage's latency, not its deadline, sets the round's time. A new
            # grid (Flower may hand the workflow another each round) keeps the key holders registered so far.
            decryptors = self._transport.decryptors if self._transport is not None else []
            self._transport = FlowerTransport(grid, stage_timeout=self.stage_timeout, start_timeout=self.fit_timeout,
                                              message_type="train", poll_interval=0.01)
            self._transport.decryptors = decryptors
        return self._transport

    def _pipeline_for(self, spec: VectorSpec, cohort: int) -> ServerPipeline:
        if self.pipeline is not None and self.pipeline.spec != spec and self.dp is not None:
            raise ConfigurationError("the model's layout changed between rounds; a DP run's ledger and plan are "
                                     "for one model", parameter="arrays")
        if self.pipeline is None or self.pipeline.spec != spec:
            # Fixed cohorts chosen by the strategy: no amplification by sampling is claimed (fraction 1), and the
            # noise is planned for the first round's cohort less the threat model's dropouts.
            privacy = round_privacy(self.dp, protocol=self.protocol, dimension=spec.size, clip=self.clip,
                                    ring_bits=self.ring_bits, max_weight=self.max_examples,
                                    population=cohort, dropout=self.threat.dropout_fraction if self.dp else 0.0)
            self.pipeline = ServerPipeline(spec, privacy)
            self._cohort_bound = cohort
        return self.pipeline

    def client_ids(self, grid: Any, nodes: list[int]) -> dict[int, int]:
        """Client id -> node id for the strategy's chosen ``nodes``: their position in the list, or, with the
        active variant or Paillier, the ids the nodes registered (with keys in the registry); a node without
        one is left out of the round."""
        if not self._needs_registration:
            return {client: node for client, node in enumerate(nodes)}
        transport = self._transport_for(grid)
        listed = set(grid.get_node_ids())
        new = sorted(listed - self._registered.keys() - set(transport.decryptors))
        if new:
            self._registered.update(transport.register(new, known=self._registered,
                                                       key_holder_key=self.key_holder_key))
        keys = (self.registry.verify_keys if self.registry is not None
                else self.paillier_keys.signing_keys if self.paillier_keys is not None else {})
        return {self._registered[node]: node for node in nodes
                if node in self._registered and self._registered[node] in keys}

    def secure_round(self, grid: Any, server_round: int, arrays: list[np.ndarray], nodes: Mapping[int, int],
                     start_records: Mapping[int, Any]) -> RoundOutcome:
        """One secure round: ``nodes`` (client id -> node id) get ``start_records`` (node id -> the strategy's
        instructions) with the round start; the result is ``arrays`` moved by the survivors' mean update (with the
        DP level's noise), each in its own dtype."""
        spec = VectorSpec.from_parameters(arrays)
        flat = spec.flatten(arrays)
        pipeline = self._pipeline_for(spec, len(nodes))

        def outcome(step: RoundStep, dropped: dict[int, str], survivors: tuple[int, ...] = (),
                    reports: Mapping[int, Mapping[str, float]] | None = None) -> RoundOutcome:
            release = step.release
            if step.vector is None or release.aborted:
                LOGGER.warning("round %d could not aggregate securely (%s); the parameters are unchanged",
                               server_round, release.reason)
                summary = RoundSummary(server_round, False, (), dropped, release.reason or "", release.epsilon,
                                       dict(nodes))
                self.summaries.append(summary)
                return RoundOutcome(None, summary, {}, nodes)
            summary = RoundSummary(server_round, True, survivors, dropped, "", release.epsilon, dict(nodes))
            self.summaries.append(summary)
            arrays = spec.unflatten(step.vector)  # a list, each array in its own dtype, as it was given
            return RoundOutcome(list(arrays.values()) if isinstance(arrays, dict) else arrays, summary, reports or {},
                                nodes)

        def accounted(clients: Iterable[int]) -> list[int]:
            # The ledger keeps each client's loss under an identity that lasts from round to round: the id it
            # registered, or else its Flower node id (a position in the strategy's list names another node
            # each round, and would spread one client's loss over several entries).
            return sorted(clients if self._needs_registration else (nodes[client] for client in clients))

        def give_up(reason: str, dropped: dict[int, str] | None = None) -> RoundOutcome:
            return outcome(pipeline.fail(server_round, flat, accounted(nodes), reason), dropped or {})

        if self.dp is not None and len(nodes) > self._cohort_bound:
            return give_up(f"{len(nodes)} sampled clients, more than the {self._cohort_bound} the first round's "
                           "encoding and privacy plan were made for")
        minimum = pipeline.minimum_survivors(len(nodes))
        if minimum is None:
            return give_up("no number of noise shares keeps this round within the privacy budget")
        transport = self._transport_for(grid)
        decryptor = None
        if self.paillier_keys is not None and not self.paillier_keys.threshold_decryption:
            live = [node for node in transport.decryptors if node in set(grid.get_node_ids())]
            if not live:
                return give_up("no node registered as the Paillier key holder")
            decryptor = live[-1]
        encoding = pipeline.encoding(len(nodes))
        if len({task_digest(encoding_record(encoding), start_records.get(node)) for node in nodes.values()}) > 1:
            # One round has one task: a client given another model or other instructions than the rest could have
            # its update isolated in the sum (the clients check the task their configuration binds).
            return give_up("the strategy gave the clients different instructions (arrays or config); a secure "
                           "round sends every client the same")
        try:
            config = RoundConfig.create(protocol=self.protocol, clients=nodes, encoding=encoding,
                                        round_id=self._round_base + server_round, threat=self.threat,
                                        identities=self.registry, paillier=self.paillier_keys,
                                        min_threshold=minimum)
        except ConfigurationError as error:
            # A cohort the threat model cannot protect (too few clients for its dropouts, say): no round at all.
            return give_up(f"{len(nodes)} sampled clients: {error}")
        LOGGER.info("round %d: %d clients, fedsecure %s%s", server_round, len(nodes), self.protocol.value,
                    f" with {self.dp.level.value} DP" if self.dp is not None else "")
        report = transport.run_round(config, nodes, encoding_record(encoding), start_records=start_records,
                                     decryptor=decryptor, name=f"round {server_round}")
        dropped = {client: str(error) for client, error in report.client_errors.items()}
        if report.result is None:
            return give_up(str(report.abort) if report.abort is not None else "no result", dropped)
        step = pipeline.finish(server_round, flat, encoding, report.result.ring_sum,
                               accounted(report.result.survivors))
        return outcome(step, dropped, tuple(sorted(report.result.survivors)), report.client_reports)

