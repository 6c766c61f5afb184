"""AES-256-GCM envelopes for encrypted Shamir shares.

In SecAgg (Bonawitz et al., CCS 2017, §4, round ShareKeys) client u sends each
peer v its shares through the server, encrypted under a key only u and v can
derive. The associated data binds the sender, recipient, round and stage, so
the server cannot redirect an envelope to another client, replay it in another
round or present it at another stage: any such change fails authentication.
"""

from __future__ import annotations

import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .._errors import CryptoError

__all__ = ["seal", "open_envelope", "ENVELOPE_OVERHEAD"]

NONCE_BYTES = 12
TAG_BYTES = 16
ENVELOPE_OVERHEAD = NONCE_BYTES + TAG_BYTES
_AD_LABEL = b"fedsecure/v1/share-envelope"


def _associated_data(sender: int, recipient: int, round_id: int, stage: int) -> bytes:
    return _AD_LABEL + struct.pack("<IIQB", sender, recipient, round_id, stage)


def seal(key: bytes, plaintext: bytes, *, sender: int, recipient: int, round_id: int, stage: int) -> bytes:
    """Encrypt ``plaintext`` under a 32-byte ``key``; returns nonce || ciphertext || tag.

    The nonce is 96 random bits from the OS. Each share-encryption key is used
    for at most two envelopes (u to v and v to u), far below the random-nonce
    collision bound of NIST SP 800-38D §8.3.
    """
    nonce = os.urandom(NONCE_BYTES)
    ad = _associated_data(sender, recipient, round_id, stage)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, ad)


def open_envelope(key: bytes, envelope: bytes, *, sender: int, recipient: int, round_id: int, stage: int) -> bytes:
    """Decrypt and authenticate an envelope made by :func:`seal`.

    Every failure (wrong key, wrong binding, truncation, forgery) raises the same
    :class:`CryptoError`.
    """
    if len(envelope) < ENVELOPE_OVERHEAD:
        raise CryptoError("envelope failed to authenticate")
    ad = _associated_data(sender, recipient, round_id, stage)
    try:
        return AESGCM(key).decrypt(envelope[:NONCE_BYTES], envelope[NONCE_BYTES:], ad)
    except InvalidTag:
        raise CryptoError("envelope failed to authenticate") from None
