"""Slot packing for additively homomorphic encryption (BatchCrypt, Zhang et al., USENIX ATC 2020, §4).

Many quantised coordinates share one Paillier plaintext. Each coordinate v of
one client lies in [-M, M] (``M`` is :attr:`EncodingConfig.max_coordinate`); it
is stored offset by M, as v + M in [0, 2M], in a slot of ``value_bits`` bits
followed by ``headroom_bits`` = ceil(log2(clients)) + 1 spare bits. Adding the
plaintexts of up to ``max_contributors`` clients adds the slots as integers and
no slot sum ever carries into its neighbour, since each is at most
clients * 2M < 2^(value_bits + headroom_bits - 1). The sum of k contributions
decodes as slot_sum - k*M.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import gmpy2
import numpy as np

from .._errors import ConfigurationError, InvalidUpdateError

__all__ = ["SlotLayout"]


@dataclass(frozen=True, slots=True)
class SlotLayout:
    """How signed integers are packed into plaintexts of ``plaintext_bits`` bits. Public."""

    value_bits: int
    headroom_bits: int
    slots: int
    offset: int
    max_contributors: int

    def __post_init__(self) -> None:
        # A layout can come from the wire: every field is checked so that packing and unpacking cannot fail
        # on an honest, in-range vector (a refusal that depended on the values would tell where they lie).
        for name in ("value_bits", "headroom_bits", "slots", "offset", "max_contributors"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ConfigurationError(f"the slot layout's {name} must be a positive integer", parameter=name)
        if (2 * self.offset).bit_length() > self.value_bits:
            raise ConfigurationError("the slot layout's values do not fit their offset", parameter="offset")
        if self.slot_bits * self.slots > 1 << 16:
            raise ConfigurationError("the slot layout is wider than any Paillier plaintext", parameter="slots")

    @classmethod
    def create(cls, *, max_coordinate: int, clients: int, plaintext_bits: int) -> SlotLayout:
        """The densest layout for ``clients`` inputs in [-max_coordinate, max_coordinate].

        ``plaintext_bits`` is how many bits a plaintext may use (for Paillier, one
        less than the modulus length, so that every packed plaintext is below n).
        Refuses, naming the parameter to change, a layout in which not even one
        slot fits.
        """
        if not isinstance(max_coordinate, int) or max_coordinate < 1:
            raise ConfigurationError("max_coordinate must be a positive integer", parameter="max_coordinate")
        if not isinstance(clients, int) or clients < 1:
            raise ConfigurationError("clients must be a positive integer", parameter="clients")
        value_bits = (2 * max_coordinate).bit_length()
        headroom_bits = math.ceil(math.log2(clients)) + 1 if clients > 1 else 1
        slot_bits = value_bits + headroom_bits
        slots = plaintext_bits // slot_bits
        if slots < 1:
            raise ConfigurationError(
                f"a slot needs {slot_bits} bits ({value_bits} for a value, {headroom_bits} of headroom for "
                f"{clients} clients) but a plaintext holds {plaintext_bits}: lower `ring_bits` or `scale`, "
                "or use a larger `key_bits`",
                parameter="ring_bits",
            )
        return cls(value_bits=value_bits, headroom_bits=headroom_bits, slots=slots, offset=max_coordinate,
                   max_contributors=clients)

    @property
    def slot_bits(self) -> int:
        return self.value_bits + self.headroom_bits

    def plaintexts_for(self, length: int) -> int:
        """How many plaintexts a vector of ``length`` coordinates needs."""
        return -(-length // self.slots)

    def pack(self, signed: np.ndarray) -> list[int]:
        """Pack signed integers in [-offset, offset] into plaintexts, first coordinate in the lowest slot.

        Raises :class:`InvalidUpdateError` for a value out of range, before anything is encrypted.
        """
        values = np.asarray(signed)
        if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer):
            raise InvalidUpdateError("packing needs a 1-D integer vector")
        if values.size and (int(values.min()) < -self.offset or int(values.max()) > self.offset):
            raise InvalidUpdateError(f"a coordinate lies outside [-{self.offset}, {self.offset}]")
        shifted = (values.astype(object) + self.offset).tolist()
        width = self.slot_bits
        return [int(gmpy2.pack(shifted[start : start + self.slots], width))
                for start in range(0, len(shifted), self.slots)]

    def unpack_sum(self, plaintexts: Sequence[int], *, length: int, contributors: int) -> np.ndarray:
        """Decode the plaintext sum of ``contributors`` packed vectors into their signed sum (int64).

        The encoding guarantees the sum fits its ring, at most 64 bits; a sum that
        does not fit int64 raises ``ValueError``.
        """
        if not 1 <= contributors <= self.max_contributors:
            raise ConfigurationError(
                f"{contributors} contributions, but the slots have headroom for at most {self.max_contributors}",
                parameter="clients",
            )
        if len(plaintexts) != self.plaintexts_for(length):
            raise ValueError(f"{len(plaintexts)} plaintexts for {length} coordinates, expected "
                             f"{self.plaintexts_for(length)}")
        width, bias = self.slot_bits, contributors * self.offset
        largest = 2 * bias  # k contributions of values in [0, 2M] sum to at most 2kM
        sums: list[int] = []
        for index, plaintext in enumerate(plaintexts):
            wanted = min(self.slots, length - index * self.slots)
            if plaintext < 0 or plaintext.bit_length() > width * wanted:
                raise ValueError("a plaintext has more bits than its slots")
            slots = gmpy2.unpack(gmpy2.mpz(plaintext), width) if plaintext else []
            if slots and max(slots) > largest:
                raise ValueError(f"a slot sum exceeds {largest}, the most {contributors} contributions can reach")
            sums.extend(int(s) - bias for s in slots)
            sums.extend([-bias] * (wanted - len(slots)))
        try:
            return np.array(sums, dtype=np.int64)
        except OverflowError:
            raise ValueError("a slot sum does not fit in 64 bits") from None
