"""Clipping: bounded sensitivity for differential privacy and a bounded ring sum."""

from __future__ import annotations

import enum

import numpy as np

__all__ = ["ClipMode", "clip_l2", "clip_per_coordinate", "clip"]


class ClipMode(enum.Enum):
    """How an update is bounded before quantisation."""

    L2 = "l2"
    PER_COORDINATE = "per-coordinate"


def clip_l2(vector: np.ndarray, bound: float) -> np.ndarray:
    """Scale ``vector`` down so its L2 norm is at most ``bound`` (a new array)."""
    if not bound > 0:
        raise ValueError("clip bound must be positive")
    norm = float(np.linalg.norm(vector))
    if norm <= bound:
        return np.array(vector, dtype=np.float64)
    return np.asarray(vector, dtype=np.float64) * (bound / norm)


def clip_per_coordinate(vector: np.ndarray, bound: float) -> np.ndarray:
    """Clamp every coordinate of ``vector`` to [-bound, bound] (a new array)."""
    if not bound > 0:
        raise ValueError("clip bound must be positive")
    return np.clip(np.asarray(vector, dtype=np.float64), -bound, bound)


def clip(vector: np.ndarray, bound: float, mode: ClipMode) -> np.ndarray:
    """Clip with the given mode. Either mode bounds every coordinate by ``bound``."""
    if mode is ClipMode.L2:
        return clip_l2(vector, bound)
    return clip_per_coordinate(vector, bound)
