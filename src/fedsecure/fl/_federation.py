"""Federate an existing PyTorch training loop with secure aggregation.

The user keeps their model and their local training function
``train(model, data) -> None``. For each round fedsecure samples a cohort, runs
the user's function on a copy of the global model per client, computes each
update (local minus global weights), clips and encodes it together with the
client's example count (so weights stay inside the protected vector), runs the
chosen protocol over the cohort, decodes the weighted mean update and applies
the server optimizer. A round that aborts leaves the global model untouched.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import json
import zipfile
import logging
import numbers
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .._errors import ConfigurationError, InvalidUpdateError
from ..dp import DistributedPlan, DPConfig, PrivacyLedger, PrivacyLevel
from ..dp._local import opacus_training_warnings_silenced
from ..encoding import VectorSpec
from ..pipeline import (
    CentralDP,
    DistributedDP,
    LocalDP,
    RoundRecord,
    RoundStep,
    ServerOptimizer,
    ServerPipeline,
    encode_update,
    round_privacy,
)
from ..protocols import PaillierDeployment, PaillierKeys, ProtocolKind, RoundConfig, ThreatModel
from ..runtime import DropoutSchedule, Simulator, transcript_lines, write_transcript

__all__ = ["FederatedClient", "RoundRecord", "Federation", "TrainFunction", "MODULE_PREFIX"]

LOGGER = logging.getLogger("fedsecure.fl")
MODULE_PREFIX = "_module."  # Opacus' GradSampleModule prefixes every state-dict key with it.
TrainFunction = Callable[[Any, Any], None]


@dataclass(frozen=True)
class FederatedClient:
    """One client: its id, the data handed to the training function, and its example count (its weight)."""

    client_id: int
    data: Any
    num_examples: int

    def __post_init__(self) -> None:
        if not isinstance(self.client_id, numbers.Integral) or isinstance(self.client_id, bool) or self.client_id < 0:
            raise ConfigurationError(f"client_id must be a non-negative integer, got {self.client_id!r}",
                                     parameter="client_id")
        if not isinstance(self.num_examples, numbers.Integral) or isinstance(self.num_examples, bool) \
                or self.num_examples < 0:
            raise ConfigurationError(f"num_examples of client {self.client_id} must be a non-negative integer, got "
                                     f"{self.num_examples!r}", parameter="num_examples")


def _strip_prefix(name: str) -> str:
    return name[len(MODULE_PREFIX):] if name.startswith(MODULE_PREFIX) else name


def _float_state(model: Any) -> dict[str, Any]:
    """The model's floating-point state (parameters and float buffers), keys without Opacus' prefix.

    A tensor that appears under two names (tied weights) is kept once, under its first name.
    """
    state: dict[str, Any] = {}
    seen: set[tuple[int, int]] = set()
    for name, tensor in model.state_dict().items():
        identity = (tensor.data_ptr(), tensor.numel())
        if tensor.is_floating_point() and identity not in seen:
            seen.add(identity)
            state[_strip_prefix(name)] = tensor
    return state


def _parameter_names(model: Any) -> set[str]:
    return {_strip_prefix(name) for name, _ in model.named_parameters()}


def _local_copy(model: Any) -> Any:
    """A client's private copy of the global model, in training mode (an evaluation may have left the global
    model in eval mode, which Opacus refuses and which would freeze dropout and batch-norm statistics).

    An Opacus ``GradSampleModule`` cannot be deep-copied with its per-sample
    hooks attached, so its hooks are lifted while the wrapped module is copied,
    put back, and the copy is wrapped afresh with the same settings.
    """
    if type(model).__module__.startswith("opacus"):
        from opacus import GradSampleModule

        if isinstance(model, GradSampleModule):
            settings = dict(batch_first=model.batch_first, loss_reduction=model.loss_reduction,
                            force_functorch=model.force_functorch)
            model.remove_hooks()
            try:
                inner = copy.deepcopy(model._module)
            finally:
                model.add_hooks(**settings)
            return GradSampleModule(inner.train(), strict=False, **settings)
        raise ConfigurationError(
            f"cannot copy an Opacus {type(model).__name__} as the global model: pass the unwrapped module "
            "and wrap it inside your train function",
            parameter="model",
        )
    local = copy.deepcopy(model)
    if callable(getattr(local, "train", None)):
        local.train()
    return local


def _write_into(model: Any, values: Mapping[str, Any]) -> None:
    """Copy ``values`` into the model's tensors in place, whether or not its keys carry Opacus' prefix."""
    import torch

    targets = {_strip_prefix(name): tensor for name, tensor in model.state_dict().items()}
    with torch.no_grad():
        for name, value in values.items():
            targets[name].copy_(value)


@dataclass
class Federation:
    """Federated training of ``model`` with the user's ``train`` function over ``clients``.

    Keyword-only. ``protocol`` is any :class:`ProtocolKind`; ``clip`` bounds the
    L2 norm of each client's update; ``fraction`` of the clients is sampled each
    round, reproducibly from ``seed``; ``dropout`` is the fraction of the
    sampled cohort that the simulated transport makes vanish at a random stage.
    ``seed`` never touches key material. Paillier protocols use ``paillier`` (a
    :class:`PaillierDeployment` over the clients' ids) or, if it is None, set
    one up once with ``key_bits``-bit keys (below 2048 only with ``insecure_keys``);
    it serves every round.
    """

    model: Any
    train: TrainFunction
    clients: Sequence[FederatedClient]
    protocol: ProtocolKind = ProtocolKind.SECAGG_PLUS
    server_optimizer: ServerOptimizer = field(default_factory=ServerOptimizer)
    clip: float = 10.0
    fraction: float = 1.0
    dropout: float = 0.0
    seed: int = 0
    threat: ThreatModel | None = None
    ring_bits: int = 32
    max_weight: int = 4096
    paillier: PaillierDeployment | None = None
    key_bits: int = 2048
    insecure_keys: bool = False
    dp: DPConfig | None = None
    #: Append every round's audit transcript (JSON lines, public fields, the DP record) to this file.
    transcript: str | None = None

    def __post_init__(self) -> None:
        if not self.clients:
            raise ConfigurationError("a federation needs clients", parameter="clients")
        ids = [c.client_id for c in self.clients]
        if len(set(ids)) != len(ids):
            repeated = sorted({i for i in ids if ids.count(i) > 1})
            raise ConfigurationError(f"client ids must be distinct; repeated: {repeated[:10]}", parameter="clients")
        try:
            self.protocol = ProtocolKind(self.protocol)  # "secagg+" as well as ProtocolKind.SECAGG_PLUS
        except ValueError:
            raise ConfigurationError(f"protocol must be one of {', '.join(p.value for p in ProtocolKind)}, got "
                                     f"{self.protocol!r}", parameter="protocol") from None
        if not callable(getattr(self.model, "state_dict", None)):
            raise ConfigurationError(f"model must be a torch.nn.Module (a {type(self.model).__name__} has no "
                                     "state_dict)", parameter="model")
        if not 0 < self.fraction <= 1:
            raise ConfigurationError("fraction must be in (0, 1]", parameter="fraction")
        # max_weight is public (it sizes the ring), so it is an operator's bound, never a client's count.
        largest = max(c.num_examples for c in self.clients)
        if largest > self.max_weight:
            raise ConfigurationError(f"a client has {largest} examples, above max_weight={self.max_weight}: "
                                     "raise `max_weight`", parameter="max_weight")
        self._spec = VectorSpec.from_parameters(_float_state(self.model))
        if self.dp is not None and self.dp.level is PrivacyLevel.LOCAL \
                and "privatize" not in inspect.signature(self.train).parameters:
            raise ConfigurationError("local DP needs train(model, data, privatize): pass the model, optimizer "
                                     "and data loader through privatize, as with Opacus' make_private",
                                     parameter="train")
        if self.protocol.is_paillier and self.paillier is None:
            self.paillier = PaillierDeployment.create(self.protocol, [c.client_id for c in self.clients],
                                                      key_bits=self.key_bits, insecure=self.insecure_keys,
                                                      threat=self.threat)
        privacy = round_privacy(self.dp, protocol=self.protocol, dimension=self._spec.size, clip=self.clip,
                                ring_bits=self.ring_bits, max_weight=self.max_weight, population=len(self.clients),
                                fraction=self.fraction, dropout=self.dropout,
                                min_examples=min(c.num_examples for c in self.clients))
        #: The aggregation pipeline's server side: DP level, server optimizer, what a round releases.
        self.pipeline = ServerPipeline(self._spec, privacy, self.server_optimizer,
                                       parameters=_parameter_names(self.model))
        self._pending_transcript: tuple[Any, Any, float | None] | None = None
        self._warned_clipping = False
        # Refuse, now rather than every round, a cohort the protocol can never aggregate. (Under user-level DP
        # cohorts are drawn from the OS: the check uses the expected cohort size.)
        cohort = (list(self.clients)[: max(1, round(self.fraction * len(self.clients)))]
                  if privacy.level in (PrivacyLevel.CENTRAL, PrivacyLevel.DISTRIBUTED) else self.sample_cohort(0))
        keys = self._paillier_keys
        if keys is not None and keys.threshold_decryption and len(cohort) < keys.decryption_threshold:
            raise ConfigurationError(
                f"each round samples {len(cohort)} clients, but decryption needs {keys.decryption_threshold} "
                "key-share holders: raise `fraction`", parameter="fraction")
        RoundConfig.create(protocol=self.protocol, clients=[c.client_id for c in cohort],
                           encoding=self.pipeline.encoding(max(2, len(cohort))), threat=self.threat,
                           paillier=self._paillier_keys)

    @property
    def ledger(self) -> PrivacyLedger | None:
        """The privacy ledger (None without DP)."""
        return self.pipeline.privacy.ledger

    @property
    def distributed_plan(self) -> DistributedPlan | None:
        """Distributed DP's plan, calibrated once for the run (None under other levels)."""
        privacy = self.pipeline.privacy
        return privacy.plan if isinstance(privacy, DistributedDP) else None

    @property
    def central_noise_multiplier(self) -> float:
        """Central DP's noise multiplier, calibrated once for the run (0 under other levels)."""
        privacy = self.pipeline.privacy
        return privacy.noise_multiplier if isinstance(privacy, CentralDP) else 0.0

    @property
    def _paillier_keys(self) -> PaillierKeys | None:
        return self.paillier.keys if self.paillier is not None and self.protocol.is_paillier else None

    @property
    def spec(self) -> VectorSpec:
        return self._spec

    def global_vector(self) -> np.ndarray:
        """The global model's floating-point state as one float64 vector."""
        return self._spec.flatten(_float_state(self.model))

    def set_global_vector(self, vector: np.ndarray) -> None:
        """Write a flat vector back into the global model (in place)."""
        _write_into(self.model, self._spec.unflatten(vector))  # type: ignore[arg-type]

    def sample_cohort(self, round_index: int) -> list[FederatedClient]:
        """The clients of round ``round_index``: a ``fraction`` of them.

        Under central DP each client joins independently with probability
        ``fraction`` (Poisson sampling, which the amplification-by-sampling
        analysis assumes), so a cohort may even be empty; under distributed DP
        exactly ``round(fraction * clients)``, uniformly without replacement (which
        its amplification analysis assumes). Both draw from the OS, so those
        cohorts are not reproducible from the seed. Otherwise exactly
        ``round(fraction * clients)`` are drawn from the seed.
        """
        return self.pipeline.sample(list(self.clients), self.seed, round_index)

    def run_round(self, round_index: int) -> RoundRecord:
        """One federated round. The global model changes only if the round completes (or, under central DP,
        by the noise-only update a round without an aggregate releases)."""
        started = time.perf_counter()
        cohort = self.sample_cohort(round_index)
        before = self.global_vector()
        privacy = self.pipeline.privacy
        local = privacy if isinstance(privacy, LocalDP) else None
        updates: dict[int, np.ndarray] = {}
        # Under local DP, Opacus' per-client warnings are not news (see `opacus_training_warnings_silenced`): they
        # are silenced around the whole cohort's training, and nothing else is.
        with opacus_training_warnings_silenced() if local is not None else contextlib.nullcontext():
            for client in cohort:
                copy_of_global = _local_copy(self.model)
                if local is not None:
                    self.train(copy_of_global, client.data, privatize=local.local.privatizer(client.client_id))  # type: ignore[call-arg]
                else:
                    self.train(copy_of_global, client.data)
                updates[client.client_id] = self._spec.flatten(_float_state(copy_of_global)) - before

        aggregation_started = time.perf_counter()
        self._pending_transcript = None
        record = self._aggregate(round_index, cohort, updates, before)
        if local is not None:
            # Local DP: every client that trained spent record-level privacy, whatever happened to the round.
            record.epsilon = local.record_local(round_index, local.epsilons(c.client_id for c in cohort))
        if self._pending_transcript is not None:
            report, encoding, noise = self._pending_transcript
            self._write_transcript(report, encoding, noise, record.epsilon)
        record.aggregation_seconds = time.perf_counter() - aggregation_started
        record.seconds = time.perf_counter() - started
        return record

    def _aggregate(self, round_index: int, cohort: Sequence[FederatedClient], updates: dict[int, np.ndarray],
                   before: np.ndarray) -> RoundRecord:
        pipeline = self.pipeline
        weights = {c.client_id: c.num_examples for c in cohort}
        # How many updates were clipped depends on the data: under user-level DP it is never recorded.
        clipped = sum(1 for u in updates.values() if np.isfinite(u).all() and np.linalg.norm(u) > self.clip) \
            if pipeline.privacy.counts_clipping() else 0

        released: list[float | None] = [None]  # the noise multiplier the round released, for its transcript

        def outcome(step: RoundStep, survivors: int = 0) -> RoundRecord:
            release = step.release
            released[0] = release.noise
            if step.vector is not None:
                self.set_global_vector(step.vector)
            if release.aborted and step.vector is not None:
                LOGGER.warning("round %d: no aggregate (%s); a noise-only update is released", round_index + 1,
                               release.reason)
            elif release.aborted:
                LOGGER.warning("round %d aborted, global model unchanged: %s", round_index + 1, release.reason)
            return RoundRecord(round_index, len(cohort), survivors, release.aborted, release.reason, 0.0, 0.0,
                               clipped, epsilon=release.epsilon)

        def failed(reason: str) -> RoundRecord:
            return outcome(pipeline.fail(round_index, before, [c.client_id for c in cohort], reason))

        if not cohort:
            return failed("no client was sampled")
        if clipped * 2 > len(cohort) and not self._warned_clipping:
            # Once per run: under user-level DP clipping most updates is what the clip is for.
            self._warned_clipping = True
            LOGGER.warning("round %d: %d of %d client updates clipped to L2 norm %g: most updates are scaled down "
                           "(raise `clip` if that is not what you meant; said once per run)", round_index + 1,
                           clipped, len(cohort), self.clip)
        elif clipped:
            LOGGER.info("round %d: %d client updates clipped to L2 norm %g", round_index + 1, clipped, self.clip)
        encoding = pipeline.encoding(len(cohort))
        encoded = {}
        for client_id, update in updates.items():
            try:
                encoded[client_id] = encode_update(encoding, update, weights[client_id], client=client_id)
            except InvalidUpdateError as error:
                # A client whose update is unusable (NaN, Inf) refuses the round; the others go on.
                LOGGER.warning("round %d: client %d refused: %s", round_index + 1, client_id, error)
        if not encoded:
            return failed("every client refused")
        minimum = pipeline.minimum_survivors(len(encoded))
        if minimum is None:
            return failed("no number of noise shares keeps this round within the privacy budget")
        try:
            config = RoundConfig.create(protocol=self.protocol, clients=encoded, encoding=encoding,
                                        round_id=round_index, threat=self.threat, paillier=self._paillier_keys,
                                        min_threshold=minimum)
        except ConfigurationError as error:
            return failed(str(error))
        rng = np.random.default_rng([self.seed, round_index, 2])  # noqa: csprng-ok (simulated dropouts)
        schedule = DropoutSchedule.random(config.clients, self.dropout, protocol=self.protocol, rng=rng)
        report = Simulator(config, encoded, schedule=schedule, paillier=self.paillier,
                           record_fields=self.transcript is not None, warn_clipping=False).run()
        if report.result is None:
            record = failed(str(report.abort))
        else:
            record = outcome(pipeline.finish(round_index, before, encoding, report.result.ring_sum,
                                             report.result.survivors), len(report.result.survivors))
        # The round's transcript is written once its privacy accounting is done (run_round), whatever its outcome.
        self._pending_transcript = (report, encoding, released[0])
        return record

    def _write_transcript(self, report: Any, encoding: Any, noise: float | None, epsilon: float | None) -> None:
        # The round's transcript for auditors, with what the DP layer did: the noise added and the epsilon counted.
        if self.transcript is None:
            return
        write_transcript(self.transcript, [transcript_lines(
            report, encoding=encoding, threat=self.threat or ThreatModel(),
            dp=self.pipeline.privacy.transcript_record(noise, epsilon))], append=True)

    # ---- checkpoints ----------------------------------------------------------------------------------
    def fingerprint(self) -> dict[str, Any]:
        """What a checkpoint must match to be resumed: protocol, cohort, seed, the model's layout and the DP level."""
        return {"protocol": self.protocol.value, "clients": len(self.clients), "fraction": self.fraction,
                "seed": self.seed, "optimizer": self.server_optimizer.kind.value,
                "layout": [[t.name, list(t.shape)] for t in self._spec.tensors],
                "privacy": self.pipeline.privacy.fingerprint()}

    def save(self, directory: str, history: Sequence[RoundRecord]) -> None:
        """Write model, optimizer state and history as one file, replaced atomically.

        A crash leaves either the previous checkpoint or this one, never a mix.
        ``history.json`` beside it is a readable copy; resuming reads only ``checkpoint.npz``.
        """
        os.makedirs(directory, exist_ok=True)
        meta: dict[str, Any] = {"version": 1, "fingerprint": self.fingerprint(), "rounds_done": len(history),
                                "history": [asdict(r) for r in history]}
        privacy = self.pipeline.privacy
        if privacy.ledger is not None:
            meta["privacy"] = privacy.ledger.to_json()
        if isinstance(privacy, LocalDP):
            meta["local_accountants"] = privacy.state()
        text = json.dumps(meta, indent=1)
        arrays = {"global": self.global_vector(), "meta": np.frombuffer(text.encode(), dtype=np.uint8)}
        arrays.update({f"optimizer/{k}": v for k, v in self.server_optimizer.state.items()})
        _atomic_savez(os.path.join(directory, "checkpoint.npz"), arrays)
        temporary = os.path.join(directory, "history.json.tmp")
        with open(temporary, "w") as handle:
            handle.write(text)
        os.replace(temporary, os.path.join(directory, "history.json"))

    def restore(self, directory: str) -> list[RoundRecord]:
        """Load what :meth:`save` wrote and return the history so far.

        Refuses a checkpoint written for another model, protocol, cohort or seed.
        The model, optimizer state and history are restored; the random state of
        the user's data loaders is not, so a resumed run is not bit-identical to
        an uninterrupted one.
        """
        path = os.path.join(directory, "checkpoint.npz")
        if not os.path.exists(path):
            raise ConfigurationError(f"no checkpoint at {path}", parameter="resume")
        global_vector, optimizer_state, meta, history = read_checkpoint(path)
        mismatched = [k for k, v in self.fingerprint().items() if meta["fingerprint"].get(k) != v]
        if mismatched:
            raise ConfigurationError(f"the checkpoint in {directory} was written for a different "
                                     f"{', '.join(mismatched)}", parameter="resume")
        if global_vector.shape != self.global_vector().shape:
            raise ConfigurationError(f"the checkpoint in {directory} holds a model of another size", parameter="resume")
        size = self.pipeline.optimized_size
        if not set(optimizer_state) <= {"velocity", "m", "v"} or any(
                state.dtype.kind != "f" or state.shape != (size,) or not np.all(np.isfinite(state))
                for state in optimizer_state.values()):
            raise ConfigurationError(f"the checkpoint in {directory} holds a server optimizer state of another "
                                     "shape or kind", parameter="resume")
        previous = self.global_vector()
        self.set_global_vector(global_vector)
        try:
            self.pipeline.privacy.restore(meta)
        except (KeyError, TypeError, ValueError, AttributeError, ArithmeticError) as error:
            # The model stays as it was: a checkpoint is restored whole or not at all.
            self.set_global_vector(previous)
            raise ConfigurationError(f"the checkpoint in {directory} has a malformed privacy record "
                                     f"({type(error).__name__})", parameter="resume") from None
        self.server_optimizer.state = optimizer_state
        return history


def read_checkpoint(path: str) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, Any], list[RoundRecord]]:
    """Parse a checkpoint file: the global vector, the optimizer state, the metadata and the history.

    No pickle is ever loaded. A file that is not a fedsecure checkpoint, or a corrupt one, raises
    :class:`ConfigurationError` (``resume``) naming what is wrong, never another exception.
    """
    def corrupt(why: str) -> ConfigurationError:
        return ConfigurationError(f"{path} is not a readable fedsecure checkpoint: {why}", parameter="resume")

    _check_npz_sizes(path, corrupt)
    try:
        with np.load(path, allow_pickle=False) as data:
            files = set(data.files)
            if not {"global", "meta"} <= files:
                raise corrupt("it lacks the model or the metadata")
            meta = json.loads(data["meta"].tobytes().decode())
            global_vector = np.asarray(data["global"])
            optimizer = {name.split("/", 1)[1]: np.asarray(data[name]) for name in files
                         if name.startswith("optimizer/")}
    except ConfigurationError:
        raise
    except Exception as error:  # noqa: BLE001 - zipfile and numpy raise a dozen kinds on a corrupt file
        raise corrupt(f"{type(error).__name__}") from None
    if not isinstance(meta, dict) or meta.get("version") != 1 or not isinstance(meta.get("fingerprint"), dict) \
            or not isinstance(meta.get("history"), list):
        raise corrupt("its metadata is not a version-1 object with a fingerprint and a history")
    if global_vector.ndim != 1 or global_vector.dtype.kind != "f" or not np.all(np.isfinite(global_vector)):
        raise corrupt("its model is not a finite float vector")
    if any(array.dtype.kind not in "fiu" for array in optimizer.values()):
        raise corrupt("its optimizer state is not numeric")
    try:
        history = [RoundRecord(**record) for record in meta["history"]]
    except TypeError:
        raise corrupt("its history has unknown or missing fields") from None
    return global_vector, optimizer, meta, history


