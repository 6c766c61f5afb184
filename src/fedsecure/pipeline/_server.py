"""The server side of every round, whoever drives it: aggregate -> decode -> DP release -> mean -> optimizer.

``Federation`` (in-process simulation), the built-in Flower jobs and the Flower drop-in each run a protocol's
server session their own way, then hand its ring sum (or the fact that there is none) to one
:class:`ServerPipeline`, which asks the round's :class:`RoundPrivacy` what to release and moves the global
vector through the server optimizer.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from ..encoding import VectorSpec
from ._optimizers import ServerOptimizer
from ._privacy import Release, RoundEncoding, RoundPrivacy

__all__ = ["ServerPipeline", "RoundStep", "RoundRecord"]

T = TypeVar("T")


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


@dataclass(frozen=True)
class RoundStep:
    """A round's outcome on the server: the next global vector (None: unchanged) and what was released."""

    vector: np.ndarray | None
    release: Release

    @property
    def aborted(self) -> bool:
        return self.release.aborted


class ServerPipeline:
    """From a round's aggregate to the next global vector, with one DP level and one server optimizer.

    ``spec`` is the global model's layout; ``privacy`` the round's DP level (:func:`round_privacy`);
    ``optimizer`` the server optimizer (FedAvg by default); ``parameters`` the names of the tensors it steps (the
    others, float buffers such as BatchNorm statistics, are averaged; None: every tensor).
    """

    def __init__(self, spec: VectorSpec, privacy: RoundPrivacy, optimizer: ServerOptimizer | None = None,
                 parameters: Collection[str] | None = None) -> None:
        self.spec = spec
        self.privacy = privacy
        self.optimizer = optimizer or ServerOptimizer()
        if parameters is None:
            self._mask = np.ones(spec.size, dtype=bool)
        else:
            self._mask = np.concatenate([np.full(t.size, t.name in parameters) for t in spec.tensors]) \
                if spec.tensors else np.zeros(0, dtype=bool)

    @property
    def optimized_size(self) -> int:
        """How many values the server optimizer steps (and its state holds per kind)."""
        return int(self._mask.sum())

    def encoding(self, cohort: int) -> RoundEncoding:
        """What the clients of a round over ``cohort`` clients encode with."""
        return self.privacy.encoding(cohort)

    def sample(self, clients: Sequence[T], seed: int, round_index: int) -> list[T]:
        """The round's cohort, as the DP level draws it."""
        return self.privacy.sample(clients, seed, round_index)

    def minimum_survivors(self, cohort: int) -> int | None:
        """The threshold floor a round of ``cohort`` needs (0: none; None: the round must not run)."""
        return self.privacy.minimum_survivors(cohort)

    def finish(self, round_index: int, before: np.ndarray, encoding: RoundEncoding, ring_sum: np.ndarray,
               survivors: Iterable[int]) -> RoundStep:
        """The survivors' ring sum decoded, released by the DP level and applied to ``before``."""
        release = self.privacy.release(round_index, encoding, ring_sum, survivors)
        return RoundStep(None if release.mean is None else self.apply(before, release.mean), release)

    def fail(self, round_index: int, before: np.ndarray, cohort: Iterable[int], reason: str) -> RoundStep:
        """A round without an aggregate: the DP level decides whether anything is released (central DP's noise)."""
        release = self.privacy.no_aggregate(round_index, cohort, reason)
        return RoundStep(None if release.mean is None else self.apply(before, release.mean), release)

    def apply(self, before: np.ndarray, mean: np.ndarray) -> np.ndarray:
        """``before`` moved by the mean update: parameters through the server optimizer, buffers averaged."""
        after: np.ndarray = before + mean
        after[self._mask] = self.optimizer.step(before[self._mask], mean[self._mask])
        return after
