"""Server optimizers applied to the securely aggregated mean update.

The aggregate the server decodes is the weighted mean of client updates
(local weights minus global weights), which Reddi et al. (ICLR 2021, §2) call
the pseudo-gradient with its sign flipped. FedAvg applies it directly; FedAvgM
adds server momentum; FedAdam adapts per coordinate (Reddi et al., Algorithm 2).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

__all__ = ["ServerOptimizerKind", "ServerOptimizer"]


class ServerOptimizerKind(enum.Enum):
    FEDAVG = "fedavg"
    FEDAVGM = "fedavgm"
    FEDADAM = "fedadam"


@dataclass
class ServerOptimizer:
    """Turns (global vector, mean update) into the next global vector. Its state can be saved and restored."""

    kind: ServerOptimizerKind = ServerOptimizerKind.FEDAVG
    learning_rate: float = 1.0
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    state: dict[str, np.ndarray] = field(default_factory=dict)

    def step(self, weights: np.ndarray, mean_update: np.ndarray) -> np.ndarray:
        """The next global weights (a new array)."""
        if self.kind is ServerOptimizerKind.FEDAVG:
            return weights + self.learning_rate * mean_update
        if self.kind is ServerOptimizerKind.FEDAVGM:
            velocity: np.ndarray = self.momentum * self.state.get("velocity", np.zeros_like(mean_update)) + mean_update
            self.state["velocity"] = velocity
            return weights + self.learning_rate * velocity
        first = self.state.get("m", np.zeros_like(mean_update))
        second = self.state.get("v", np.full_like(mean_update, self.tau**2))
        first = self.beta1 * first + (1 - self.beta1) * mean_update
        second = self.beta2 * second + (1 - self.beta2) * mean_update**2
        self.state["m"], self.state["v"] = first, second
        updated: np.ndarray = weights + self.learning_rate * first / (np.sqrt(second) + self.tau)
        return updated
