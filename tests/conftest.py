"""Shared fixtures: small rounds built from encoded random updates."""

from __future__ import annotations

import os

# One intra-op thread for torch in the tests and every process they start: their models are tiny, and on a busy
# two-core machine torch's spinning worker threads slow such a model's steps tenfold.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest
from hypothesis import settings

from fedsecure.encoding import ClipMode, EncodedUpdate, EncodingConfig, Quantizer
from fedsecure.protocols import ProtocolKind, RoundConfig, ThreatModel
from fedsecure.runtime import plaintext_ring_sum

settings.register_profile("default", deadline=None, max_examples=60)
settings.load_profile("default")


def make_round(
    protocol: ProtocolKind = ProtocolKind.SECAGG,
    clients: int = 8,
    dimension: int = 64,
    *,
    threat: ThreatModel | None = None,
    seed: int = 0,
    round_id: int = 7,
) -> tuple[RoundConfig, dict[int, EncodedUpdate], Quantizer]:
    encoding = EncodingConfig.fit_scale(dimension=dimension, clients=clients, clip=1.0,
                                        clip_mode=ClipMode.PER_COORDINATE)
    quantizer = Quantizer(encoding)
    config = RoundConfig.create(protocol=protocol, clients=range(clients), encoding=encoding, round_id=round_id,
                                threat=threat)
    rng = np.random.default_rng(seed)  # noqa: csprng-ok (test data)
    updates = {c: quantizer.encode(rng.uniform(-1, 1, dimension)) for c in config.clients}
    return config, updates, quantizer


def ring_sum(config: RoundConfig, updates: dict[int, EncodedUpdate], clients: object) -> np.ndarray:
    return plaintext_ring_sum(updates, clients)  # type: ignore[arg-type]


@pytest.fixture
def small_round() -> tuple[RoundConfig, dict[int, EncodedUpdate], Quantizer]:
    return make_round()
