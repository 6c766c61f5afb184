"""Ed25519 signatures (RFC 8032) over ``cryptography``: binding a contribution to its client.

Paillier aggregation needs each encrypted update tied to the client that made
it, so the key holder can refuse fabricated or duplicated contributions. The
signing keys are long-lived and registered out of band (a PKI); the registry of
public keys is public.
"""

from __future__ import annotations

from typing import NoReturn

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .._errors import CryptoError
from ._keys import key_fingerprint

__all__ = ["SigningKey", "verify_signature", "SIGNATURE_BYTES", "VERIFY_KEY_BYTES"]

SIGNATURE_BYTES = 64
VERIFY_KEY_BYTES = 32


class SigningKey:
    """An Ed25519 private key from the OS CSPRNG. No repr of the secret, no pickling."""

    __slots__ = ("_private", "_public_bytes")

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self._public_bytes = private.public_key().public_bytes_raw()

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, data: bytes) -> SigningKey:
        """The key whose raw 32-byte Ed25519 private key is ``data`` (as :meth:`private_bytes` gave it)."""
        try:
            return cls(Ed25519PrivateKey.from_private_bytes(data))
        except ValueError:
            raise CryptoError("not a 32-byte Ed25519 private key") from None

    def private_bytes(self) -> bytes:
        """The raw 32-byte private key, to store on its owner's device. Never send or log it."""
        return self._private.private_bytes_raw()

    @property
    def public_bytes(self) -> bytes:
        """The 32-byte verification key, for the registry."""
        return self._public_bytes

    def sign(self, data: bytes) -> bytes:
        return self._private.sign(data)

    def __repr__(self) -> str:
        return f"<SigningKey public={key_fingerprint(self._public_bytes)}>"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a SigningKey is secret and cannot be pickled")


def verify_signature(public_key: bytes, signature: bytes, data: bytes) -> None:
    """Raise :class:`CryptoError` unless ``signature`` is ``public_key``'s Ed25519 signature of ``data``."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, data)
    except (InvalidSignature, ValueError):
        raise CryptoError("signature does not verify") from None
