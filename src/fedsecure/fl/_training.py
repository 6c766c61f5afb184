"""The round loop: evaluation, checkpoints after every round, resume."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from ._federation import Federation, RoundRecord

__all__ = ["TrainingResult", "train_federated"]

Evaluate = Callable[[object], "tuple[float, float]"]


@dataclass
class TrainingResult:
    history: list[RoundRecord]
    final_loss: float | None
    final_accuracy: float | None
    seconds: float


LOGGER = logging.getLogger("fedsecure.fl")


def train_federated(
    federation: Federation,
    *,
    rounds: int,
    evaluate: Evaluate | None = None,
    out: str | None = None,
    resume: str | None = None,
    on_round: Callable[[RoundRecord], None] | None = None,
    stop: Callable[[RoundRecord], bool] | None = None,
) -> TrainingResult:
    """Run rounds until ``rounds`` are done (counting resumed ones) or ``stop(record)`` says so.

    With ``out`` the global model, optimizer state and history are saved after
    every round, so a crash loses at most the round in progress; ``resume``
    continues from such a directory, and keeps saving there unless ``out``
    names another. Resuming a checkpoint that already holds ``rounds`` rounds
    or more runs nothing, and says so.
    """
    started = time.perf_counter()
    history = federation.restore(resume) if resume else []
    if resume and out is None:
        out = resume  # A resumed run keeps its checkpoint current.
    if resume and len(history) >= rounds:
        LOGGER.warning("the checkpoint in %s already holds %d rounds (asked for %d): nothing to run; raise the "
                       "rounds to continue", resume, len(history), rounds)
    if history and stop is not None and stop(history[-1]):
        rounds = len(history)  # The restored run had already met its stopping rule.
    for round_index in range(len(history), rounds):
        record = federation.run_round(round_index)
        if evaluate is not None:
            record.loss, record.accuracy = evaluate(federation.model)
        history.append(record)
        if out:
            federation.save(out, history)
        if on_round is not None:
            on_round(record)
        if stop is not None and stop(record):
            break
    last = history[-1] if history else None
    return TrainingResult(history=history, final_loss=last.loss if last else None,
                          final_accuracy=last.accuracy if last else None, seconds=time.perf_counter() - started)
