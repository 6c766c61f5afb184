"""HKDF-SHA256 with mandatory purpose labels (domain separation).

Every key fedsecure derives names its purpose, the round and the parties it
belongs to in HKDF's ``info`` (RFC 5869 §3.2), so that a key derived for one
job (say, encrypting shares for the pair (3, 7) in round 12) can never equal a
key derived for another job (masking for the same pair, or the same job in
round 13). The salt is the round configuration's digest, which binds every
key to the exact public parameters of its round.
"""

from __future__ import annotations

import enum
import hashlib
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["Purpose", "derive_key", "seed_commitment"]

KEY_BYTES = 32


class Purpose(enum.Enum):
    """What a derived key is for. The value is the label written into ``info``."""

    SHARE_ENCRYPTION = b"fedsecure/v1/share-encryption"
    PAIRWISE_MASK = b"fedsecure/v1/pairwise-mask"
    SELF_MASK = b"fedsecure/v1/self-mask"
    NEIGHBOUR_GRAPH = b"fedsecure/v1/neighbour-graph"
    DP_ROTATION = b"fedsecure/v1/dp-rotation"


def _info(purpose: Purpose, round_id: int, context: tuple[int, ...]) -> bytes:
    # The label is length-prefixed and every integer has a fixed width, so two
    # different (purpose, round, context) triples never serialise to the same bytes.
    label = purpose.value
    return struct.pack(f"<H{len(label)}sQH{len(context)}Q", len(label), label, round_id, len(context), *context)


def derive_key(
    secret: bytes,
    *,
    purpose: Purpose,
    salt: bytes,
    round_id: int,
    context: tuple[int, ...] = (),
) -> bytes:
    """Derive a 256-bit key from ``secret`` for one purpose, round and context.

    ``context`` holds the client ids the key belongs to (for pairwise keys, the
    pair in ascending order, so both ends derive the same key). Threat model: the
    output is pseudorandom as long as ``secret`` has 256 bits of entropy unknown
    to the adversary; reusing one purpose label for two jobs would break the
    independence that the masking proof of Bonawitz et al. (CCS 2017, §6) relies on.
    """
    if not secret:
        raise ValueError("derive_key needs a non-empty secret")
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_BYTES,
        salt=salt,
        info=_info(purpose, round_id, context),
    )
    return hkdf.derive(secret)


_COMMITMENT_LABEL = b"fedsecure/v1/seed-commitment"


def seed_commitment(seed: bytes, *, salt: bytes, round_id: int, owner: int) -> bytes:
    """SHA-256 commitment to a 256-bit seed, bound to the round and its owner.

    The server checks a reconstructed self-mask seed against it, so corrupted
    shares abort the round instead of silently corrupting the sum. Hiding: the
    seed is uniform and 256 bits long, so the digest reveals nothing usable about it.
    """
    header = struct.pack("<H", len(_COMMITMENT_LABEL)) + _COMMITMENT_LABEL + struct.pack("<QQ", round_id, owner)
    return hashlib.sha256(header + salt + seed).digest()
