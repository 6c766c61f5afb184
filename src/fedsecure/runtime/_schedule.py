"""Dropout schedules: which clients go silent, and from which stage on."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from ..protocols import DecryptedAggregate, ProtocolKind, Stage, server_stages

__all__ = ["DropoutSchedule", "client_stages"]


def client_stages(protocol: ProtocolKind, *, active: bool = False) -> tuple[Stage, ...]:
    """The stages in which clients answer, in protocol order (a separate decryptor's stage is not one).

    ``active`` selects SecAgg's active-adversary variant, with its consistency check.
    """
    rules = server_stages(protocol, active=active)
    return tuple(stage for stage, rule in rules.items() if rule.accepts is not DecryptedAggregate)


@dataclass(frozen=True)
class DropoutSchedule:
    """For each dropping client, the first stage in which it stays silent (and every later one)."""

    silent_from: Mapping[int, Stage] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "silent_from", MappingProxyType(dict(self.silent_from)))

    @classmethod
    def at_stages(cls, dropped: Mapping[Stage, Iterable[int]]) -> DropoutSchedule:
        """Explicit ids per stage: ``{Stage.MASKED_INPUT: [3, 7]}``."""
        silent: dict[int, Stage] = {}
        for stage, clients in dropped.items():
            for client in clients:
                silent[int(client)] = stage
        return cls(silent)

    @classmethod
    def random(
        cls,
        clients: Sequence[int],
        fraction: float,
        *,
        protocol: ProtocolKind,
        rng: np.random.Generator,
        stages: Sequence[Stage] | None = None,
        active: bool = False,
    ) -> DropoutSchedule:
        """``round(fraction * n)`` clients, chosen uniformly, each silent from a uniformly chosen stage."""
        if not 0 <= fraction <= 1:
            raise ValueError("dropout fraction must be in [0, 1]")
        stages = tuple(stages) if stages is not None else client_stages(protocol, active=active)
        count = round(fraction * len(clients))
        chosen = rng.choice(np.asarray(clients), size=count, replace=False)
        picks = rng.integers(0, len(stages), size=count)
        return cls({int(c): stages[int(i)] for c, i in zip(chosen, picks)})

    @classmethod
    def per_stage(
        cls,
        clients: Sequence[int],
        fractions: Mapping[Stage, float],
        *,
        rng: np.random.Generator,
    ) -> DropoutSchedule:
        """A fraction of the cohort newly silent at each stage (fractions of the whole cohort)."""
        remaining = list(int(c) for c in clients)
        silent: dict[int, Stage] = {}
        for stage, fraction in sorted(fractions.items()):
            count = min(len(remaining), round(fraction * len(clients)))
            chosen: list[int] = rng.choice(np.asarray(remaining), size=count, replace=False).tolist() if count else []
            for client in chosen:
                silent[int(client)] = stage
            remaining = [c for c in remaining if c not in silent]
        return cls(silent)

    def is_silent(self, client: int, stage: Stage) -> bool:
        """True if ``client`` does not answer in ``stage``."""
        first = self.silent_from.get(client)
        return first is not None and stage >= first