#: The largest checkpoint member read: a model of 2^31 bytes of parameters.
MAX_CHECKPOINT_MEMBER_BYTES = 1 << 31


def _check_npz_sizes(path: str, corrupt: Callable[[str], ConfigurationError]) -> None:
    """Before numpy allocates anything: each member's declared array must fit the bytes the member holds."""
    from numpy.lib import format as npy

    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.file_size > MAX_CHECKPOINT_MEMBER_BYTES:
                    raise corrupt(f"member {info.filename} holds {info.file_size} bytes")
                with archive.open(info) as member:
                    version = npy.read_magic(member)
                    shape, _, dtype = (npy.read_array_header_1_0(member) if version == (1, 0)
                                       else npy.read_array_header_2_0(member))
                    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
                    if declared > info.file_size:
                        raise corrupt(f"member {info.filename} declares {declared} bytes but holds {info.file_size}")
    except ConfigurationError:
        raise
    except Exception as error:  # noqa: BLE001
        # zipfile (BadZipFile, RuntimeError for an encrypted member, zlib.error, ...) and numpy's header parser
        # (Python's tokenizer and literal_eval) raise many kinds on a corrupt file: every one means corrupt.
        raise corrupt(type(error).__name__) from None


def _atomic_savez(path: str, arrays: Mapping[str, np.ndarray]) -> None:
    temporary = path + ".tmp.npz"
    np.savez(temporary, **dict(arrays))  # type: ignore[arg-type]
    os.replace(temporary, path)
