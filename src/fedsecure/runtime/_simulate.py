"""A complete simulated round on generated data, with a correctness check against the plaintext sum."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..encoding import ClipMode, EncodedUpdate, EncodingConfig, Quantizer
from ..crypto import MIN_SECURE_KEY_BITS
from ..protocols import PaillierDeployment, ProtocolKind, RoundConfig, ThreatModel, create_identities
from ._schedule import DropoutSchedule
from ._simulator import Progress, RoundReport, Simulator
from ._transcript import transcript_lines

__all__ = ["SimulationReport", "simulate", "client_data", "plaintext_ring_sum"]

CLIP = 1.0


def client_data(seed: int, client: int, dimension: int) -> np.ndarray:
    """The simulated update of one client: uniform in [-CLIP, CLIP], reproducible from (seed, client)."""
    rng = np.random.default_rng([seed, client])  # noqa: csprng-ok (simulated data, not a secret)
    return rng.uniform(-CLIP, CLIP, size=dimension)


def plaintext_ring_sum(updates: Mapping[int, EncodedUpdate], clients: Iterable[int]) -> np.ndarray:
    """The ring sum of ``clients``' encoded updates, computed in the clear: what a secure round must return."""
    first = next(iter(updates.values()))
    ring = first.ring
    total = np.zeros(first.values.size, dtype=ring.dtype)
    for client in clients:
        np.add(total, updates[client].values, out=total)
    return ring.reduce(total)


@dataclass
class SimulationReport:
    """A simulated round and how its result compares with the plaintext sum of the survivors."""

    round: RoundReport
    encoding: EncodingConfig
    correct: bool
    max_abs_error: float
    threat: ThreatModel | None = None

    def transcript(self) -> list[dict[str, Any]]:
        """The round's audit transcript lines (the round must be simulated with ``record_fields=True``)."""
        return list(transcript_lines(self.round, encoding=self.encoding, threat=self.threat))

    def to_json(self) -> dict[str, Any]:
        """The stable machine-readable summary printed by ``fedsecure simulate --json``."""
        report = self.round
        config = report.config
        survivors = sorted(report.result.survivors) if report.result is not None else []
        senders = survivors or [c for c in config.clients if report.bytes_sent(c)]
        up = float(np.mean([report.bytes_sent(c) for c in senders])) if senders else 0.0
        down = float(np.mean([report.bytes_received(c) for c in senders])) if senders else 0.0
        paillier = config.paillier
        extra: dict[str, Any] = {}
        if paillier is not None:
            extra = {"key_bits": paillier.keys.key_bits, "ciphertexts_per_client": paillier.ciphertexts,
                     "slots_per_ciphertext": paillier.layout.slots, "slot_bits": paillier.layout.slot_bits,
                     "decryptor_seconds": report.decryptor_seconds,
                     "decryption_threshold": paillier.keys.decryption_threshold or None,
                     "decryptor_error": str(report.decryptor_error) if report.decryptor_error else None}
        return extra | {
            "protocol": config.protocol.value,
            "clients": len(config.clients),
            "dim": self.encoding.dimension,
            "survivors": len(survivors),
            "clipped": report.clipped,
            "correct": self.correct,
            "max_abs_error": self.max_abs_error,
            "bytes_up_per_client": up,
            "bytes_down_per_client": down,
            "bytes_per_param": up / self.encoding.dimension,
            "client_seconds": report.median_client_seconds,
            "server_seconds": report.server_seconds,
            "aborted": report.aborted,
            "abort_reason": str(report.abort) if report.abort is not None else None,
            "threshold": config.threshold,
            "degree": config.degree,
            "ring_bits": config.ring_bits,
            "scale": self.encoding.scale,
            "dropped": len(report.result.dropped) if report.result is not None else None,
            "rejected_messages": len(report.rejected),
            "server_stage_seconds": report.server_stage_seconds,
            "client_stage_seconds_total": report.client_stage_seconds,
        }


def simulate(
    *,
    protocol: ProtocolKind = ProtocolKind.SECAGG_PLUS,
    clients: int = 100,
    dimension: int = 10_000,
    dropout: float = 0.1,
    seed: int = 0,
    threat: ThreatModel | None = None,
    ring_bits: int = 32,
    round_id: int = 0,
    schedule: DropoutSchedule | None = None,
    progress: Progress | None = None,
    paillier: PaillierDeployment | None = None,
    key_bits: int = MIN_SECURE_KEY_BITS,
    insecure_keys: bool = False,
    record_fields: bool = False,
    active: bool = False,
) -> SimulationReport:
    """Run one round over ``clients`` simulated clients with ``dimension``-long updates.

    ``dropout`` is the fraction of clients that go silent, each from a random
    stage, unless ``schedule`` is given. ``seed`` makes only the data and the
    dropout schedule reproducible; every key and mask comes from the OS.
    Paillier protocols use ``paillier`` if given, else set up a fresh deployment
    with ``key_bits``-bit keys (below 2048 only with ``insecure_keys``).
    ``record_fields`` keeps every message's public fields, for
    :meth:`SimulationReport.transcript`. ``active`` runs SecAgg's
    active-adversary variant, with fresh identity keys for the cohort.
    """
    if clients < 1:
        raise ValueError("clients must be at least 1")
    threat = threat or ThreatModel()
    encoding = EncodingConfig.fit_scale(dimension=dimension, clients=clients, clip=CLIP, ring_bits=ring_bits,
                                        clip_mode=ClipMode.PER_COORDINATE)
    quantizer = Quantizer(encoding)
    if protocol.is_paillier and paillier is None:
        if progress is not None:
            progress("paillier keygen", 0, 1)
        paillier = PaillierDeployment.create(protocol, range(clients), key_bits=key_bits, insecure=insecure_keys,
                                             threat=threat)
        if progress is not None:
            progress("paillier keygen", 1, 1)
    identities, identity_keys = create_identities(range(clients)) if active else (None, None)
    config = RoundConfig.create(protocol=protocol, clients=range(clients), encoding=encoding, round_id=round_id,
                                threat=threat, paillier=paillier.keys if paillier is not None else None,
                                identities=identities)
    if schedule is None:
        rng = np.random.default_rng([seed, 2**31 - 1])  # noqa: csprng-ok (dropout schedule, not a secret)
        schedule = DropoutSchedule.random(config.clients, dropout, protocol=protocol, rng=rng, active=active)
    updates: dict[int, EncodedUpdate] = {}
    for c in config.clients:
        updates[c] = quantizer.encode(client_data(seed, c, dimension))
        if progress is not None:
            progress("encode", c + 1, clients)
    report = Simulator(config, updates, schedule=schedule, progress=progress, paillier=paillier,
                       record_fields=record_fields, identities=identity_keys).run()

    correct = False
    max_abs_error = float("nan")
    if report.result is not None:
        survivors = sorted(report.result.survivors)
        correct = bool(np.array_equal(plaintext_ring_sum(updates, survivors), report.result.ring_sum))
        float_sum = np.zeros(dimension)
        for c in survivors:
            float_sum += client_data(seed, c, dimension)
        decoded = quantizer.decode_sum(report.result.ring_sum).total
        max_abs_error = float(np.max(np.abs(decoded - float_sum)))
    return SimulationReport(round=report, encoding=encoding, correct=correct, max_abs_error=max_abs_error,
                            threat=threat)
