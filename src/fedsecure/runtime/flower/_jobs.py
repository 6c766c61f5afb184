"""The jobs the Flower apps run: ``fedsecure simulate``'s round on generated vectors, and federated training.

The server's side reads its settings from the Flower run config (the
``[tool.flwr.app.config]`` table of the app's ``pyproject.toml``, overridden
with ``flwr run --run-config``); each client's side reads its partition from
its node config. Results go to ``out`` as JSON after every round, so a killed
run keeps what it finished.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..._errors import ConfigurationError
from ..._io import atomic_write_text
from ...encoding import ClipMode, EncodingConfig, Quantizer
from ...protocols import IdentityKeys, ProtocolKind, RoundConfig, ThreatModel
from .._simulate import CLIP, client_data
from .._simulator import RoundReport
from .._transcript import transcript_lines, write_transcript
from ._client import ClientUpdate
from ._identity import load_registry
from ._server import FlowerTransport, encoding_record

__all__ = ["JobSettings", "run_server_job", "auto_job", "training_update"]

LOGGER = logging.getLogger("fedsecure.flower")
JOBS = ("simulate", "linear784", "cnn-digits", "logistic")


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
    corrupt_fraction: float = 0.0
    out: str = ""
    sums: str = ""
    transcript: str = ""
    progress: str = ""
    client_ids: str = "assigned"
    identities: str = ""

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> JobSettings:
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in run_config.items():
            name = key.replace("-", "_")
            if name in known:
                kind = type(getattr(cls(), name))
                values[name] = kind(value)
        settings = cls(**values)
        if settings.job not in JOBS:
            raise ConfigurationError(f"job must be one of {', '.join(JOBS)}", parameter="job")
        ProtocolKind(settings.protocol)
        if settings.client_ids not in ("assigned", "registered"):
            raise ConfigurationError("client-ids must be `assigned` or `registered`", parameter="client-ids")
        if settings.identities:
            # Identity keys are bound to client ids: the nodes must state theirs.
            settings.client_ids = "registered"
        return settings


def _experiment(job: str, partitions: int, seed: int, protocol: ProtocolKind) -> Any:
    from ...fl.examples import EXAMPLES

    return EXAMPLES[job](protocol=protocol, clients=partitions, seed=seed)


def training_update(job: str, partitions: int, seed: int, partition: int, weights: np.ndarray) -> ClientUpdate:
    """Train the example's model from ``weights`` on this node's partition; the update is the weight change."""
    experiment = _experiment(job, partitions, seed, ProtocolKind.PLAINTEXT)
    federation = experiment.federation
    if not 0 <= partition < len(federation.clients):
        raise ConfigurationError(f"partition {partition} is outside the {partitions} partitions",
                                 parameter="partition-id")
    federation.set_global_vector(weights)
    client = federation.clients[partition]
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
    return training_update(job, partitions, int(task["task-seed"]), partition, weights)


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
    experiment = None
    if settings.job != "simulate":
        experiment = _experiment(settings.job, settings.partitions or settings.nodes, settings.seed, protocol)
    registered: dict[int, int] = {}
    left_out: set[int] = set()
    history: list[dict[str, Any]] = []
    _wait_for_nodes(grid, settings.nodes, settings.wait, left_out)
    for round_index in range(settings.rounds):
        started = time.perf_counter()
        _wait_for_nodes(grid, settings.min_clients, settings.wait, left_out)
        listed = set(grid.get_node_ids()) - left_out
        new = sorted(listed - registered.keys())
        if new and settings.client_ids == "registered":
            registered.update(transport.register(new))
            left_out.update(set(new) - registered.keys())
        elif new:
            first = max(registered.values(), default=-1) + 1
            registered.update({node: first + index for index, node in enumerate(new)})
        nodes = {client: node for node, client in registered.items() if node in listed
                 and (registry is None or client in registry.verify_keys)}
        progress("round-start", round=round_index, clients=sorted(nodes))
        summary = _run_one(transport, settings, protocol, threat, experiment, nodes, round_index, progress, registry)
        summary["seconds"] = time.perf_counter() - started
        # A node that vanished (no answer before a deadline, or Flower reports it gone) is left out for the rest
        # of the run; a restarted SuperNode joins again under its new node id. A client that refused stays in.
        for client in summary.pop("_failed", []):
            left_out.add(nodes[client])
        history.append(summary)
        progress("round-end", **{k: summary[k] for k in ("round", "aborted", "survivors", "abort_reason")})
        if settings.out:
            atomic_write_text(Path(settings.out), json.dumps({"settings": asdict(settings), "rounds": history},
                                                             indent=2) + "\n")
    return history


def _run_one(transport: FlowerTransport, settings: JobSettings, protocol: ProtocolKind, threat: ThreatModel,
             experiment: Any, nodes: dict[int, int], round_index: int, progress: _Progress,
             registry: IdentityKeys | None = None) -> dict[str, Any]:
    cohort = len(nodes)
    if cohort < max(2, settings.min_clients):
        LOGGER.warning("round %d skipped: %d clients, fewer than %d", round_index, cohort, settings.min_clients)
        return {"round": round_index, "cohort": cohort, "clients": sorted(nodes), "survivors": [], "aborted": True,
                "abort_reason": f"{cohort} clients available, fewer than {max(2, settings.min_clients)}",
                "dropped": {}, "rejected": []}
    task: dict[str, Any] = {"task-job": settings.job, "task-seed": settings.seed}
    before = None
    if experiment is None:
        encoding = EncodingConfig.fit_scale(dimension=settings.dimension, clients=cohort, clip=CLIP, ring_bits=32,
                                            clip_mode=ClipMode.PER_COORDINATE)
    else:
        federation = experiment.federation
        encoding = federation.encoding_for(cohort)
        before = federation.global_vector()
        task |= {"task-weights": before.astype("<f8").tobytes(),
                 "task-partitions": settings.partitions or settings.nodes}
    try:
        config = RoundConfig.create(protocol=protocol, clients=sorted(nodes), encoding=encoding,
                                    round_id=round_index, threat=threat, identities=registry)
    except ConfigurationError as error:
        LOGGER.warning("round %d cannot run: %s", round_index, error)
        return {"round": round_index, "cohort": cohort, "clients": sorted(nodes), "survivors": [], "aborted": True,
                "abort_reason": f"no round configuration: {error}", "dropped": {}, "rejected": []}
    started = time.perf_counter()
    report = transport.run_round(config, nodes, encoding_record(encoding) | task)
    summary = _round_summary(report, round_index, cohort, time.perf_counter() - started)
    summary["_failed"] = sorted(c for c, e in report.client_errors.items() if getattr(e, "unreachable", False))
    if settings.transcript:
        write_transcript(settings.transcript,
                         [list(transcript_lines(report, encoding=encoding, threat=threat))], append=round_index > 0)
    if report.result is None:
        return summary
    quantizer = Quantizer(encoding)
    if settings.sums:
        Path(settings.sums).mkdir(parents=True, exist_ok=True)
        np.save(Path(settings.sums) / f"round-{round_index}.npy", report.result.ring_sum)
    decoded = quantizer.decode_sum(report.result.ring_sum)
    if experiment is None:
        expected = np.zeros(settings.dimension)
        for client in report.result.survivors:
            expected += client_data(settings.seed, client, settings.dimension)
        max_error = float(np.max(np.abs(decoded.total - expected)))
        # Stochastic rounding moves each input by less than one step per coordinate.
        summary |= {"max_abs_error": max_error,
                    "correct": max_error <= len(report.result.survivors) / encoding.scale}
    else:
        federation = experiment.federation
        if not decoded.total_weight:
            summary |= {"aborted": True, "abort_reason": "the survivors' total weight is zero"}
            return summary
        federation.apply_mean_update(before, decoded.mean())
        loss, accuracy = experiment.evaluate(federation.model)
        summary |= {"loss": loss, "accuracy": accuracy}
    progress("round-result", round=round_index, **{k: summary[k] for k in ("survivors",)})
    return summary
