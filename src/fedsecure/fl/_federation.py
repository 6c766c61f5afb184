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

import copy
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .._errors import ConfigurationError, InvalidUpdateError
from ..encoding import ClipMode, EncodingConfig, Quantizer, VectorSpec
from ..protocols import PaillierDeployment, PaillierKeys, ProtocolKind, RoundConfig, ThreatModel
from ..runtime import DropoutSchedule, Simulator
from ._optimizers import ServerOptimizer

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


@dataclass
class RoundRecord:
    """What one round did. ``loss`` and ``accuracy`` come from the evaluation function, when given."""

    round: int
    cohort: int
    survivors: int
    aborted: bool
    abort_reason: str | None
    seconds: float
    aggregation_seconds: float
    clipped: int = 0
    loss: float | None = None
    accuracy: float | None = None


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
    """A client's private copy of the global model.

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
            return GradSampleModule(inner, strict=False, **settings)
        raise ConfigurationError(
            f"cannot copy an Opacus {type(model).__name__} as the global model: pass the unwrapped module "
            "and wrap it inside your train function",
            parameter="model",
        )
    return copy.deepcopy(model)


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

    def __post_init__(self) -> None:
        if not self.clients:
            raise ConfigurationError("a federation needs clients", parameter="clients")
        if not 0 < self.fraction <= 1:
            raise ConfigurationError("fraction must be in (0, 1]", parameter="fraction")
        # max_weight is public (it sizes the ring), so it is an operator's bound, never a client's count.
        largest = max(c.num_examples for c in self.clients)
        if largest > self.max_weight:
            raise ConfigurationError(f"a client has {largest} examples, above max_weight={self.max_weight}: "
                                     "raise `max_weight`", parameter="max_weight")
        state = _float_state(self.model)
        self._spec = VectorSpec.from_parameters(state)
        parameters = _parameter_names(self.model)
        self._parameter_mask = np.concatenate(
            [np.full(t.size, t.name in parameters) for t in self._spec.tensors]) if state else np.zeros(0, bool)
        if self.protocol.is_paillier and self.paillier is None:
            self.paillier = PaillierDeployment.create(self.protocol, [c.client_id for c in self.clients],
                                                      key_bits=self.key_bits, insecure=self.insecure_keys)
        # Refuse, now rather than every round, a cohort the protocol can never aggregate.
        cohort = self.sample_cohort(0)
        keys = self._paillier_keys
        if keys is not None and keys.threshold_decryption and len(cohort) < keys.decryption_threshold:
            raise ConfigurationError(
                f"each round samples {len(cohort)} clients, but decryption needs {keys.decryption_threshold} "
                "key-share holders: raise `fraction`", parameter="fraction")
        RoundConfig.create(protocol=self.protocol, clients=[c.client_id for c in cohort],
                           encoding=self._encoding(len(cohort)), threat=self.threat, paillier=self._paillier_keys)

    @property
    def _paillier_keys(self) -> PaillierKeys | None:
        return self.paillier.keys if self.paillier is not None and self.protocol.is_paillier else None

    def _encoding(self, cohort: int) -> EncodingConfig:
        return EncodingConfig.fit_scale(dimension=self._spec.size, clients=max(2, cohort), clip=self.clip,
                                        ring_bits=self.ring_bits, clip_mode=ClipMode.L2, max_weight=self.max_weight)

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
        """The clients of round ``round_index``: a ``fraction`` of them, reproducible from the seed."""
        rng = np.random.default_rng([self.seed, round_index, 1])  # noqa: csprng-ok (client sampling)
        size = max(1, round(self.fraction * len(self.clients)))
        chosen = sorted(rng.choice(len(self.clients), size=size, replace=False).tolist())
        return [self.clients[i] for i in chosen]

    def run_round(self, round_index: int) -> RoundRecord:
        """One federated round. The global model changes only if the round completes."""
        started = time.perf_counter()
        cohort = self.sample_cohort(round_index)
        before = self.global_vector()
        updates: dict[int, np.ndarray] = {}
        weights: dict[int, int] = {}
        for client in cohort:
            local = _local_copy(self.model)
            self.train(local, client.data)
            updates[client.client_id] = self._spec.flatten(_float_state(local)) - before
            weights[client.client_id] = client.num_examples

        aggregation_started = time.perf_counter()
        record = self._aggregate(round_index, cohort, updates, weights, before)
        record.aggregation_seconds = time.perf_counter() - aggregation_started
        record.seconds = time.perf_counter() - started
        return record

    def _aggregate(self, round_index: int, cohort: Sequence[FederatedClient], updates: dict[int, np.ndarray],
                   weights: dict[int, int], before: np.ndarray) -> RoundRecord:
        clipped = sum(1 for u in updates.values() if np.isfinite(u).all() and np.linalg.norm(u) > self.clip)

        def aborted(reason: str, survivors: int = 0) -> RoundRecord:
            LOGGER.warning("round %d aborted, global model unchanged: %s", round_index + 1, reason)
            return RoundRecord(round_index, len(cohort), survivors, True, reason, 0.0, 0.0, clipped)

        if clipped:
            LOGGER.info("round %d: %d client updates clipped to L2 norm %g", round_index + 1, clipped, self.clip)
        encoding = self._encoding(len(cohort))
        quantizer = Quantizer(encoding)
        encoded = {}
        for client_id, update in updates.items():
            try:
                encoded[client_id] = quantizer.encode(update, weight=weights[client_id])
            except InvalidUpdateError as error:
                # A client whose update is unusable (NaN, Inf) refuses the round; the others go on.
                LOGGER.warning("round %d: client %d refused: %s", round_index + 1, client_id, error)
        if not encoded:
            return aborted("every client refused")
        try:
            config = RoundConfig.create(protocol=self.protocol, clients=encoded, encoding=encoding,
                                        round_id=round_index, threat=self.threat, paillier=self._paillier_keys)
        except ConfigurationError as error:
            return aborted(str(error))
        rng = np.random.default_rng([self.seed, round_index, 2])  # noqa: csprng-ok (simulated dropouts)
        schedule = DropoutSchedule.random(config.clients, self.dropout, protocol=self.protocol, rng=rng)
        report = Simulator(config, encoded, schedule=schedule, paillier=self.paillier).run()
        if report.result is None:
            return aborted(str(report.abort))
        decoded = quantizer.decode_sum(report.result.ring_sum)
        if not decoded.total_weight:
            return aborted("the survivors' total weight is zero", len(report.result.survivors))
        mean = decoded.mean()
        # Float buffers (say, BatchNorm statistics) are averaged; only parameters go through the optimizer.
        after = before + mean
        mask = self._parameter_mask
        after[mask] = self.server_optimizer.step(before[mask], mean[mask])
        self.set_global_vector(after)
        return RoundRecord(round_index, len(cohort), len(report.result.survivors), False, None, 0.0, 0.0, clipped)

    # ---- checkpoints ----------------------------------------------------------------------------------
    def fingerprint(self) -> dict[str, Any]:
        """What a checkpoint must match to be resumed: protocol, cohort, seed and the model's layout."""
        return {"protocol": self.protocol.value, "clients": len(self.clients), "fraction": self.fraction,
                "seed": self.seed, "optimizer": self.server_optimizer.kind.value,
                "layout": [[t.name, list(t.shape)] for t in self._spec.tensors]}

    def save(self, directory: str, history: Sequence[RoundRecord]) -> None:
        """Write model, optimizer state and history as one file, replaced atomically.

        A crash leaves either the previous checkpoint or this one, never a mix.
        ``history.json`` beside it is a readable copy; resuming reads only ``checkpoint.npz``.
        """
        os.makedirs(directory, exist_ok=True)
        meta = {"version": 1, "fingerprint": self.fingerprint(), "rounds_done": len(history),
                "history": [asdict(r) for r in history]}
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
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(data["meta"].tobytes().decode())
            mismatched = [k for k, v in self.fingerprint().items() if meta["fingerprint"].get(k) != v]
            if mismatched:
                raise ConfigurationError(f"the checkpoint in {directory} was written for a different "
                                         f"{', '.join(mismatched)}", parameter="resume")
            self.set_global_vector(data["global"])
            self.server_optimizer.state = {name.split("/", 1)[1]: data[name] for name in data.files
                                           if name.startswith("optimizer/")}
        return [RoundRecord(**record) for record in meta["history"]]


def _atomic_savez(path: str, arrays: Mapping[str, np.ndarray]) -> None:
    temporary = path + ".tmp.npz"
    np.savez(temporary, **dict(arrays))  # type: ignore[arg-type]
    os.replace(temporary, path)
