"""Flatten model updates into one vector and back (names, shapes and dtypes kept).

Accepts a ``dict`` (for example a ``state_dict``) or a ``list``/``tuple`` of numpy
arrays or torch tensors. torch is imported only when a tensor is seen or must be
rebuilt, so the core works without it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from .._errors import InvalidUpdateError

__all__ = ["VectorSpec", "TensorSpec"]

Parameters = Union[Mapping[str, Any], Sequence[Any]]


def _is_torch_tensor(value: object) -> bool:
    return type(value).__module__.split(".")[0] == "torch" and hasattr(value, "detach")


def _to_numpy(value: object) -> tuple[np.ndarray, str, str]:
    """Return (array, kind, dtype name) for a numpy array or torch tensor."""
    if isinstance(value, np.ndarray):
        return value, "numpy", value.dtype.str
    if _is_torch_tensor(value):
        tensor = value.detach().cpu()  # type: ignore[attr-defined]
        dtype_name = str(tensor.dtype).removeprefix("torch.")
        return tensor.double().numpy(), "torch", dtype_name
    raise InvalidUpdateError(f"expected a numpy array or torch tensor, got {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """Where one tensor lives in the flat vector."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    kind: str  # "numpy" or "torch"

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True, slots=True)
class VectorSpec:
    """The layout of a flattened update: which tensors, in which order, of which shape and dtype.

    Two clients must flatten with equal specs for their vectors to be summable;
    :meth:`flatten` refuses parameters that do not match the spec.
    """

    tensors: tuple[TensorSpec, ...]
    container: str  # "dict" or "list"

    @classmethod
    def from_parameters(cls, parameters: Parameters) -> VectorSpec:
        """Record the layout of ``parameters`` (a dict or a list of arrays/tensors)."""
        if isinstance(parameters, Mapping):
            items = [(str(name), value) for name, value in parameters.items()]
            container = "dict"
        elif isinstance(parameters, Sequence) and not isinstance(parameters, (str, bytes)):
            items = [(str(index), value) for index, value in enumerate(parameters)]
            container = "list"
        else:
            raise InvalidUpdateError("parameters must be a dict or a list of arrays or tensors")
        specs = []
        for name, value in items:
            array, kind, dtype_name = _to_numpy(value)
            specs.append(TensorSpec(name=name, shape=tuple(int(s) for s in array.shape), dtype=dtype_name, kind=kind))
        return cls(tensors=tuple(specs), container=container)

    @property
    def size(self) -> int:
        """Number of scalars in the flat vector."""
        return sum(t.size for t in self.tensors)

    def _values(self, parameters: Parameters) -> list[object]:
        if self.container == "dict":
            if not isinstance(parameters, Mapping):
                raise InvalidUpdateError("expected a dict of tensors, as when the spec was made")
            names = [t.name for t in self.tensors]
            if list(map(str, parameters.keys())) != names:
                raise InvalidUpdateError(f"tensor names differ from the spec: expected {names}")
            return list(parameters.values())
        if isinstance(parameters, Mapping) or len(parameters) != len(self.tensors):
            raise InvalidUpdateError(f"expected a list of {len(self.tensors)} tensors")
        return list(parameters)

    def flatten(self, parameters: Parameters) -> np.ndarray:
        """Concatenate ``parameters`` into a new float64 vector, checking names and shapes."""
        out = np.empty(self.size, dtype=np.float64)
        offset = 0
        for spec, value in zip(self.tensors, self._values(parameters)):
            array, _, _ = _to_numpy(value)
            if tuple(array.shape) != spec.shape:
                raise InvalidUpdateError(f"tensor {spec.name!r} has shape {tuple(array.shape)}, expected {spec.shape}")
            out[offset : offset + spec.size] = array.reshape(-1)
            offset += spec.size
        return out

    def unflatten(self, vector: np.ndarray) -> dict[str, Any] | list[Any]:
        """Rebuild the container, with each tensor's shape, dtype and kind (numpy or torch)."""
        vector = np.asarray(vector)
        if vector.shape != (self.size,):
            raise InvalidUpdateError(f"vector has shape {vector.shape}, expected ({self.size},)")
        values: list[Any] = []
        offset = 0
        for spec in self.tensors:
            piece = vector[offset : offset + spec.size].reshape(spec.shape)
            offset += spec.size
            if spec.kind == "torch":
                import torch

                values.append(torch.from_numpy(np.array(piece, dtype=np.float64)).to(getattr(torch, spec.dtype)))
            else:
                values.append(np.array(piece, dtype=np.dtype(spec.dtype)))
        if self.container == "dict":
            return {spec.name: value for spec, value in zip(self.tensors, values)}
        return values
