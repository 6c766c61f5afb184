"""A server session's own peak memory, measured without counting client code."""

from __future__ import annotations

import sys
import tracemalloc
from types import MappingProxyType
from collections.abc import Callable
from typing import Any

import numpy as np

from ..protocols import ServerSession

__all__ = ["deep_size", "ServerMemoryProbe"]


def deep_size(root: object) -> int:
    """Bytes held by an object graph: containers, slotted objects, bytes and numpy buffers."""
    seen: set[int] = set()
    stack: list[Any] = [root]
    total = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or obj is None or isinstance(obj, type) or callable(obj):
            continue
        seen.add(id(obj))
        if isinstance(obj, np.ndarray):
            total += sys.getsizeof(obj) + (obj.nbytes if obj.base is None else 0)
            if obj.base is not None:
                stack.append(obj.base)
            continue
        total += sys.getsizeof(obj)
        if isinstance(obj, (dict, MappingProxyType)):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
        elif not isinstance(obj, (bytes, bytearray, str, int, float, bool)):
            if hasattr(obj, "__dict__"):
                stack.append(vars(obj))
            for slot in getattr(type(obj), "__slots__", ()):
                if hasattr(obj, slot):
                    stack.append(getattr(obj, slot))
    return total


class ServerMemoryProbe:
    """Wraps a server session and estimates its peak memory.

    The server's retained state is the size of its live object graph, taken
    before each ``close_stage`` (when a stage's state is largest). Transient
    allocations inside each server call come from tracemalloc's peak during
    that call (no client code runs inside a server call). Messages the server
    returns are charged to it until the call returns; after that they belong to
    the transport, which in a real server sends them as they are produced.
    """

    def __init__(self, inner: ServerSession) -> None:
        self._inner = inner
        self._retained = 0
        self.peak = 0

    def _measure(self, call: Callable[[], Any]) -> Any:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        try:
            return call()
        finally:
            _, peak = tracemalloc.get_traced_memory()
            self.peak = max(self.peak, self._retained + peak - before)

    def start(self) -> Any:
        return self._measure(self._inner.start)

    def receive_bytes(self, data: bytes, *, sender: int) -> Any:
        return self._measure(lambda: self._inner.receive_bytes(data, sender=sender))

    def close_stage(self) -> Any:
        self._retained = deep_size(self._inner)
        self.peak = max(self.peak, self._retained)
        return self._measure(self._inner.close_stage)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

