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
import inspect
import json
import zipfile
import logging
import math
import os
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .._errors import ConfigurationError, InvalidUpdateError
from ..dp import (
    DistributedPlan,
    DPConfig,
    LocalPrivacy,
    PrivacyLedger,
    PrivacyLevel,
    calibrate,
    gaussian,
    gaussian_epsilon,
    plan_distributed,
)
from ..encoding import ClipMode, EncodingConfig, Quantizer, VectorSpec
from ..protocols import PaillierDeployment, PaillierKeys, ProtocolKind, RoundConfig, ThreatModel
from ..runtime import DropoutSchedule, Simulator, transcript_lines, write_transcript
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
    epsilon: float | None = None


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
    dp: DPConfig | None = None
    #: Append every round's audit transcript (JSON lines, public fields, the DP record) to this file.
    transcript: str | None = None

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
                                                      key_bits=self.key_bits, insecure=self.insecure_keys,
                                                      threat=self.threat)
        # Refuse, now rather than every round, a cohort the protocol can never aggregate.
        if self.dp is not None and self.dp.level is not PrivacyLevel.LOCAL:
            # User-level DP draws cohorts from the OS; check the protocol against the expected cohort size instead.
            cohort = list(self.clients)[: max(1, round(self.fraction * len(self.clients)))]
        else:
            cohort = self.sample_cohort(0)
        keys = self._paillier_keys
        if keys is not None and keys.threshold_decryption and len(cohort) < keys.decryption_threshold:
            raise ConfigurationError(
                f"each round samples {len(cohort)} clients, but decryption needs {keys.decryption_threshold} "
                "key-share holders: raise `fraction`", parameter="fraction")
        RoundConfig.create(protocol=self.protocol, clients=[c.client_id for c in cohort],
                           encoding=self._encoding(max(2, len(cohort))), threat=self.threat,
                           paillier=self._paillier_keys)
        self._setup_privacy()

    # ---- differential privacy ---------------------------------------------------------------------
    def _setup_privacy(self) -> None:
        self._ledger: PrivacyLedger | None = None
        self._local_privacy: LocalPrivacy | None = None
        self._pending_transcript: tuple[Any, Any, float | None] | None = None
        self._plan: DistributedPlan | None = None
        self._central_noise = 0.0
        dp = self.dp
        if dp is None:
            return
        population = len(self.clients)
        q = self.fraction
        if dp.level is PrivacyLevel.LOCAL:
            dp.check_population(min(c.num_examples for c in self.clients))
            if dp.noise_multiplier is None:
                raise ConfigurationError("local DP takes a noise_multiplier (fedsecure.dp.local_noise_multiplier "
                                         "calibrates one for a target epsilon)", parameter="noise_multiplier")
            if "privatize" not in inspect.signature(self.train).parameters:
                raise ConfigurationError("local DP needs train(model, data, privatize): pass the model, optimizer "
                                         "and data loader through privatize, as with Opacus' make_private",
                                         parameter="train")
            self._local_privacy = LocalPrivacy(noise_multiplier=dp.noise_multiplier, max_grad_norm=dp.max_grad_norm,
                                               accountant=dp.accountant)
            self._ledger = PrivacyLedger(dp, sample_rate=q)
            return
        dp.check_population(population)
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise ConfigurationError("user-level DP needs every update clipped: set a finite `clip`", parameter="clip")
        if dp.level is PrivacyLevel.CENTRAL:
            if dp.noise_multiplier is not None:
                self._central_noise = dp.noise_multiplier
            else:
                rounds, target = dp.rounds or 1, dp.target_epsilon or 0.0
                self._central_noise = calibrate(
                    lambda z: gaussian_epsilon(z, q, rounds, dp.delta, dp.accountant), target, high=1e3).noise
            self._ledger = PrivacyLedger(dp, sample_rate=q)
            return
        if self.protocol not in (ProtocolKind.SECAGG, ProtocolKind.SECAGG_PLUS):
            raise ConfigurationError("distributed DP adds noise in the SecAgg ring: use secagg or secagg+",
                                     parameter="protocol")
        if dp.refuse_over_budget and self.protocol is not ProtocolKind.SECAGG:
            raise ConfigurationError("refuse_over_budget raises the unmasking threshold, which only the complete "
                                     "graph of secagg turns into a count of all survivors", parameter="protocol")
        cohort = max(1, round(q * population))
        expected = max(1, round(cohort * (1 - self.dropout)))
        mechanism = dp.mechanism
        if mechanism is None:  # pragma: no cover - DPConfig always sets it
            raise RuntimeError("unreachable")

        def plan_for(z: float) -> DistributedPlan:
            return plan_distributed(mechanism=mechanism, dimension=self._spec.size, clip=self.clip, bits=dp.bits,
                                    expected_clients=expected, max_clients=population, noise_multiplier=z,
                                    beta=dp.beta, wrap_probability=dp.wrap_probability)

        if dp.noise_multiplier is not None:
            self._plan = plan_for(dp.noise_multiplier)
        else:
            rounds, target = dp.rounds or 1, dp.target_epsilon or 0.0
            z = calibrate(lambda z: plan_for(z).epsilon(survivors=expected, rounds=rounds, delta=dp.delta),
                          target, low=0.05, high=50.0).noise
            self._plan = plan_for(z)
        # Fixed-size cohorts: the accounting claims no amplification by sampling.
        self._ledger = PrivacyLedger(dp, sample_rate=1.0, plan=self._plan)

    @property
    def ledger(self) -> PrivacyLedger | None:
        """The privacy ledger (None without DP)."""
        return self._ledger

    @property
    def distributed_plan(self) -> DistributedPlan | None:
        return self._plan

    @property
    def central_noise_multiplier(self) -> float:
        return self._central_noise

    @property
    def _weighted(self) -> bool:
        # User-level DP needs a bounded per-client contribution: plain (unweighted) sums.
        return self.dp is None or self.dp.level is PrivacyLevel.LOCAL

    @property
    def _paillier_keys(self) -> PaillierKeys | None:
        return self.paillier.keys if self.paillier is not None and self.protocol.is_paillier else None

    def _encoding(self, cohort: int) -> EncodingConfig:
        if not self._weighted:
            # User-level DP: one scale for every round, whatever the cohort, so the sensitivity bound holds.
            cohort = len(self.clients)
        return EncodingConfig.fit_scale(dimension=self._spec.size, clients=max(2, cohort), clip=self.clip,
                                        ring_bits=self.ring_bits, clip_mode=ClipMode.L2,
                                        max_weight=self.max_weight if self._weighted else None)

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
        exactly ``round(fraction * clients)``. Both draw from the OS, so those
        cohorts are not reproducible from the seed. Otherwise exactly
        ``round(fraction * clients)`` are drawn from the seed.
        """
        size = max(1, round(self.fraction * len(self.clients)))
        if self.dp is not None and self.dp.level is not PrivacyLevel.LOCAL:
            # Under user-level DP the cohort must be unpredictable: drawn from the OS, not from the seed.
            draw = secrets.SystemRandom()
            if self.dp.level is PrivacyLevel.CENTRAL:
                return [c for c in self.clients if draw.random() < self.fraction]
            return sorted(draw.sample(list(self.clients), size), key=lambda c: c.client_id)
        rng = np.random.default_rng([self.seed, round_index, 1])  # noqa: csprng-ok (client sampling)
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
            if self._local_privacy is not None:
                self.train(local, client.data, privatize=self._local_privacy.privatizer(client.client_id))  # type: ignore[call-arg]
            else:
                self.train(local, client.data)
            updates[client.client_id] = self._spec.flatten(_float_state(local)) - before
            weights[client.client_id] = client.num_examples

        aggregation_started = time.perf_counter()
        self._pending_transcript = None
        record = self._aggregate(round_index, cohort, updates, weights, before)
        if self._ledger is not None and self._local_privacy is not None and self.dp is not None:
            # Local DP: every client that trained spent record-level privacy, whatever happened to the round.
            epsilons = {c.client_id: self._local_privacy.epsilon(c.client_id, self.dp.delta) for c in cohort}
            self._ledger.record_local(round_index, epsilons, epsilons, self._local_privacy.noise_multiplier)
            record.epsilon = self._ledger.epsilon
        if self._pending_transcript is not None:
            report, encoding, noise = self._pending_transcript
            self._write_transcript(report, encoding, noise, record.epsilon)
        record.aggregation_seconds = time.perf_counter() - aggregation_started
        record.seconds = time.perf_counter() - started
        return record

    def _minimum_survivors(self, cohort: int) -> int | None:
        """Under distributed DP with refuse_over_budget: the fewest noise shares that keep the budget (None: none do)."""
        dp, ledger, plan = self.dp, self._ledger, self._plan
        if dp is None or not dp.refuse_over_budget or ledger is None or plan is None or dp.target_epsilon is None:
            return 0
        def within(survivors: int) -> bool:
            return ledger.preview(plan.noise_multiplier_for(survivors), survivors) <= (dp.target_epsilon or 0.0)

        if not within(cohort):
            return None
        low, high = 0, cohort  # within(high) holds; epsilon only falls as survivors (noise shares) grow
        while high - low > 1:
            middle = (low + high) // 2
            if within(middle):
                high = middle
            else:
                low = middle
        return high

    def _aggregate(self, round_index: int, cohort: Sequence[FederatedClient], updates: dict[int, np.ndarray],
                   weights: dict[int, int], before: np.ndarray) -> RoundRecord:
        ledger, dp = self._ledger, self.dp
        user_level = ledger is not None and dp is not None and dp.level is not PrivacyLevel.LOCAL
        # How many updates were clipped depends on the data: under user-level DP it is never recorded.
        clipped = 0 if user_level else sum(
            1 for u in updates.values() if np.isfinite(u).all() and np.linalg.norm(u) > self.clip)
        central = user_level and self._plan is None

        def aborted(reason: str, survivors: int = 0, *, release_noise: bool = True) -> RoundRecord:
            if central and release_noise and ledger is not None:
                # Central DP with Poisson cohorts: a round that cannot aggregate (an empty or tiny cohort, or an
                # aborted protocol) still releases noise, so that whether anything is released never depends
                # on who was sampled; it is accounted as any other round.
                LOGGER.warning("round %d: no aggregate (%s); a noise-only update is released", round_index + 1,
                               reason)
                self._apply(before, self._central_noise_only(len(before)))
                entry = ledger.record(round_index, [], contributors=0, noise_multiplier=self._central_noise)
                return RoundRecord(round_index, len(cohort), 0, True, reason, 0.0, 0.0, clipped, epsilon=entry.epsilon)
            LOGGER.warning("round %d aborted, global model unchanged: %s", round_index + 1, reason)
            if user_level and ledger is not None:
                ledger.record_refused(round_index, [c.client_id for c in cohort])
            return RoundRecord(round_index, len(cohort), survivors, True, reason, 0.0, 0.0, clipped,
                               epsilon=ledger.epsilon if ledger is not None else None)

        if not cohort:
            return aborted("no client was sampled")
        if clipped:
            LOGGER.info("round %d: %d client updates clipped to L2 norm %g", round_index + 1, clipped, self.clip)
        distributed = self._plan.encoding(os.urandom(32)) if self._plan is not None else None
        encoding = self._encoding(len(cohort))
        quantizer = Quantizer(encoding)
        encoded = {}
        for client_id, update in updates.items():
            try:
                if distributed is not None:
                    encoded[client_id] = distributed.encode(update)
                else:
                    encoded[client_id] = quantizer.encode(update, weight=weights[client_id] if self._weighted else None)
            except InvalidUpdateError as error:
                if distributed is not None:
                    # Under distributed DP a client still adds its noise share: whether it can depends on its
                    # data, and the number of shares must not. Its update counts as zero.
                    LOGGER.warning("round %d: client %d sends a zero update: %s", round_index + 1, client_id, error)
                    encoded[client_id] = distributed.encode(np.zeros(self._spec.size))
                    continue
                # A client whose update is unusable (NaN, Inf) refuses the round; the others go on.
                LOGGER.warning("round %d: client %d refused: %s", round_index + 1, client_id, error)
        if not encoded:
            return aborted("every client refused")
        minimum = self._minimum_survivors(len(encoded))
        if minimum is None:
            return aborted("no number of noise shares keeps this round within the privacy budget")
        try:
            config = RoundConfig.create(protocol=self.protocol, clients=encoded,
                                        encoding=distributed if distributed is not None else encoding,
                                        round_id=round_index, threat=self.threat, paillier=self._paillier_keys,
                                        min_threshold=minimum)
        except ConfigurationError as error:
            return aborted(str(error))
        rng = np.random.default_rng([self.seed, round_index, 2])  # noqa: csprng-ok (simulated dropouts)
        schedule = DropoutSchedule.random(config.clients, self.dropout, protocol=self.protocol, rng=rng)
        report = Simulator(config, encoded, schedule=schedule, paillier=self.paillier,
                           record_fields=self.transcript is not None).run()
        round_encoding = distributed if distributed is not None else encoding
        # The round's transcript is written once its privacy accounting is done (run_round), whatever its outcome.
        self._pending_transcript = (report, round_encoding, self._central_noise if central else None)
        if report.result is None:
            return aborted(str(report.abort))
        survivors = len(report.result.survivors)
        expected = self._fixed_denominator()
        if distributed is not None and self._plan is not None:
            # The noise actually in the sum is that of the survivors' shares, not the planned amount.
            mean = distributed.decode_sum(report.result.ring_sum) / expected
            noise = self._plan.noise_multiplier_for(survivors)
            self._pending_transcript = (report, round_encoding, noise)
        elif user_level:
            total = quantizer.decode_sum(report.result.ring_sum).total
            sensitivity = self._central_sensitivity(total.size)
            noise = self._central_noise
            if dp is not None and dp.refuse_over_budget and ledger is not None and dp.target_epsilon is not None \
                    and ledger.preview(noise, survivors) > dp.target_epsilon:
                self._pending_transcript = (report, round_encoding, None)  # Refused: no noise was released.
                return aborted("this round would take epsilon above the budget", survivors, release_noise=False)
            mean = (total + noise * sensitivity * gaussian(total.size)) / expected
        else:
            decoded = quantizer.decode_sum(report.result.ring_sum)
            if not decoded.total_weight:
                return aborted("the survivors' total weight is zero", survivors)
            mean = decoded.mean()
        epsilon = None
        if user_level and ledger is not None:
            epsilon = ledger.record(round_index, report.result.survivors, contributors=survivors,
                                    noise_multiplier=noise).epsilon
        self._apply(before, mean)
        return RoundRecord(round_index, len(cohort), survivors, False, None, 0.0, 0.0, clipped, epsilon=epsilon)

    def _write_transcript(self, report: Any, encoding: Any, noise: float | None, epsilon: float | None) -> None:
        # The round's transcript for auditors, with what the DP layer did: the noise added and the epsilon counted.
        if self.transcript is None:
            return
        write_transcript(self.transcript, [transcript_lines(report, encoding=encoding, threat=self.threat or ThreatModel(),
                                                            dp=self.dp_transcript_record(noise, epsilon))],
                         append=True)

    def dp_transcript_record(self, noise: float | None, epsilon: float | None = None) -> dict[str, Any] | None:
        """A round's DP record for its transcript (``fedsecure audit``'s dp-accounted check): the level, the
        mechanism, the noise actually released and the ledger's epsilon after the round. None without DP."""
        dp = self.dp
        if dp is None or self._ledger is None:
            return None
        plan = self._plan
        mechanism = plan.mechanism.value if plan is not None else (
            "gaussian" if dp.level is not PrivacyLevel.LOCAL else "gaussian (DP-SGD, per client)")
        record: dict[str, Any] = {"level": dp.level.value, "mechanism": mechanism, "noise_multiplier": noise,
                                  "epsilon": epsilon if epsilon is not None else self._ledger.epsilon,
                                  "target_epsilon": dp.target_epsilon, "delta": dp.delta}
        if dp.level is PrivacyLevel.LOCAL:
            record["noise_multiplier"] = dp.noise_multiplier
        if plan is not None:
            record |= {"bits": plan.bits, "scale": plan.scale, "local_variance": plan.local_variance,
                       "wrap_bound": plan.wrap_bound, "wrap_probability": dp.wrap_probability}
        return record

    def encoding_for(self, cohort: int) -> EncodingConfig:
        """The encoding of a round over ``cohort`` clients (what a transport's clients quantise with)."""
        return self._encoding(cohort)

    def minimum_survivors(self, cohort: int) -> int | None:
        """Under distributed DP with ``refuse_over_budget``: the fewest noise shares a round of ``cohort`` clients
        needs to stay within the budget (None: no number does; 0: no constraint)."""
        return self._minimum_survivors(cohort)

    def fixed_denominator(self) -> float:
        """What user-level DP divides the noised sum by: the expected number of contributors, fixed and public."""
        return self._fixed_denominator()

    def central_noise(self, size: int) -> np.ndarray:
        """One draw of central DP's Gaussian noise for a sum of ``size`` values (OS randomness)."""
        noise: np.ndarray = self._central_noise * self._central_sensitivity(size) * gaussian(size)
        return noise

    def apply_mean_update(self, before: np.ndarray, mean: np.ndarray) -> None:
        """Move the global model from ``before`` by the mean update ``mean``, through the server optimizer."""
        self._apply(before, mean)

    def _apply(self, before: np.ndarray, mean: np.ndarray) -> None:
        # Float buffers (say, BatchNorm statistics) are averaged; only parameters go through the optimizer.
        after = before + mean
        mask = self._parameter_mask
        after[mask] = self.server_optimizer.step(before[mask], mean[mask])
        self.set_global_vector(after)

    def _fixed_denominator(self) -> float:
        # User-level DP divides by a fixed, public denominator (McMahan et al.'s fixed-denominator estimator):
        # the expected number of contributors, so the released model does not reveal how many there were.
        return max(1.0, self.fraction * len(self.clients) * (1 - self.dropout))

    def _central_sensitivity(self, size: int) -> float:
        # Stochastic rounding can lengthen a clipped update by up to sqrt(d) / scale (DDGauss, Theorem 1);
        # under user-level DP the scale is the same in every round.
        return self.clip + math.sqrt(size) / self._encoding(len(self.clients)).scale

    def _central_noise_only(self, size: int) -> np.ndarray:
        """What central DP releases when no aggregate exists: the noise alone, over the fixed denominator."""
        noise: np.ndarray = (self._central_noise * self._central_sensitivity(size) * gaussian(size)
                             / self._fixed_denominator())
        return noise

    # ---- checkpoints ----------------------------------------------------------------------------------
    def fingerprint(self) -> dict[str, Any]:
        """What a checkpoint must match to be resumed: protocol, cohort, seed and the model's layout."""
        dp = self.dp
        privacy = None if dp is None else {"level": dp.level.value, "delta": dp.delta,
                                           "mechanism": dp.mechanism.value if dp.mechanism else None,
                                           "noise_multiplier": dp.noise_multiplier,
                                           "target_epsilon": dp.target_epsilon, "rounds": dp.rounds, "bits": dp.bits,
                                           "beta": dp.beta, "wrap_probability": dp.wrap_probability,
                                           "max_grad_norm": dp.max_grad_norm, "clip": self.clip,
                                           "accountant": dp.accountant.value,
                                           "refuse_over_budget": dp.refuse_over_budget,
                                           "dropout": self.dropout,
                                           "local_variance": self._plan.local_variance if self._plan else None,
                                           "scale": self._plan.scale if self._plan else None}
        return {"protocol": self.protocol.value, "clients": len(self.clients), "fraction": self.fraction,
                "seed": self.seed, "optimizer": self.server_optimizer.kind.value,
                "layout": [[t.name, list(t.shape)] for t in self._spec.tensors], "privacy": privacy}

    def save(self, directory: str, history: Sequence[RoundRecord]) -> None:
        """Write model, optimizer state and history as one file, replaced atomically.

        A crash leaves either the previous checkpoint or this one, never a mix.
        ``history.json`` beside it is a readable copy; resuming reads only ``checkpoint.npz``.
        """
        os.makedirs(directory, exist_ok=True)
        meta: dict[str, Any] = {"version": 1, "fingerprint": self.fingerprint(), "rounds_done": len(history),
                                "history": [asdict(r) for r in history]}
        if self._ledger is not None:
            meta["privacy"] = self._ledger.to_json()
        if self._local_privacy is not None:
            meta["local_accountants"] = {str(c): h for c, h in self._local_privacy.state().items()}
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
        previous = self.global_vector()
        self.set_global_vector(global_vector)
        try:
            self._restore_privacy(meta)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            # The model stays as it was: a checkpoint is restored whole or not at all.
            self.set_global_vector(previous)
            raise ConfigurationError(f"the checkpoint in {directory} has a malformed privacy record "
                                     f"({type(error).__name__})", parameter="resume") from None
        self.server_optimizer.state = optimizer_state
        return history

    def _restore_privacy(self, meta: Mapping[str, Any]) -> None:
        # The ledger is rebuilt by replaying every recorded round, so the resumed run keeps composing.
        ledger = self._ledger
        if ledger is None:
            return
        if self._local_privacy is not None:
            self._local_privacy.load_state({int(c): h for c, h in meta.get("local_accountants", {}).items()})
        for entry in meta.get("privacy", {}).get("rounds", []):
            if entry["refused"]:
                ledger.record_refused(entry["round"], entry["participants"])
            elif self._local_privacy is not None and self.dp is not None:
                epsilons = {c: self._local_privacy.epsilon(c, self.dp.delta) for c in entry["participants"]}
                ledger.record_local(entry["round"], entry["participants"], epsilons, entry["noise_multiplier"])
            else:
                ledger.record(entry["round"], entry["participants"], contributors=entry["contributors"],
                              noise_multiplier=entry["noise_multiplier"])


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
