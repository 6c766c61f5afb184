"""Fixed-point encoding into the ring Z_(2^b), with a guarantee that sums never wrap.

A client's float update is clipped, optionally multiplied by its weight,
scaled by ``scale``, stochastically rounded (unbiased: E[round(v)] = v) and
reduced into Z_(2^b). The ring size b is chosen from the number of clients, the
clip bound, the scale and the largest weight so that the sum of every client's
input always fits in (-2^(b-1), 2^(b-1)): the server's ring sum then decodes to
the exact integer sum of the quantised inputs.

Weighted aggregation keeps the weights private: the weight is one more
coordinate of the protected vector (an exact integer), so the server learns
only the total weight, as it learns only the total update.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import struct
from dataclasses import dataclass, field

import numpy as np

from .._errors import ConfigurationError, InvalidUpdateError
from ._clip import ClipMode, clip

__all__ = ["Ring", "EncodingConfig", "Quantizer", "EncodedUpdate", "DecodedSum", "MAX_RING_BITS"]

MAX_RING_BITS = 64
MIN_RING_BITS = 2


@dataclass(frozen=True, slots=True)
class Ring:
    """The ring Z_(2^bits), stored in uint32 words for bits <= 32 and uint64 above."""

    bits: int

    def __post_init__(self) -> None:
        if not isinstance(self.bits, int) or not MIN_RING_BITS <= self.bits <= MAX_RING_BITS:
            raise ConfigurationError(
                f"ring_bits must be between {MIN_RING_BITS} and {MAX_RING_BITS}, got {self.bits!r}",
                parameter="ring_bits",
            )

    @property
    def dtype(self) -> np.dtype[np.unsignedinteger]:
        return np.dtype("<u4") if self.bits <= 32 else np.dtype("<u8")

    @property
    def modulus(self) -> int:
        return 1 << self.bits

    @property
    def word_bytes(self) -> int:
        return self.dtype.itemsize

    def reduce(self, values: np.ndarray) -> np.ndarray:
        """Reduce words modulo 2^bits in place (a no-op when bits equals the word size)."""
        if self.bits < 8 * self.word_bytes:
            np.bitwise_and(values, np.array(self.modulus - 1, dtype=self.dtype), out=values)
        return values

    def from_signed(self, integers: np.ndarray) -> np.ndarray:
        """Map signed int64 values into ring words (two's complement)."""
        return self.reduce(integers.astype(np.int64).view(np.uint64).astype(self.dtype))

    def to_signed(self, values: np.ndarray) -> np.ndarray:
        """Map ring words to signed integers in [-2^(bits-1), 2^(bits-1)) as int64."""
        # Shift the ring's top bit into the int64 sign bit, then shift back arithmetically (sign-extending).
        spare = np.uint64(64 - self.bits)
        return (values.astype(np.uint64) << spare).view(np.int64) >> np.int64(64 - self.bits)

    def contains(self, values: np.ndarray) -> bool:
        """True if every word is already reduced modulo 2^bits."""
        if self.bits == 8 * self.word_bytes or values.size == 0:
            return True
        return int(values.max()) < self.modulus


def _required_ring_bits(max_sum: int) -> int:
    # Signed sums in [-S, S] need 2S + 1 distinct residues: 2^b > 2S.
    return max(MIN_RING_BITS, (2 * max_sum).bit_length())


@dataclass(frozen=True, slots=True)
class EncodingConfig:
    """The public encoding parameters of a round; every client and the server share one.

    ``clip`` bounds each update (L2 norm or per coordinate, by ``clip_mode``);
    ``scale`` is the number of quantisation steps per unit; ``clients`` is the
    most clients that can ever be summed; ``max_weight`` (when set) turns on
    weighted aggregation with integer weights in [0, max_weight]. ``ring_bits``
    defaults to the smallest ring in which the sum cannot wrap; an explicit
    value that could wrap is refused.

    Leaks: these values are public. The clip bound and scale tell the server the
    range of the updates, and the weighted mode reveals the total weight.
    """

    dimension: int
    clients: int
    clip: float
    scale: float
    clip_mode: ClipMode = ClipMode.L2
    max_weight: int | None = None
    ring_bits: int | None = None
    ring: Ring = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.dimension, int) or self.dimension < 1:
            raise ConfigurationError("dimension must be a positive integer", parameter="dimension")
        if not isinstance(self.clients, int) or self.clients < 1:
            raise ConfigurationError("clients must be a positive integer", parameter="clients")
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise ConfigurationError("clip must be a positive finite number", parameter="clip")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ConfigurationError("scale must be a positive finite number", parameter="scale")
        if self.max_weight is not None and (not isinstance(self.max_weight, int) or self.max_weight < 1):
            raise ConfigurationError("max_weight must be a positive integer or None", parameter="max_weight")
        required = _required_ring_bits(self.max_sum)
        if required > MAX_RING_BITS:
            raise ConfigurationError(
                f"the sum of {self.clients} inputs clipped to {self.clip} at scale {self.scale} needs a "
                f"{required}-bit ring, more than {MAX_RING_BITS}: lower `scale` (at most "
                f"{self.max_scale(MAX_RING_BITS):.6g}) or `clip`",
                parameter="scale",
            )
        bits = required if self.ring_bits is None else self.ring_bits
        if bits < required:
            raise ConfigurationError(
                f"the sum of {self.clients} inputs clipped to {self.clip} at scale {self.scale} could wrap "
                f"a {bits}-bit ring (it needs {required} bits): lower `scale` to at most "
                f"{self.max_scale(bits):.6g}, or raise `ring_bits`",
                parameter="scale",
            )
        object.__setattr__(self, "ring", Ring(bits))

    @classmethod
    def fit_scale(
        cls,
        *,
        dimension: int,
        clients: int,
        clip: float,
        ring_bits: int = 32,
        clip_mode: ClipMode = ClipMode.L2,
        max_weight: int | None = None,
    ) -> EncodingConfig:
        """The configuration with the largest power-of-two scale that fits ``ring_bits``."""
        probe = cls(dimension=dimension, clients=clients, clip=clip, scale=1e-300, clip_mode=clip_mode,
                    max_weight=max_weight)
        limit = probe.max_scale(ring_bits)
        if limit <= 0:
            raise ConfigurationError(f"no scale fits a {ring_bits}-bit ring for {clients} clients", parameter="ring_bits")
        scale = 2.0 ** math.floor(math.log2(limit))
        if scale > limit:  # log2 rounds up just below a power of two (2^60 - 256 gives 60.0)
            scale /= 2
        return cls(dimension=dimension, clients=clients, clip=clip, scale=scale, clip_mode=clip_mode,
                   max_weight=max_weight, ring_bits=ring_bits)

    @property
    def weighted(self) -> bool:
        return self.max_weight is not None

    @property
    def vector_length(self) -> int:
        """Length of the encoded vector (the update, plus one weight slot when weighted)."""
        return self.dimension + (1 if self.weighted else 0)

    @property
    def max_coordinate(self) -> int:
        """The largest absolute value one client's quantised coordinate can take."""
        weight = self.max_weight or 1
        return max(math.ceil(self.clip * self.scale * weight), weight if self.weighted else 0)

    @property
    def max_sum(self) -> int:
        """The largest absolute value a coordinate of the sum can take."""
        return self.clients * self.max_coordinate

    def max_scale(self, ring_bits: int) -> float:
        """The largest scale for which the sum still fits a ``ring_bits`` ring."""
        weight = self.max_weight or 1
        largest_coordinate = ((1 << (ring_bits - 1)) - 1) // self.clients
        if self.weighted and largest_coordinate < weight:
            return 0.0
        # ceil(clip * scale * weight) <= largest_coordinate  <=>  clip * scale * weight <= largest_coordinate. In
        # wide rings the quotient can round up past the bound (2^60 - 1 becomes 2^60): step down until it holds.
        limit = largest_coordinate / (self.clip * weight)
        while limit > 0 and math.ceil(self.clip * limit * weight) > largest_coordinate:
            limit = math.nextafter(limit, 0.0)
        return limit

    def digest(self) -> bytes:
        """A SHA-256 fingerprint of the public encoding parameters."""
        packed = struct.pack(
            "<QQddBQB", self.dimension, self.clients, self.clip, self.scale,
            0 if self.clip_mode is ClipMode.L2 else 1, self.max_weight or 0, self.ring.bits,
        )
        return hashlib.sha256(b"fedsecure/v1/encoding" + packed).digest()


