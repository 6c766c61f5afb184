"""What an auditor may see of a message: its public fields, never a secret or an input.

Public keys, digests, signatures, ids and survivor lists are shown as they
are. Longer byte strings (share envelopes, ciphertexts, partial decryptions) and
vectors (masked or plaintext inputs, decoded totals) are reduced to their length
and SHA-256, which binds a transcript to the messages without revealing them.
Shamir share values are left out entirely; only whose share it is remains.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import numpy as np

from ._messages import Message, ShareValue

__all__ = ["public_view"]

# Byte strings up to this long are keys, digests or signatures and are shown in hex.
_SHOWN_BYTES = 64


def _view(value: Any) -> Any:
    if isinstance(value, ShareValue):
        return {"owner": value.owner}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: _view(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, bytes):
        if len(value) <= _SHOWN_BYTES:
            return value.hex()
        return {"bytes": len(value), "sha256": hashlib.sha256(value).hexdigest()}
    if isinstance(value, np.ndarray):
        return {"length": int(value.size), "sha256": hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()}
    if isinstance(value, tuple):
        return [_view(item) for item in value]
    if isinstance(value, (int, str, bool)) or value is None:
        return value
    raise TypeError(f"no public view of a {type(value).__name__}")


def public_view(message: Message) -> dict[str, Any]:
    """The fields of ``message`` an auditor may see (see the module docstring), as JSON-ready values."""
    view: dict[str, Any] = _view(message)
    return view
