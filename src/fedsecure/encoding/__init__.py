"""Encoding: flatten, clip, quantise into a ring that cannot wrap, and decode."""

from ._clip import ClipMode, clip, clip_l2, clip_per_coordinate
from ._quantize import MAX_RING_BITS, DecodedSum, EncodedUpdate, EncodingConfig, Quantizer, Ring
from ._packing import SlotLayout
from ._vector import TensorSpec, VectorSpec

__all__ = [
    "ClipMode",
    "DecodedSum",
    "EncodedUpdate",
    "EncodingConfig",
    "MAX_RING_BITS",
    "Quantizer",
    "Ring",
    "SlotLayout",
    "TensorSpec",
    "VectorSpec",
    "clip",
    "clip_l2",
    "clip_per_coordinate",
]
