"""The jobs the Flower apps run: ``fedsecure simulate``'s round on generated vectors, and federated training.

The server's side reads its settings from the Flower run config (the
``[tool.flwr.app.config]`` table of the app's ``pyproject.toml``, overridden
with ``flwr run --run-config``); each client's side reads its partition from
its node config. Results go to ``out`` as JSON after every round, so a killed
run keeps what it finished.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..._errors import ConfigurationError
from ..._io import atomic_write_text
from ...dp import DistributedDPEncoding
from ...encoding import ClipMode, EncodingConfig, Quantizer
from ...protocols import IdentityKeys, PaillierKeys, ProtocolKind, RoundConfig, ThreatModel
from .._simulate import CLIP, client_data
from .._simulator import RoundReport
from .._transcript import transcript_lines, write_transcript
from ._client import ClientUpdate
from ._identity import load_registry
from ._paillier import load_key_holder_verify_key, load_paillier_keys
from ._server import FlowerTransport, encoding_record

__all__ = ["JobSettings", "run_server_job", "auto_job", "training_update"]

LOGGER = logging.getLogger("fedsecure.flower")
JOBS = ("simulate", "linear784", "cnn-digits", "logistic")
_LOCAL_DP_RECORD = "fedsecure-local-dp"


@dataclass
class JobSettings:
    """The ServerApp's settings; each field is a run-config key of the same name with ``-`` for ``_``.

    ``job`` is ``simulate`` (one generated vector per client, checked against
    the plaintext sum) or an example to train (``linear784``, ``cnn-digits``,
    ``logistic``); ``nodes`` is how many SuperNodes to wait for (up to
    ``wait`` seconds) before the first round; ``min_clients`` the smallest
    cohort a round starts with (each round waits up to ``wait`` seconds for
    it); ``partitions`` how many data partitions the nodes split the example's
    data into (their ``num-partitions``). ``client_ids`` is ``assigned`` (the
    server numbers nodes as it first sees them) or ``registered`` (each node
    states its id from its node config in a first exchange; the
    active-adversary variant's identity keys need this). ``identities`` is
    the path of an identity registry (``registry.json``): with it, rounds run
    SecAgg's active-adversary variant over the registered clients it lists.
    ``paillier`` is the path of a Paillier deployment's public file
    (``paillier-public.json``): rounds run ``paillier`` or
    ``paillier-threshold``, as its keys say, over the registered clients it
    lists, with a separate decryptor's node found at registration.
    ``dp`` (``central``, ``distributed`` or ``local``) trains with
    differential privacy, spending ``epsilon`` (with ``delta``) over
    ``rounds``, calibrated as ``fedsecure train --dp`` does; ``mechanism``,
    ``bits``, ``max_grad_norm`` and ``refuse_over_budget`` are that command's
    options; the noise is planned for ``dropout_fraction`` of the clients dropping.
    """

    job: str = "simulate"
    protocol: str = "secagg+"
    rounds: int = 3
    dimension: int = 10_000
    nodes: int = 2
    min_clients: int = 2
    partitions: int = 0
    wait: float = 60.0
    stage_timeout: float = 20.0
    start_timeout: float = 60.0
    seed: int = 0
    dropout_fraction: float = 0.1
    corrupt_fraction: float = 0.2
    out: str = ""
    sums: str = ""
    transcript: str = ""
    progress: str = ""
    client_ids: str = "assigned"
    identities: str = ""
    paillier: str = ""
    dp: str = ""
    epsilon: float = 0.0
    delta: float = 1e-5
    mechanism: str = ""
    bits: int = 20
    max_grad_norm: float = 1.0
    refuse_over_budget: bool = False

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> JobSettings:
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        unknown = sorted(key for key in run_config if key.replace("-", "_") not in known)
        if unknown:
            raise ConfigurationError(f"unknown run-config keys: {', '.join(unknown)}", parameter="run_config")
        for key, value in run_config.items():
            name = key.replace("-", "_")
            if name in known:
                kind = type(getattr(cls(), name))
                values[name] = (str(value).lower() in ("1", "true", "yes")) if kind is bool else kind(value)
        settings = cls(**values)
        if settings.job not in JOBS:
            raise ConfigurationError(f"job must be one of {', '.join(JOBS)}", parameter="job")
        ProtocolKind(settings.protocol)
        if not 0 < settings.rounds <= 1 << 16:
            raise ConfigurationError("rounds must be in [1, 65536] (round ids are a random base plus the index)",
                                     parameter="rounds")
        if settings.client_ids not in ("assigned", "registered"):
            raise ConfigurationError("client-ids must be `assigned` or `registered`", parameter="client-ids")
        if settings.dp and settings.dp not in ("central", "distributed", "local"):
            raise ConfigurationError("dp must be central, distributed or local", parameter="dp")
        if settings.dp and (settings.job == "simulate" or settings.epsilon <= 0):
            raise ConfigurationError("dp needs a training job and a positive epsilon", parameter="dp")
        if settings.identities and settings.paillier:
            raise ConfigurationError("identities are SecAgg's, paillier is Paillier's: choose one",
                                     parameter="paillier")
        if settings.identities or settings.paillier:
            # Identity and signing keys are bound to client ids: the nodes must state theirs.
            settings.client_ids = "registered"
        return settings


def _dp_config(settings: JobSettings, experiment: Any) -> Any:
    from ...dp import Mechanism, PrivacyLevel
    from ...fl.examples import dp_config_for

    return dp_config_for(experiment, level=PrivacyLevel(settings.dp), epsilon=settings.epsilon, delta=settings.delta,
                         rounds=settings.rounds, mechanism=Mechanism(settings.mechanism) if settings.mechanism else None,
                         bits=settings.bits, max_grad_norm=settings.max_grad_norm, name=settings.job)


def _experiment(job: str, partitions: int, seed: int, protocol: ProtocolKind) -> Any:
    from ...fl.examples import EXAMPLES

    return EXAMPLES[job](protocol=protocol, clients=partitions, seed=seed)


def training_update(job: str, partitions: int, seed: int, partition: int, weights: np.ndarray,
                    privatize: Any = None) -> ClientUpdate:
    """Train the example's model from ``weights`` on this node's partition; the update is the weight change.

    ``privatize`` (local DP) wraps the model, optimizer and data loader with Opacus' DP-SGD.
    """
    experiment = _experiment(job, partitions, seed, ProtocolKind.PLAINTEXT)
    federation = experiment.federation
    if not 0 <= partition < len(federation.clients):
        raise ConfigurationError(f"partition {partition} is outside the {partitions} partitions",
                                 parameter="partition-id")
    federation.set_global_vector(weights)
    client = federation.clients[partition]
    if privatize is not None:
        federation.train(federation.model, client.data, privatize=privatize)
    else:
        federation.train(federation.model, client.data)
    return ClientUpdate(federation.global_vector() - weights, weight=client.num_examples)


def auto_job(context: Any, client_id: int, task: Mapping[str, Any]) -> ClientUpdate:
    """The client side of every built-in job, chosen by the round's ``task-job``."""
    job = str(task.get("task-job", "simulate"))
    if job == "simulate":
        return ClientUpdate(client_data(int(task["task-seed"]), client_id, int(task["encoding-dimension"])))
    if job not in JOBS:
        raise ConfigurationError(f"unknown job {job!r}", parameter="task-job")
    weights = np.frombuffer(task["task-weights"], dtype="<f8").astype(np.float64)
    partitions = int(context.node_config.get("num-partitions", task["task-partitions"]))
    partition = int(context.node_config.get("partition-id", client_id))
    if task.get("dp-level") != "local":
        return training_update(job, partitions, int(task["task-seed"]), partition, weights)
    # Local DP: DP-SGD through Opacus. The client's accountant history lives in its own context.state across
    # rounds; its epsilon so far is reported to the server, which keeps the ledger.
    from flwr.app import ConfigRecord

    from ...dp import LocalPrivacy

    privacy = LocalPrivacy(noise_multiplier=float(task["dp-noise-multiplier"]),
                           max_grad_norm=float(task["dp-max-grad-norm"]))
    saved = context.state.config_records.get(_LOCAL_DP_RECORD)
    if saved is not None:
        privacy.load_state({client_id: json.loads(str(saved["history"]))})
    update = training_update(job, partitions, int(task["task-seed"]), partition, weights,
                             privatize=privacy.privatizer(client_id))
    context.state.config_records[_LOCAL_DP_RECORD] = ConfigRecord(
        {"history": json.dumps(privacy.state().get(client_id, []))})
    return dataclasses.replace(update, report={"epsilon": privacy.epsilon(client_id, float(task["dp-delta"]))})


class _Progress:
    def __init__(self, path: str) -> None:
        self._path = Path(path) if path else None

    def __call__(self, event: str, **details: Any) -> None:
        LOGGER.info("%s %s", event, json.dumps(details))
        if self._path is not None:
            with self._path.open("a") as handle:
                handle.write(json.dumps({"event": event, "time": time.time()} | details) + "\n")


def _wait_for_nodes(grid: Any, count: int, wait: float, left_out: set[int]) -> None:
    deadline = time.monotonic() + wait
    while len(set(grid.get_node_ids()) - left_out) < count and time.monotonic() < deadline:
        time.sleep(0.5)


def _round_summary(report: RoundReport, round_index: int, cohort: int, seconds: float) -> dict[str, Any]:
    result = report.result
    survivors = sorted(result.survivors) if result is not None else []
    senders = survivors or list(report.config.clients)
    up = [sum(r.size for r in report.transcript if r.sender == c) for c in senders]
    return {
        "round": round_index,
        "round_id": report.config.round_id,
        "cohort": cohort,
        "clients": list(report.config.clients),
        "survivors": survivors,
        "aborted": report.aborted,
        "abort_reason": str(report.abort) if report.abort is not None else None,
        "dropped": {str(c): str(e) for c, e in sorted(report.client_errors.items())},
        "rejected": [str(e) for e in report.rejected],
        "threshold": report.config.threshold,
        "degree": report.config.degree,
        "seconds": seconds,
        "server_seconds": report.server_seconds,
        "bytes_up_per_client": float(np.mean(up)) if up else 0.0,
    }


def run_server_job(grid: Any, run_config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The body of the built-in ServerApp: register nodes, run the rounds, write the results."""
    settings = JobSettings.from_run_config(run_config)
    progress = _Progress(settings.progress)
    protocol = ProtocolKind(settings.protocol)
    threat = ThreatModel(dropout_fraction=settings.dropout_fraction, corrupt_fraction=settings.corrupt_fraction)
    transport = FlowerTransport(grid, stage_timeout=settings.stage_timeout, start_timeout=settings.start_timeout,
                                record_fields=bool(settings.transcript),
                                progress=lambda stage, done, total: None,
                                on_stage=lambda stage, seconds, answered, expected: progress(
                                    "stage", stage=stage, seconds=seconds, answered=answered, expected=expected))
    registry = load_registry(settings.identities) if settings.identities else None
    paillier = load_paillier_keys(settings.paillier) if settings.paillier else None
    key_holder_key = load_key_holder_verify_key(settings.paillier) if settings.paillier else None
    if paillier is not None:
        protocol = ProtocolKind.PAILLIER_THRESHOLD if paillier.threshold_decryption else ProtocolKind.PAILLIER
    experiment = None
    if settings.job != "simulate":
        experiment = _experiment(settings.job, settings.partitions or settings.nodes, settings.seed, protocol)
        if settings.dp:
            # The federation plans for the threat model's dropout: the noise shares distributed DP counts on, and
            # the fixed denominator of user-level DP.
            dp_config = dataclasses.replace(_dp_config(settings, experiment),
                                            refuse_over_budget=settings.refuse_over_budget)
            experiment.federation = dataclasses.replace(experiment.federation, dp=dp_config,
                                                        dropout=settings.dropout_fraction)
    registered: dict[int, int] = {}
    left_out: set[int] = set()
    history: list[dict[str, Any]] = []
    # Round ids are unique across runs (a random 48-bit base, then the round index): long-lived credentials refuse
    # a round id, or a configuration, they have already served, so a second run must not reuse the first's.
    round_base = int.from_bytes(os.urandom(6), "big") << 16
    _wait_for_nodes(grid, settings.nodes, settings.wait, left_out)
    for round_index in range(settings.rounds):
        started = time.perf_counter()
        _wait_for_nodes(grid, settings.min_clients, settings.wait, left_out)
        listed = set(grid.get_node_ids()) - left_out
        new = sorted(listed - registered.keys() - set(transport.decryptors))
        if new and settings.client_ids == "registered":
            registered.update(transport.register(new, known={n: c for n, c in registered.items() if n in listed},
                                                 key_holder_key=key_holder_key))
            left_out.update(set(new) - registered.keys() - set(transport.decryptors))
        elif new:
            first = max(registered.values(), default=-1) + 1
            registered.update({node: first + index for index, node in enumerate(new)})
        nodes = {client: node for node, client in registered.items() if node in listed
                 and (registry is None or client in registry.verify_keys)
                 and (paillier is None or client in paillier.signing_keys)}
        progress("round-start", round=round_index, clients=sorted(nodes))
        summary = _run_one(transport, settings, protocol, threat, experiment, nodes, round_index, progress, registry,
                           paillier, round_base, frozenset(listed))
        summary["seconds"] = time.perf_counter() - started
        # A node that vanished (no answer before a deadline, or Flower reports it gone) is left out for the rest
        # of the run; a restarted SuperNode joins again under its new node id. A client that refused stays in.
        for client in summary.pop("_failed", []):
            left_out.add(nodes[client])
        failed_decryptor = summary.pop("_failed_decryptor", None)
        if failed_decryptor is not None:
            left_out.add(failed_decryptor)
        history.append(summary)
        progress("round-end", **{k: summary[k] for k in ("round", "aborted", "survivors", "abort_reason")})
        if settings.out:
            atomic_write_text(Path(settings.out), json.dumps({"settings": asdict(settings), "rounds": history},
                                                             indent=2) + "\n")
    return history


def _skipped(round_index: int, nodes: Mapping[int, int], reason: str) -> dict[str, Any]:
    LOGGER.warning("round %d cannot run: %s", round_index, reason)
    return {"round": round_index, "cohort": len(nodes), "clients": sorted(nodes), "survivors": [], "aborted": True,
            "abort_reason": reason, "dropped": {}, "rejected": []}


def _run_one(transport: FlowerTransport, settings: JobSettings, protocol: ProtocolKind, threat: ThreatModel,
             experiment: Any, nodes: dict[int, int], round_index: int, progress: _Progress,
             registry: IdentityKeys | None = None, paillier: PaillierKeys | None = None,
             round_base: int = 0, listed_nodes: frozenset[int] = frozenset()) -> dict[str, Any]:
    cohort = len(nodes)
    if cohort < max(2, settings.min_clients):
        return _skipped(round_index, nodes, f"{cohort} clients available, fewer than {max(2, settings.min_clients)}")
    task: dict[str, Any] = {"task-job": settings.job, "task-seed": settings.seed}
    before = None
    federation = experiment.federation if experiment is not None else None
    dp = federation.dp if federation is not None else None
    level = dp.level.value if dp is not None else ""
    encoding: EncodingConfig | DistributedDPEncoding
    minimum: int | None = 0
    if federation is None:
        encoding = EncodingConfig.fit_scale(dimension=settings.dimension, clients=cohort, clip=CLIP, ring_bits=32,
                                            clip_mode=ClipMode.PER_COORDINATE)
    else:
        plan = federation.distributed_plan
        # Distributed DP: a fresh public rotation per round; the plan was calibrated for the whole run.
        encoding = plan.encoding(os.urandom(32)) if plan is not None else federation.encoding_for(cohort)
        minimum = federation.minimum_survivors(cohort)
        before = federation.global_vector()
        task |= {"task-weights": before.astype("<f8").tobytes(),
                 "task-partitions": settings.partitions or settings.nodes, "dp-level": level}
        if dp is not None and level == "local":
            task |= {"dp-noise-multiplier": float(dp.noise_multiplier or 0.0),
                     "dp-max-grad-norm": float(dp.max_grad_norm), "dp-delta": float(dp.delta)}
    if minimum is None:
        return _skipped(round_index, nodes, "no number of noise shares keeps this round within the privacy budget")
    decryptor = None
    if paillier is not None and not paillier.threshold_decryption:
        # The most recently registered key holder still listed and not left out (a restarted one comes last).
        live = [node for node in transport.decryptors if node in listed_nodes]
        if not live:
            return _skipped(round_index, nodes, "no node registered as the Paillier key holder")
        decryptor = live[-1]
    try:
        config = RoundConfig.create(protocol=protocol, clients=sorted(nodes), encoding=encoding,
                                    round_id=round_base + round_index, threat=threat, identities=registry,
                                    min_threshold=minimum,
                                    paillier=paillier)
    except ConfigurationError as error:
        return _skipped(round_index, nodes, f"no round configuration: {error}")
    started = time.perf_counter()
    report = transport.run_round(config, nodes, encoding_record(encoding) | task, decryptor=decryptor,
                                 name=f"round {round_index}")
    summary = _round_summary(report, round_index, cohort, time.perf_counter() - started)
    summary["_failed"] = sorted(c for c, e in report.client_errors.items() if getattr(e, "unreachable", False))
    if decryptor is not None and getattr(report.decryptor_error, "unreachable", False):
        summary["_failed_decryptor"] = decryptor
    noise: float | None = None
    try:
        if report.result is not None:
            if settings.sums:
                Path(settings.sums).mkdir(parents=True, exist_ok=True)
                np.save(Path(settings.sums) / f"round-{round_index}.npy", report.result.ring_sum)
            if federation is None:
                summary |= _check_simulated(settings, encoding, report)  # type: ignore[arg-type]
            else:
                noise = _train_step(federation, encoding, report, before, summary)
                if not summary["aborted"]:
                    summary["loss"], summary["accuracy"] = experiment.evaluate(federation.model)
        _account(federation, round_index, report, summary, noise)
    finally:
        if settings.transcript:
            # Written once the round's accounting is done, whatever its outcome, with the noise actually released.
            dp_record = federation.dp_transcript_record(noise) if federation is not None else None
            write_transcript(settings.transcript, [list(transcript_lines(report, encoding=encoding, threat=threat,
                                                                         dp=dp_record))],
                             append=round_index > 0)
    if not summary["aborted"]:
        progress("round-result", round=round_index, survivors=summary["survivors"])
    return summary


def _check_simulated(settings: JobSettings, encoding: EncodingConfig, report: RoundReport) -> dict[str, Any]:
    result = report.result
    if result is None:  # pragma: no cover - callers check
        return {}
    decoded = Quantizer(encoding).decode_sum(result.ring_sum)
    expected = np.zeros(settings.dimension)
    for client in result.survivors:
        expected += client_data(settings.seed, client, settings.dimension)
    max_error = float(np.max(np.abs(decoded.total - expected)))
    # Stochastic rounding moves each input by less than one step per coordinate.
    return {"max_abs_error": max_error, "correct": max_error <= len(result.survivors) / encoding.scale}


def _train_step(federation: Any, encoding: EncodingConfig | DistributedDPEncoding, report: RoundReport,
                before: Any, summary: dict[str, Any]) -> float | None:
    """Apply the round's aggregate to the global model (with central DP's noise); returns the noise released."""
    result = report.result
    if result is None:  # pragma: no cover - callers check
        return None
    dp = federation.dp
    survivors = len(result.survivors)
    if isinstance(encoding, DistributedDPEncoding):
        # The noise in the sum is that of the survivors' shares, not the planned amount.
        mean = encoding.decode_sum(result.ring_sum) / federation.fixed_denominator()
        federation.apply_mean_update(before, mean)
        return float(federation.distributed_plan.noise_multiplier_for(survivors))
    decoded = Quantizer(encoding).decode_sum(result.ring_sum)
    if dp is not None and dp.level.value == "central":
        noise = float(federation.central_noise_multiplier)
        ledger = federation.ledger
        if dp.refuse_over_budget and ledger is not None and dp.target_epsilon is not None \
                and ledger.preview(noise, survivors) > dp.target_epsilon:
            summary |= {"aborted": True, "abort_reason": "this round would take epsilon above the budget"}
            return None
        mean = (decoded.total + federation.central_noise(decoded.total.size)) / federation.fixed_denominator()
        federation.apply_mean_update(before, mean)
        return noise
    if not decoded.total_weight:
        summary |= {"aborted": True, "abort_reason": "the survivors' total weight is zero"}
        return None
    federation.apply_mean_update(before, decoded.mean())
    return None


def _account(federation: Any, round_index: int, report: RoundReport, summary: dict[str, Any],
             noise: float | None) -> None:
    """Record the round in the privacy ledger: released noise, a refusal, or the clients' local-DP epsilons."""
    ledger = federation.ledger if federation is not None else None
    if ledger is None:
        return
    dp = federation.dp
    cohort = list(report.config.clients)
    if dp.level.value == "local":
        # Every client that trained spent record-level privacy, whatever happened to the round.
        epsilons = {c: r["epsilon"] for c, r in report.client_reports.items() if "epsilon" in r}
        if epsilons:
            ledger.record_local(round_index, sorted(epsilons), epsilons, float(dp.noise_multiplier or 0.0))
    elif summary["aborted"] or noise is None:
        ledger.record_refused(round_index, cohort)
    else:
        survivors = sorted(report.result.survivors) if report.result is not None else []
        ledger.record(round_index, survivors, contributors=len(survivors), noise_multiplier=noise)
    summary["epsilon"] = ledger.epsilon