@dataclass(frozen=True, slots=True, eq=False)
class EncodedUpdate:
    """One client's quantised update: words of ``ring``, read-only, ready to be masked.

    ``max_coordinate`` is the encoding's bound on a coordinate's magnitude: a Paillier client checks the round's
    slot layout against it, so a server cannot learn where the client's values lie by offering narrower slots.
    ``clipped`` says whether the clip changed the update (the client's own knowledge: it is never sent).
    """

    values: np.ndarray
    ring: Ring
    encoding_digest: bytes
    max_coordinate: int
    clipped: bool = False

    def __post_init__(self) -> None:
        if self.values.dtype != self.ring.dtype or self.values.ndim != 1:
            raise InvalidUpdateError("encoded values must be a 1-D array of the ring's word type")
        view = self.values.view()
        view.flags.writeable = False
        object.__setattr__(self, "values", view)

    def __repr__(self) -> str:
        return f"<EncodedUpdate length={self.values.size} ring_bits={self.ring.bits}>"


@dataclass(frozen=True, slots=True)
class DecodedSum:
    """The decoded aggregate: the float sum of the (weighted) updates and the total weight."""

    total: np.ndarray
    total_weight: int | None

    def mean(self) -> np.ndarray:
        """The weighted mean (weighted mode) or the plain sum divided by nothing: raises if unweighted."""
        if self.total_weight is None:
            raise ValueError("mean() needs weighted encoding; divide `total` by the number of survivors instead")
        if self.total_weight <= 0:
            raise ValueError("total weight is zero: no client contributed")
        return self.total / self.total_weight


