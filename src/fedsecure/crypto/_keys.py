"""X25519 key agreement (RFC 7748) over ``cryptography``.

SecAgg needs the private key of a dropped client to be Shamir-shared, so a
private key can be exported as its raw 32 bytes; that export is named
:meth:`KeyAgreementKey.raw_private_bytes` (the ``raw_`` prefix marks it as sharp,
as phe does) and nothing else ever serialises a private key.
"""

from __future__ import annotations

import hashlib
from typing import NoReturn

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from .._errors import CryptoError

__all__ = ["KeyAgreementKey", "PUBLIC_KEY_BYTES", "validate_public_key", "key_fingerprint"]

PUBLIC_KEY_BYTES = 32
PRIVATE_KEY_BYTES = 32


def key_fingerprint(public_key: bytes) -> str:
    """A short, non-secret fingerprint of a public key, for logs and reprs."""
    return hashlib.sha256(public_key).hexdigest()[:12]


def _load_public(public_key: bytes) -> X25519PublicKey:
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise CryptoError("invalid public key")
    return X25519PublicKey.from_public_bytes(public_key)


class KeyAgreementKey:
    """An X25519 private key generated from the OS CSPRNG.

    The object never shows its secret: ``repr`` gives the public fingerprint, and
    pickling is refused so that a key cannot leak through a generic state dump.
    """

    __slots__ = ("_private", "_public_bytes")

    def __init__(self, private: X25519PrivateKey) -> None:
        self._private = private
        self._public_bytes = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @classmethod
    def generate(cls) -> KeyAgreementKey:
        """A fresh key from the OS CSPRNG (through OpenSSL)."""
        return cls(X25519PrivateKey.generate())

    @classmethod
    def from_raw_private_bytes(cls, data: bytes) -> KeyAgreementKey:
        """Rebuild a key from 32 raw bytes, as reconstructed from Shamir shares."""
        if len(data) != PRIVATE_KEY_BYTES:
            raise CryptoError("invalid private key")
        return cls(X25519PrivateKey.from_private_bytes(data))

    def raw_private_bytes(self) -> bytes:
        """The raw 32-byte private key. Sharp: only for Shamir sharing (Bonawitz et al. 2017, §4, ShareKeys)."""
        return self._private.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )

    @property
    def public_bytes(self) -> bytes:
        """The raw 32-byte public key."""
        return self._public_bytes

    def exchange(self, peer_public_key: bytes) -> bytes:
        """The 32-byte X25519 shared secret with a peer's raw public key.

        Raises :class:`CryptoError` for a malformed or low-order public key (an
        all-zero shared secret), which an honest peer never sends.
        """
        try:
            return self._private.exchange(_load_public(peer_public_key))
        except ValueError:
            raise CryptoError("invalid public key") from None

    def __repr__(self) -> str:
        return f"<KeyAgreementKey public={key_fingerprint(self._public_bytes)}>"

    def __reduce__(self) -> NoReturn:
        raise TypeError("KeyAgreementKey holds a secret and cannot be pickled")


# The u-coordinates of every point of small order on Curve25519, as listed by
# libsodium (crypto_scalarmult/curve25519/ref10, ``has_small_order``): 0 and 1,
# the two points of order 8, p-1 (order 2), and the non-canonical encodings p
# and p+1. X25519 ignores the top bit of a public key (RFC 7748 §5), so keys are
# compared with that bit cleared. tests/test_crypto.py checks every entry against
# OpenSSL (each yields the all-zero shared secret, which it refuses).
_P = 2**255 - 19
_SMALL_ORDER_POINTS = frozenset(
    u.to_bytes(32, "little")
    for u in (
        0,
        1,
        int.from_bytes(bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"), "little"),
        int.from_bytes(bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"), "little"),
        _P - 1,
        _P,
        _P + 1,
    )
)


def validate_public_key(public_key: bytes) -> None:
    """Raise :class:`CryptoError` unless ``public_key`` is a usable X25519 public key.

    A point of small order makes every shared secret all-zero, which would turn
    a pairwise mask into a public constant; checking once, when the key is
    advertised, spares every peer the surprise. Every other 32-byte string is a
    valid X25519 public key (RFC 7748 §5), so a table of the seven small-order
    encodings is a complete check and costs no scalar multiplication.
    """
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise CryptoError("invalid public key: not 32 bytes")
    canonical_top = bytes([public_key[31] & 0x7F])
    if public_key[:31] + canonical_top in _SMALL_ORDER_POINTS:
        raise CryptoError("invalid public key: a point of small order")
