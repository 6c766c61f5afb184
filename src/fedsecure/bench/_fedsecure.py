"""Rounds of fedsecure's own protocols, timed end to end in one process, and the dropout plans shared with peers."""

from __future__ import annotations

import dataclasses
import time
import tracemalloc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..encoding import ClipMode, EncodingConfig, Quantizer
from ..protocols import PaillierDeployment, ProtocolKind, RoundConfig, ServerSession, Stage, ThreatModel
from ..runtime import DropoutSchedule, Simulator, client_data, client_stages, plaintext_ring_sum
from ._memory import ServerMemoryProbe

__all__ = ["DropPlan", "FedsecureRound", "drop_plans", "run_fedsecure_rounds", "stage_index", "vectors"]

# One drop plan per round: each dropping client maps to a position in [0, 1) along the protocol's client
# stages, so the same plan means "the same client drops at the same point" for protocols with different stages.
DropPlan = Mapping[int, float]
INPUT_STAGES = frozenset({Stage.MASKED_INPUT, Stage.CIPHERTEXT_INPUT, Stage.PLAINTEXT_INPUT})


def drop_plans(clients: int, fraction: float, rounds: int, *, seed: int, bernoulli: bool) -> list[dict[int, float]]:
    """Which clients drop in each round, and where: exactly ``round(fraction * clients)`` of them, or each
    independently with probability ``fraction`` (``bernoulli``), each from a uniformly chosen stage on.

    The plans come from a NumPy generator seeded with ``seed``: they are the
    simulated environment, not a secret, and the peers are given the same ones.
    """
    rng = np.random.default_rng([seed, 7])  # noqa: csprng-ok (simulated dropouts, not a secret)
    plans = []
    for _ in range(rounds):
        if bernoulli:
            dropped = np.flatnonzero(rng.random(clients) < fraction)
        else:
            dropped = rng.choice(clients, size=round(fraction * clients), replace=False)
        plans.append({int(c): float(rng.random()) for c in sorted(dropped)})
    return plans


def stage_index(position: float, stages: int) -> int:
    """The stage a drop-plan position falls in, for a protocol with ``stages`` client stages."""
    return min(int(position * stages), stages - 1)


def vectors(clients: int, dim: int, seed: int) -> list[np.ndarray]:
    """The simulated updates, uniform in [-1, 1]: the same for every implementation in a run."""
    return [client_data(seed, c, dim) for c in range(clients)]


@dataclass(frozen=True)
class FedsecureRound:
    """One fedsecure round: wall time (encoding included), outcome, bytes and, if traced, the server's peak memory."""

    seconds: float
    aborted: bool
    correct: bool
    survivors: int
    bytes_up: float
    bytes_down: float
    client_seconds: float
    server_seconds: float
    server_peak_bytes: int | None = None
    abort_reason: str | None = None


def run_fedsecure_rounds(
    protocol: ProtocolKind,
    data: Sequence[np.ndarray],
    plans: Sequence[DropPlan],
    *,
    threat: ThreatModel,
    paillier: PaillierDeployment | None = None,
    measure_memory: bool = False,
    first_round_id: int = 0,
) -> tuple[RoundConfig, list[FedsecureRound]]:
    """Run one round of ``protocol`` per drop plan over the clients' float updates ``data``.

    Each round's time covers quantising every update and the whole protocol:
    every client, the server and, for Paillier, the decryptor, with every message
    through the wire codec. A completed round is checked against the plaintext
    ring sum of its survivors. Rounds are numbered from ``first_round_id``: a
    Paillier deployment decrypts each round id at most once, so a caller reusing
    one must never repeat an id. With ``measure_memory`` one more round (not timed)
    traces the server session's own peak memory.
    """
    n, dim = len(data), int(data[0].size)
    encoding = EncodingConfig.fit_scale(dimension=dim, clients=n, clip=1.0, ring_bits=32,
                                        clip_mode=ClipMode.PER_COORDINATE)
    quantizer = Quantizer(encoding)
    stages = client_stages(protocol)
    # The stage in which a client's input reaches the server: a client silent from a later stage is in the sum.
    input_stage = next(i for i, stage in enumerate(stages) if stage in INPUT_STAGES)
    keys = paillier.keys if paillier is not None else None
    results: list[FedsecureRound] = []
    probes: list[ServerMemoryProbe] = []

    def wrap(server: ServerSession) -> ServerSession:
        probes.append(ServerMemoryProbe(server))
        return probes[-1]  # type: ignore[return-value]

    if not plans:
        raise ValueError("give at least one drop plan (one per round)")
    for round_id, plan in enumerate(list(plans) + ([plans[0]] if measure_memory else [])):
        traced = measure_memory and round_id == len(plans)
        config = RoundConfig.create(protocol=protocol, clients=range(n), encoding=encoding, threat=threat,
                                    round_id=first_round_id + round_id, paillier=keys)
        schedule = DropoutSchedule({c: stages[stage_index(p, len(stages))] for c, p in plan.items()})
        if traced:
            tracemalloc.start()
        started = time.perf_counter()
        updates = {c: quantizer.encode(data[c]) for c in range(n)}
        report = Simulator(config, updates, schedule=schedule, paillier=paillier,
                           wrap_server=wrap if traced else None).run()
        seconds = time.perf_counter() - started
        if traced:
            tracemalloc.stop()
            peak = probes[-1].peak
            results[0] = dataclasses.replace(results[0], server_peak_bytes=peak)
            continue
        result = report.result
        # Correct means: exactly the clients the drop plan left in reached the sum, and the sum is theirs.
        drop_at = {c: stage_index(position, len(stages)) for c, position in plan.items()}
        expected = [c for c in range(n) if drop_at.get(c, len(stages)) > input_stage]
        correct = result is not None and sorted(result.survivors) == expected and bool(
            np.array_equal(plaintext_ring_sum(updates, expected), result.ring_sum))
        completers = [c for c in range(n) if c not in plan]
        results.append(FedsecureRound(
            seconds=seconds, aborted=report.aborted, correct=correct,
            survivors=len(result.survivors) if result is not None else 0,
            bytes_up=float(np.mean([report.bytes_sent(c) for c in completers])) if completers else 0.0,
            bytes_down=float(np.mean([report.bytes_received(c) for c in completers])) if completers else 0.0,
            client_seconds=report.median_client_seconds, server_seconds=report.server_seconds,
            abort_reason=str(report.abort) if report.abort is not None else None))
    return config, results

