"""The jobs the Flower apps run: ``fedsecure simulate``'s round on generated vectors, and federated training.

A training job is a function ``job(*, clients: int, seed: int)`` returning an experiment (an object with a
``federation``, a :class:`~fedsecure.fl.Federation` holding the model, the training function and the clients'
data, and optionally ``evaluate(model) -> (loss, accuracy)`` and ``local_epochs``) or a bare ``Federation``; it is
named ``package.module:function`` (the built-in ``linear784``, ``cnn-digits`` and ``logistic`` are names for
functions of :mod:`fedsecure.fl.examples`). The server builds it once for its model and aggregation pipeline;
each client builds it for its own partition's data and training function.

The server's side reads its settings from the Flower run config (the
``[tool.flwr.app.config]`` table of the app's ``pyproject.toml``, overridden
with ``flwr run --run-config``); each client's side reads its partition from
its node config. Results go to ``out`` as JSON after every round, so a killed
run keeps what it finished.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..._errors import ConfigurationError, PeerFault, PeerProtocolError
from ..._io import atomic_write_text
from ...dp import DistributedDPEncoding, Mechanism, PrivacyLevel
from ...encoding import ClipMode, EncodingConfig, Quantizer
from ...pipeline import LocalDP, RoundRecord, RoundStep, dp_config_for
from ...protocols import IdentityKeys, PaillierKeys, ProtocolKind, RoundConfig, ThreatModel
from .._simulate import CLIP, client_data
from .._simulator import RoundReport
from .._transcript import transcript_lines, write_transcript
from ._client import SERVER_PEER, ClientUpdate
from ._identity import load_registry
from ._paillier import load_key_holder_verify_key, load_paillier_keys
from ._server import FlowerTransport, encoding_record

__all__ = ["JobSettings", "run_server_job", "auto_job", "training_update", "load_job", "BUILT_IN_JOBS"]

LOGGER = logging.getLogger("fedsecure.flower")
#: The built-in training jobs, by name: the functions of fedsecure's own examples.
BUILT_IN_JOBS = {"linear784": "fedsecure.fl.examples:linear784", "cnn-digits": "fedsecure.fl.examples:cnn_digits",
                 "logistic": "fedsecure.fl.examples:logistic"}
_JOB_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*")
_LOCAL_DP_RECORD = "fedsecure-local-dp"


@dataclass
class Job:
    """A training job as the apps use it: the federation (model, training function, clients' data), its
    evaluation on held-out data (None: none), and its local epochs per round (for local DP's calibration)."""

    federation: Any
    evaluate: Callable[[Any], tuple[float, float]] | None = None
    local_epochs: int | None = None


def load_job(name: str) -> Callable[..., Any]:
    """The job function ``name`` names: a built-in job or ``package.module:function`` on the Python path.

    Raises :class:`ConfigurationError` (``job``) naming what is wrong: a malformed name, a module that cannot be
    imported, a missing or non-callable attribute.
    """
    target = BUILT_IN_JOBS.get(name, name)
    if not _JOB_NAME.fullmatch(target):
        raise ConfigurationError(f"job {name!r} is neither simulate, a built-in job ({', '.join(BUILT_IN_JOBS)}) "
                                 "nor package.module:function", parameter="job")
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigurationError(f"job {name!r}: cannot import {module_name} ({error}); is it on PYTHONPATH?",
                                 parameter="job") from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise ConfigurationError(f"job {name!r}: {module_name} has no function {attribute}", parameter="job")
    return function  # type: ignore[no-any-return]


def build_job(name: str, clients: int, seed: int) -> Job:
    """Call the job function with ``clients`` partitions and ``seed``; its result as a :class:`Job`."""
    built = load_job(name)(clients=clients, seed=seed)
    federation = getattr(built, "federation", built)
    for needed in ("pipeline", "clients", "train", "global_vector", "set_global_vector", "model"):
        if not hasattr(federation, needed):
            raise ConfigurationError(f"job {name!r} returned a {type(built).__name__}, neither a Federation nor an "
                                     "object with a `federation`", parameter="job")
    if len(federation.clients) != clients:
        raise ConfigurationError(f"job {name!r} made {len(federation.clients)} clients, asked for {clients}",
                                 parameter="job")
    return Job(federation, getattr(built, "evaluate", None), getattr(built, "local_epochs", None))


@dataclass
class JobSettings:
    """The ServerApp's settings; each field is a run-config key of the same name with ``-`` for ``_``.

    ``job`` is ``simulate`` (one generated vector per client, checked against
    the plaintext sum) or a training job: a built-in one (``linear784``,
    ``cnn-digits``, ``logistic``) or the user's ``package.module:function``
    (see the module's docstring); ``nodes`` is how many SuperNodes to wait for (up to
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
    ``fraction`` of the registered clients take part in each round, drawn as
    the DP level requires (reproducibly from ``seed`` without user-level DP,
    from the OS with it: Poisson under central DP). ``checkpoint`` is a
    directory the model, server optimizer, history and privacy ledger are
    saved to after every round; ``resume`` one to continue from.
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
    fraction: float = 1.0
    checkpoint: str = ""
    resume: str = ""

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
        if settings.job != "simulate":
            load_job(settings.job)
        if not 0 < settings.fraction <= 1:
            raise ConfigurationError("fraction must be in (0, 1]", parameter="fraction")
        if (settings.checkpoint or settings.resume) and settings.job == "simulate":
            raise ConfigurationError("checkpoints are for training jobs", parameter="checkpoint")
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


def _dp_config(settings: JobSettings, job: Job) -> Any:
    return dp_config_for(job, level=PrivacyLevel(settings.dp), epsilon=settings.epsilon, delta=settings.delta,
                         rounds=settings.rounds, mechanism=Mechanism(settings.mechanism) if settings.mechanism else None,
                         bits=settings.bits, max_grad_norm=settings.max_grad_norm, name=settings.job)


def _server_job(settings: JobSettings, protocol: ProtocolKind) -> Job:
    """The server's copy of the job: its model and its aggregation pipeline, with the run's DP and sampling."""
    job = build_job(settings.job, settings.partitions or settings.nodes, settings.seed)
    dp_config = None
    if settings.dp:
        dp_config = dataclasses.replace(_dp_config(settings, job), refuse_over_budget=settings.refuse_over_budget)
    # Rounds run the settings' protocol; the federation's is only checked against the DP level (a Paillier
    # protocol is never set up a second time here). The pipeline plans for the threat model's dropout: the noise
    # shares distributed DP counts on, and the fixed denominator of user-level DP.
    federation = dataclasses.replace(job.federation, dp=dp_config, dropout=settings.dropout_fraction,
                                     fraction=settings.fraction, transcript=None, paillier=None,
                                     protocol=ProtocolKind.PLAINTEXT if protocol.is_paillier else protocol)
    return dataclasses.replace(job, federation=federation)


def check_run_config(run_config: Mapping[str, Any]) -> JobSettings:
    """The settings a run config gives, with a training job built as the ServerApp would build it: a launcher
    calls this first, so a job or DP setting that cannot work is refused before any process starts."""
    settings = JobSettings.from_run_config(run_config)
    protocol = ProtocolKind(settings.protocol)
    if protocol in (ProtocolKind.SECAGG, ProtocolKind.SECAGG_PLUS) and not settings.identities:
        # A federation of `nodes` clients the threat model cannot protect would start every process and then
        # abort each round: refused here instead.
        threat = ThreatModel(dropout_fraction=settings.dropout_fraction, corrupt_fraction=settings.corrupt_fraction)
        encoding = EncodingConfig.fit_scale(dimension=1, clients=max(1, settings.nodes), clip=CLIP, ring_bits=32,
                                            clip_mode=ClipMode.PER_COORDINATE)
        RoundConfig.create(protocol=protocol, clients=range(max(1, settings.nodes)), encoding=encoding,
                           threat=threat)
    if settings.job != "simulate":
        protocol = ProtocolKind(settings.protocol)
        if settings.paillier:
            keys = load_paillier_keys(settings.paillier)
            protocol = ProtocolKind.PAILLIER_THRESHOLD if keys.threshold_decryption else ProtocolKind.PAILLIER
        _server_job(settings, protocol)
    return settings


def training_update(job: str, partitions: int, seed: int, partition: int, weights: np.ndarray,
                    privatize: Any = None) -> ClientUpdate:
    """Train the job's model from ``weights`` on this node's partition; the update is the weight change.

    ``privatize`` (local DP) wraps the model, optimizer and data loader with Opacus' DP-SGD.
    """
    # Built afresh for every round: Opacus (local DP) attaches hooks to the model it trains, and the server's
    # copy must never be a client's.
    federation = build_job(job, partitions, seed).federation
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


def allowed_jobs(node_config: Mapping[str, Any]) -> frozenset[str]:
    """The training jobs a node runs: ``fedsecure-jobs`` (comma-separated), by default the built-in ones.

    Threat model: the server names the job each round, and a job is code the client imports and runs; a node
    runs only the jobs its operator listed.
    """
    listed = str(node_config.get("fedsecure-jobs", ",".join(BUILT_IN_JOBS)))
    return frozenset(name.strip() for name in listed.split(",") if name.strip())


def auto_job(context: Any, client_id: int, task: Mapping[str, Any]) -> ClientUpdate:
    """The client side of every job, chosen by the round's ``task-job`` among those the node allows."""
    job = str(task.get("task-job", "simulate"))
    if job == "simulate":
        return ClientUpdate(client_data(int(task["task-seed"]), client_id, int(task["encoding-dimension"])))
    if job not in allowed_jobs(context.node_config):
        raise PeerProtocolError(PeerFault.REFUSED_BY_POLICY, peer=SERVER_PEER,
                                detail=f"job {job!r} is not among this node's fedsecure-jobs")
    weights = np.frombuffer(task["task-weights"], dtype="<f8").astype(np.float64)
    partitions = int(context.node_config.get("num-partitions", task["task-partitions"]))
    partition = int(context.node_config.get("partition-id", client_id))
    if task.get("dp-level") != "local":
        return training_update(job, partitions, int(task["task-seed"]), partition, weights)
    # Local DP: DP-SGD through Opacus. The client's accountant history lives in its own context.state across
    # rounds; its epsilon so far is reported to the server, which keeps the ledger.
    from flwr.app import ConfigRecord

    from ...dp import LocalPrivacy
    from ...dp._local import opacus_training_warnings_silenced

    privacy = LocalPrivacy(noise_multiplier=float(task["dp-noise-multiplier"]),
                           max_grad_norm=float(task["dp-max-grad-norm"]))
    saved = context.state.config_records.get(_LOCAL_DP_RECORD)
    if saved is not None:
        privacy.load_state({client_id: json.loads(str(saved["history"]))})
    with opacus_training_warnings_silenced():
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
    job = _server_job(settings, protocol) if settings.job != "simulate" else None
    records: list[Any] = []
    if job is not None and settings.resume:
        # The model, server optimizer, history and privacy ledger as a checkpoint left them (refused if it was
        # written for another model, protocol, DP level, population, fraction or seed).
        records = job.federation.restore(settings.resume)
        LOGGER.info("resumed from %s after %d rounds", settings.resume, len(records))
    registered: dict[int, int] = {}
    left_out: set[int] = set()
    # With assigned ids, nodes beyond the population distributed DP's accounting assumes, each round offered the
    # id of a client whose node has gone since (a restarted SuperNode can be listed before its old id lapses).
    waiting: set[int] = set()
    claims: dict[int, int] = {}  # with registered ids: node -> the id it claims, held by a node still listed
    history: list[dict[str, Any]] = []
    # Round ids are unique across runs (a random 48-bit base, then the round index): long-lived credentials refuse
    # a round id, or a configuration, they have already served, so a second run must not reuse the first's.
    round_base = int.from_bytes(os.urandom(6), "big") << 16
    _wait_for_nodes(grid, settings.nodes, settings.wait, left_out)
    for round_index in range(len(records), settings.rounds):
        started = time.perf_counter()
        _wait_for_nodes(grid, settings.min_clients, settings.wait, left_out | waiting | claims.keys())
        current = set(grid.get_node_ids())
        waiting &= current
        claims = {node: client for node, client in claims.items() if node in current and node not in left_out}
        listed = current - left_out - waiting - claims.keys()
        # A node claiming the id of a node still listed is asked again only once that node is gone (so a node that
        # can never have its id costs no exchange per round).
        held_now = {client for node, client in registered.items() if node in listed}
        retry = {node for node, client in claims.items() if client not in held_now}
        new = sorted((listed - registered.keys() - set(transport.decryptors)) | waiting | retry)
        fixed_population = job is not None and job.federation.pipeline.privacy.samples_population
        if new and settings.client_ids == "registered":
            held: dict[int, int] = {}
            registered.update(transport.register(new, known={n: c for n, c in registered.items() if n in listed},
                                                 key_holder_key=key_holder_key, held=held))
            # A node claiming the id of a node still listed waits for it: a restarted SuperNode, listed before its
            # old node id lapses, takes its id back once the old node has failed a round.
            for node in retry | registered.keys():
                claims.pop(node, None)
            claims.update(held)
            left_out.update(set(new) - registered.keys() - set(transport.decryptors) - held.keys())
            if fixed_population:
                _cap_population(registered, new, settings.nodes, left_out)
        elif new and fixed_population:
            # Cohorts are drawn from a population of exactly `nodes` clients: a newly listed node (a restarted
            # SuperNode under its new node id) takes the id of a client whose node is gone; one beyond the
            # population, with no such id free, waits for one rather than growing the population.
            present = {client for node, client in registered.items() if node in listed}
            free = [client for client in range(settings.nodes) if client not in present]
            for node in new:
                if free:
                    client = free.pop(0)
                    registered = {n: c for n, c in registered.items() if c != client}
                    registered[node] = client
                    waiting.discard(node)
                    listed.add(node)
                elif node not in waiting:
                    LOGGER.warning("node %d is beyond the population of %d the privacy accounting assumes; it waits "
                                   "for the id of a client whose node has gone", node, settings.nodes)
                    waiting.add(node)
        elif new:
            first = max(registered.values(), default=-1) + 1
            registered.update({node: first + index for index, node in enumerate(new)})
        eligible = {client: node for node, client in registered.items()
                    if (registry is None or client in registry.verify_keys)
                    and (paillier is None or client in paillier.signing_keys)}
        nodes = {client: node for client, node in eligible.items() if node in listed}
        if job is not None:
            # The cohort, drawn as the DP level requires (Poisson from the OS under central DP, say). Where the
            # accounting amplifies by a fixed-size draw from the whole population (distributed DP), it is drawn
            # from every client the run has registered, whether or not its node still answers: a client whose node
            # vanished is drawn as any other and drops out at the round's first stage, as a dropout does.
            pool = eligible if job.federation.pipeline.privacy.samples_population else nodes
            try:
                drawn = job.federation.pipeline.sample(sorted(pool), settings.seed, round_index)
            except ConfigurationError as error:
                # Distributed DP's draw needs exactly its planned population registered (an honest node may still
                # be waiting to register): the round is skipped, the model untouched, and the next one tries again.
                history.append(_skipped(round_index, {}, str(error)) | {"seconds": time.perf_counter() - started})
                progress("round-end", **{k: history[-1][k] for k in ("round", "aborted", "survivors",
                                                                     "abort_reason")})
                continue
            nodes = {client: pool[client] for client in drawn}
        progress("round-start", round=round_index, clients=sorted(nodes))
        summary = _run_one(transport, settings, protocol, threat, job, nodes, round_index, progress, registry,
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
        if job is not None and settings.checkpoint:
            records.append(_record_of(summary))
            job.federation.save(settings.checkpoint, records)
        progress("round-end", **{k: summary[k] for k in ("round", "aborted", "survivors", "abort_reason")})
        if settings.out:
            atomic_write_text(Path(settings.out), json.dumps({"settings": asdict(settings), "rounds": history},
                                                             indent=2) + "\n")
    return history


def _cap_population(registered: dict[int, int], new: Sequence[int], population: int, left_out: set[int]) -> None:
    """Leave out each newly registered node whose client id would grow the population past ``population``.

    Distributed DP's cohorts are drawn from exactly the population its accounting assumes; a node stating an id
    of its own beyond it (an extra SuperNode joining mid-run) would make the draw impossible.
    """
    # Ids outside 0..population-1 are judged first: with nodes numbered as the population is, an extra node's id
    # is beyond it, and an honest node registered in the same batch keeps its place.
    for node in sorted(new, key=lambda n: (0 <= registered.get(n, -1) < population, n)):
        if node not in registered:
            continue
        others = {client for other, client in registered.items() if other != node}
        if registered[node] not in others and len(others) >= population:
            LOGGER.warning("node %d states client id %d beyond the population of %d the privacy accounting "
                           "assumes; left out", node, registered[node], population)
            del registered[node]
            left_out.add(node)


def _record_of(summary: Mapping[str, Any]) -> RoundRecord:
    """A round summary as the federation's checkpoint history records it."""
    return RoundRecord(summary["round"], summary["cohort"], len(summary["survivors"]), summary["aborted"],
                       summary["abort_reason"], summary["seconds"], summary.get("server_seconds", 0.0),
                       loss=summary.get("loss"), accuracy=summary.get("accuracy"), epsilon=summary.get("epsilon"))


def _skipped(round_index: int, nodes: Mapping[int, int], reason: str) -> dict[str, Any]:
    LOGGER.warning("round %d cannot run: %s", round_index, reason)
    return {"round": round_index, "cohort": len(nodes), "clients": sorted(nodes), "survivors": [], "aborted": True,
            "abort_reason": reason, "dropped": {}, "rejected": []}


def _run_one(transport: FlowerTransport, settings: JobSettings, protocol: ProtocolKind, threat: ThreatModel,
             job: Job | None, nodes: dict[int, int], round_index: int, progress: _Progress,
             registry: IdentityKeys | None = None, paillier: PaillierKeys | None = None,
             round_base: int = 0, listed_nodes: frozenset[int] = frozenset()) -> dict[str, Any]:
    if job is None:
        return _run_simulated(transport, settings, protocol, threat, nodes, round_index, progress, registry,
                              paillier, round_base, listed_nodes)
    federation = job.federation
    pipeline = federation.pipeline
    before = federation.global_vector()

    def apply(step: RoundStep, summary: dict[str, Any]) -> dict[str, Any]:
        # One outcome for every path: the pipeline's step (central DP's noise-only update included) and the ledger.
        if step.vector is not None:
            federation.set_global_vector(step.vector)
        if step.aborted:
            summary |= {"aborted": True, "abort_reason": step.release.reason}
        if step.vector is not None and job.evaluate is not None:
            summary["loss"], summary["accuracy"] = job.evaluate(federation.model)
        if pipeline.privacy.ledger is not None:
            summary["epsilon"] = pipeline.privacy.ledger.epsilon
        return summary

    def skipped(reason: str) -> dict[str, Any]:
        return apply(pipeline.fail(round_index, before, sorted(nodes), reason), _skipped(round_index, nodes, reason))

    cohort = len(nodes)
    if cohort < max(2, settings.min_clients):
        return skipped(f"{cohort} clients available, fewer than {max(2, settings.min_clients)}")
    privacy = pipeline.privacy
    level = privacy.level.value if privacy.level is not None else ""
    encoding = pipeline.encoding(cohort)
    minimum = pipeline.minimum_survivors(cohort)
    if minimum is None:
        return skipped("no number of noise shares keeps this round within the privacy budget")
    task: dict[str, Any] = {"task-job": settings.job, "task-seed": settings.seed,
                            "task-weights": before.astype("<f8").tobytes(),
                            "task-partitions": settings.partitions or settings.nodes, "dp-level": level}
    if isinstance(privacy, LocalDP) and privacy.config is not None:
        task |= {"dp-noise-multiplier": float(privacy.noise_multiplier),
                 "dp-max-grad-norm": float(privacy.config.max_grad_norm), "dp-delta": float(privacy.config.delta)}
    started = time.perf_counter()
    outcome = _protocol_round(transport, protocol, threat, nodes, round_index, encoding, task, registry, paillier,
                              round_base, listed_nodes, minimum)
    if isinstance(outcome, str):
        return skipped(outcome)
    report = outcome
    summary = _round_summary(report, round_index, cohort, time.perf_counter() - started)
    _mark_failed(summary, report, transport, paillier, listed_nodes)
    step: RoundStep | None = None
    try:
        if report.result is not None:
            _save_sum(settings, round_index, report)
            step = pipeline.finish(round_index, before, encoding, report.result.ring_sum, report.result.survivors)
        else:
            step = pipeline.fail(round_index, before, sorted(nodes), str(report.abort))
        if isinstance(privacy, LocalDP):
            # Every client that trained spent record-level privacy, whatever happened to the round.
            privacy.record_local(round_index, {c: r["epsilon"] for c, r in report.client_reports.items()
                                               if "epsilon" in r})
        apply(step, summary)
    finally:
        if settings.transcript:
            # Written once the round's accounting is done, whatever its outcome, with the noise actually released.
            noise = step.release.noise if step is not None else None
            write_transcript(settings.transcript, [list(transcript_lines(
                report, encoding=encoding, threat=threat, dp=privacy.transcript_record(noise)))],
                append=round_index > 0)
    if not summary["aborted"]:
        progress("round-result", round=round_index, survivors=summary["survivors"])
    return summary


def _protocol_round(transport: FlowerTransport, protocol: ProtocolKind, threat: ThreatModel, nodes: dict[int, int],
                    round_index: int, encoding: EncodingConfig | DistributedDPEncoding, task: dict[str, Any],
                    registry: IdentityKeys | None, paillier: PaillierKeys | None, round_base: int,
                    listed_nodes: frozenset[int], minimum: int) -> RoundReport | str:
    """Run one protocol round over ``nodes``; its report, or why it could not start."""
    decryptor = None
    if paillier is not None and not paillier.threshold_decryption:
        # The most recently registered key holder still listed and not left out (a restarted one comes last).
        live = [node for node in transport.decryptors if node in listed_nodes]
        if not live:
            return "no node registered as the Paillier key holder"
        decryptor = live[-1]
    try:
        config = RoundConfig.create(protocol=protocol, clients=sorted(nodes), encoding=encoding,
                                    round_id=round_base + round_index, threat=threat, identities=registry,
                                    min_threshold=minimum, paillier=paillier)
    except ConfigurationError as error:
        return f"no round configuration: {error}"
    return transport.run_round(config, nodes, encoding_record(encoding) | task, decryptor=decryptor,
                               name=f"round {round_index}")


def _mark_failed(summary: dict[str, Any], report: RoundReport, transport: FlowerTransport,
                 paillier: PaillierKeys | None, listed_nodes: frozenset[int]) -> None:
    # Nodes that vanished are left out of later rounds (run_server_job reads these two private keys).
    summary["_failed"] = sorted(c for c, e in report.client_errors.items() if getattr(e, "unreachable", False))
    if paillier is not None and not paillier.threshold_decryption and getattr(report.decryptor_error, "unreachable",
                                                                                False):
        live = [node for node in transport.decryptors if node in listed_nodes]
        if live:
            summary["_failed_decryptor"] = live[-1]


def _save_sum(settings: JobSettings, round_index: int, report: RoundReport) -> None:
    if settings.sums and report.result is not None:
        Path(settings.sums).mkdir(parents=True, exist_ok=True)
        np.save(Path(settings.sums) / f"round-{round_index}.npy", report.result.ring_sum)


def _run_simulated(transport: FlowerTransport, settings: JobSettings, protocol: ProtocolKind, threat: ThreatModel,
                   nodes: dict[int, int], round_index: int, progress: _Progress, registry: IdentityKeys | None,
                   paillier: PaillierKeys | None, round_base: int, listed_nodes: frozenset[int]) -> dict[str, Any]:
    """``fedsecure simulate``'s round over Flower: generated vectors, the sum checked against the plaintext one."""
    cohort = len(nodes)
    if cohort < max(2, settings.min_clients):
        return _skipped(round_index, nodes, f"{cohort} clients available, fewer than {max(2, settings.min_clients)}")
    encoding = EncodingConfig.fit_scale(dimension=settings.dimension, clients=cohort, clip=CLIP, ring_bits=32,
                                        clip_mode=ClipMode.PER_COORDINATE)
    started = time.perf_counter()
    outcome = _protocol_round(transport, protocol, threat, nodes, round_index, encoding,
                              {"task-job": "simulate", "task-seed": settings.seed}, registry, paillier, round_base,
                              listed_nodes, 0)
    if isinstance(outcome, str):
        return _skipped(round_index, nodes, outcome)
    report = outcome
    summary = _round_summary(report, round_index, cohort, time.perf_counter() - started)
    _mark_failed(summary, report, transport, paillier, listed_nodes)
    try:
        if report.result is not None:
            _save_sum(settings, round_index, report)
            summary |= _check_simulated(settings, encoding, report)
    finally:
        if settings.transcript:
            write_transcript(settings.transcript, [list(transcript_lines(report, encoding=encoding, threat=threat))],
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