class Quantizer:
    """Encodes client updates and decodes ring sums for one :class:`EncodingConfig`."""

    __slots__ = ("_config",)

    def __init__(self, config: EncodingConfig) -> None:
        self._config = config

    @property
    def config(self) -> EncodingConfig:
        return self._config

    def encode(self, update: np.ndarray, *, weight: int | None = None) -> EncodedUpdate:
        """Clip, weight, scale and stochastically round ``update`` into the ring.

        The clip is the encoding's ``clip_mode`` (L2 by default: the whole update is scaled down to norm ``clip``
        when it is longer); the result's ``clipped`` says whether it was.

        Refuses NaN, Inf, a wrong shape, or a weight outside [0, max_weight]
        with :class:`InvalidUpdateError` before anything is masked.
        """
        rounding = np.random.default_rng(secrets.randbits(128))  # noqa: csprng-ok (stochastic rounding, not a secret)
        return self._encode_with_generator(update, weight, rounding)

    def _encode_with_generator(
        self, update: np.ndarray, weight: int | None, rounding: np.random.Generator
    ) -> EncodedUpdate:
        config = self._config
        vector = np.asarray(update)
        if vector.shape != (config.dimension,):
            raise InvalidUpdateError(f"update has shape {vector.shape}, expected ({config.dimension},)")
        if not np.issubdtype(vector.dtype, np.number) or np.issubdtype(vector.dtype, np.complexfloating):
            raise InvalidUpdateError(f"update must be real-valued, got dtype {vector.dtype}")
        vector = vector.astype(np.float64, copy=False)
        if not np.all(np.isfinite(vector)):
            bad = int(np.flatnonzero(~np.isfinite(vector))[0])
            raise InvalidUpdateError(f"update contains NaN or Inf (first at index {bad})")
        if config.weighted:
            if weight is None or not isinstance(weight, (int, np.integer)) or not 0 <= weight <= config.max_weight:  # type: ignore[operator]
                raise InvalidUpdateError(f"weight must be an integer in [0, {config.max_weight}], got {weight!r}")
        elif weight is not None:
            raise InvalidUpdateError("this encoding is unweighted; set max_weight to aggregate weights")
        clipped = clip(vector, config.clip, config.clip_mode)
        scaled = clipped * (config.scale * (int(weight) if config.weighted else 1))  # type: ignore[arg-type]
        floor = np.floor(scaled)
        # Unbiased stochastic rounding: round up with probability equal to the fractional part.
        rounded = floor + (rounding.random(scaled.shape) < (scaled - floor))
        limit = config.max_coordinate
        integers = np.clip(rounded, -limit, limit).astype(np.int64)
        if config.weighted:
            integers = np.append(integers, np.int64(int(weight)))  # type: ignore[arg-type]
        return EncodedUpdate(values=config.ring.from_signed(integers), ring=config.ring,
                             encoding_digest=config.digest(), max_coordinate=config.max_coordinate,
                             clipped=not np.array_equal(clipped, vector))

    def decode_sum(self, ring_sum: np.ndarray) -> DecodedSum:
        """Turn a ring sum of encoded updates back into a float sum (and the total weight)."""
        config = self._config
        values = np.asarray(ring_sum)
        if values.shape != (config.vector_length,) or values.dtype != config.ring.dtype:
            raise InvalidUpdateError(
                f"ring sum must have shape ({config.vector_length},) and dtype {config.ring.dtype}"
            )
        signed = config.ring.to_signed(values)
        if config.weighted:
            return DecodedSum(total=signed[:-1].astype(np.float64) / config.scale, total_weight=int(signed[-1]))
        return DecodedSum(total=signed.astype(np.float64) / config.scale, total_weight=None)
