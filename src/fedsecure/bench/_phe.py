"""Per-value python-paillier (``phe``) as the reference for packed Paillier, timed with the same key in the same run."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import phe

from ..crypto import PaillierEncryptor, ciphertexts_to_bytes
from ..encoding import ClipMode, EncodingConfig, Quantizer, SlotLayout

__all__ = ["PerValuePhe", "PackedEncryption", "measure_per_value_phe", "measure_packed_encryption"]


@dataclass(frozen=True)
class PerValuePhe:
    """Seconds per value for ``phe``'s encrypt, homomorphic add and decrypt, and its bytes per value."""

    encrypt_s: float
    add_s: float
    decrypt_s: float
    bytes_per_value: int
    sample: int

    def round_seconds(self, clients: int, dim: int) -> float:
        """A whole per-value round, extrapolated: every client encrypts, the server adds, the key holder decrypts."""
        return clients * dim * self.encrypt_s + max(clients - 1, 0) * dim * self.add_s + dim * self.decrypt_s


@dataclass(frozen=True)
class PackedEncryption:
    """fedsecure's packing plus encryption of one update, and its size on the wire."""

    seconds: float
    ciphertexts: int
    bytes_per_param: float


def measure_per_value_phe(public: phe.PaillierPublicKey, private: phe.PaillierPrivateKey, sample: int) -> PerValuePhe:
    """Time ``public.encrypt(float)``, ``+`` and ``private.decrypt`` as a phe user calls them, on ``sample`` values."""
    rng = np.random.default_rng(0)  # noqa: csprng-ok (benchmark data, not a secret)
    values = rng.uniform(-1, 1, size=sample).tolist()
    started = time.perf_counter()
    encrypted = [public.encrypt(v) for v in values]
    encrypt_s = (time.perf_counter() - started) / sample
    started = time.perf_counter()
    sums: list[Any] = [e + e for e in encrypted]
    add_s = (time.perf_counter() - started) / sample
    started = time.perf_counter()
    for e in sums:
        private.decrypt(e)
    decrypt_s = (time.perf_counter() - started) / sample
    # A ciphertext is an integer modulo n^2: 2 * key_bits / 8 bytes.
    return PerValuePhe(encrypt_s, add_s, decrypt_s, 2 * ((public.n.bit_length() + 7) // 8), sample)


def measure_packed_encryption(public: phe.PaillierPublicKey, *, dim: int, clients: int) -> PackedEncryption:
    """Quantise, pack and encrypt one client's ``dim``-long update with the 32-bit ring fedsecure's rounds use.

    The time includes building the encryptor (its secret DJN base and table).
    """
    encoding = EncodingConfig.fit_scale(dimension=dim, clients=clients, clip=1.0, ring_bits=32,
                                        clip_mode=ClipMode.PER_COORDINATE)
    layout = SlotLayout.create(max_coordinate=encoding.max_coordinate, clients=clients,
                               plaintext_bits=int(public.n).bit_length() - 1)
    rng = np.random.default_rng(1)  # noqa: csprng-ok (benchmark data, not a secret)
    update = rng.uniform(-1, 1, size=dim)
    started = time.perf_counter()
    # The encryptor's fixed-base table is built once per key and reused for every update; it is timed here
    # anyway, so the comparison with per-value phe (which has no set-up) is conservative.
    encryptor = PaillierEncryptor(public)
    signed = encoding.ring.to_signed(Quantizer(encoding).encode(update).values)
    ciphertexts = encryptor.encrypt(layout.pack(signed))
    seconds = time.perf_counter() - started
    wire = len(ciphertexts_to_bytes(ciphertexts, public))
    return PackedEncryption(seconds, len(ciphertexts), wire / dim)
