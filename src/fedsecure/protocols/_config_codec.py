"""The round configuration on the wire: :meth:`RoundConfig.canonical_bytes`, and its parser.

A transport in which the server and clients are separate processes (Flower)
sends each client the configuration it is asked to join. The bytes are the
canonical encoding the configuration's digest is computed over, so what a
client parses is exactly what it then binds its keys and masks to. Every
length is checked against the bytes present; whatever is wrong raises
:class:`~fedsecure.DecodeError` blaming the server.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import phe

from .._errors import ConfigurationError, CryptoError, DecodeError, PeerFault
from ..crypto import VERIFY_KEY_BYTES
from ..encoding import SlotLayout
from ._config import IdentityKeys, PaillierKeys, PaillierParameters, ProtocolKind, RoundConfig

__all__ = ["encode_round_config", "decode_round_config", "MAX_CONFIG_BYTES"]

#: The largest configuration a client parses: a cohort of 100,000 with identity keys and a 4096-bit Paillier key.
MAX_CONFIG_BYTES = 8 << 20
# The configuration always comes from the server; errors name it (PeerProtocolError's peer is typed as a client id).
_SERVER: Any = "server"
_ROUND_TAG = b"fedsecure/v1/round-config"
_PAILLIER_TAG = b"fedsecure/v2/paillier"
_ACTIVE_TAG = b"active"
_TASK_TAG = b"task"
_FIXED = struct.Struct("<QIQBII")
_LAYOUT = struct.Struct("<IIIQIII")


def encode_round_config(config: RoundConfig) -> bytes:
    """The configuration's canonical bytes (what its digest covers)."""
    return config.canonical_bytes()


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._offset = 0

    def take(self, size: int, what: str) -> bytes:
        if size < 0 or self._offset + size > len(self._data):
            raise DecodeError(PeerFault.MALFORMED, peer=_SERVER, detail=f"round configuration truncated in {what}")
        chunk = bytes(self._data[self._offset:self._offset + size])
        self._offset += size
        return chunk

    def unpack(self, layout: struct.Struct, what: str) -> tuple[int, ...]:
        return layout.unpack(self.take(layout.size, what))

    def starts_with(self, tag: bytes) -> bool:
        return bytes(self._data[self._offset:self._offset + len(tag)]) == tag

    @property
    def remaining(self) -> int:
        return len(self._data) - self._offset


def _registry(reader: _Reader, what: str) -> dict[int, bytes]:
    (count,) = reader.unpack(struct.Struct("<I"), what)
    if count * (4 + VERIFY_KEY_BYTES) > reader.remaining:
        raise DecodeError(PeerFault.MALFORMED, peer=_SERVER, detail=f"{what} declares {count} keys")
    entries = {}
    for _ in range(count):
        (client,) = reader.unpack(struct.Struct("<I"), what)
        entries[client] = reader.take(VERIFY_KEY_BYTES, what)
    if len(entries) != count:
        raise DecodeError(PeerFault.MALFORMED, peer=_SERVER, detail=f"{what} lists a client twice")
    return entries


def decode_round_config(data: bytes, *, max_bytes: int = MAX_CONFIG_BYTES, allow_insecure_keys: bool = False
                        ) -> RoundConfig:
    """Parse a configuration from :func:`encode_round_config`.

    Threat model: the bytes come from the server. The parsed configuration is
    validated as :class:`RoundConfig` validates any other (thresholds, graph,
    Paillier layout against the key); whether its parameters are acceptable to
    this client (the threshold it demands, the identity registry it trusts) is
    the caller's policy. A Paillier modulus below 2048 bits is refused unless
    ``allow_insecure_keys``.
    """
    if not isinstance(data, (bytes, bytearray)):
        raise DecodeError(PeerFault.MALFORMED, peer=_SERVER, detail="the round configuration is not bytes")
    if len(data) > max_bytes:
        raise DecodeError(PeerFault.OVERSIZED, peer=_SERVER, detail=f"round configuration of {len(data)} bytes")
    reader = _Reader(bytes(data))
    if reader.take(len(_ROUND_TAG), "tag") != _ROUND_TAG:
        raise DecodeError(PeerFault.UNSUPPORTED_VERSION, peer=_SERVER, detail="not a fedsecure/v1 round configuration")
    (name_length,) = reader.unpack(struct.Struct("<B"), "protocol")
    try:
        protocol = ProtocolKind(reader.take(name_length, "protocol").decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise DecodeError(PeerFault.MALFORMED, peer=_SERVER, detail="unknown protocol") from None
    round_id, count, vector_length, ring_bits, threshold, degree = reader.unpack(_FIXED, "sizes")
    if count * 4 > reader.remaining:
        raise DecodeError(PeerFault.MALFORMED, peer=_SERVER, detail=f"the configuration declares {count} clients")
    clients = tuple(int(c) for c in np.frombuffer(reader.take(4 * count, "clients"), dtype="<u4"))
    graph_seed = reader.take(32, "graph seed")
    encoding_digest = reader.take(32, "encoding digest")
    paillier = None
    identities = None
    try:
        if protocol.is_paillier:
            if reader.take(len(_PAILLIER_TAG), "Paillier tag") != _PAILLIER_TAG:
                raise DecodeError(PeerFault.MALFORMED, peer=_SERVER, detail="the Paillier parameters are missing")
            value_bits, headroom_bits, slots, offset, max_contributors, ciphertexts, minimum = reader.unpack(
                _LAYOUT, "slot layout")
            (modulus_bytes,) = reader.unpack(struct.Struct("<I"), "modulus")
            if modulus_bytes > 1024:
                raise DecodeError(PeerFault.MALFORMED, peer=_SERVER, detail=f"a {modulus_bytes}-byte modulus")
            n = int.from_bytes(reader.take(modulus_bytes, "modulus"), "little")
            registry = _registry(reader, "signing keys")
            colluders, decryption_threshold, holder_count = reader.unpack(struct.Struct("<III"), "key holders")
            if holder_count * (4 + 2 * modulus_bytes) > reader.remaining:
                raise DecodeError(PeerFault.MALFORMED, peer=_SERVER, detail=f"{holder_count} key holders declared")
            holders = tuple(int(c) for c in np.frombuffer(reader.take(4 * holder_count, "key holders"), dtype="<u4"))
            verification = [int.from_bytes(reader.take(2 * modulus_bytes, "verification keys"), "little")
                            for _ in range(holder_count + 1 if holder_count else 0)]
            keys = PaillierKeys(public_key=phe.PaillierPublicKey(n), signing_keys=registry, key_holders=holders,
                                decryption_threshold=decryption_threshold, insecure=allow_insecure_keys,
                                colluders=colluders, verification_base=verification[0] if verification else 0,
                                verification_keys=tuple(verification[1:]))
            layout = SlotLayout(value_bits=value_bits, headroom_bits=headroom_bits, slots=slots, offset=offset,
                                max_contributors=max_contributors)
            paillier = PaillierParameters(keys=keys, layout=layout, ciphertexts=ciphertexts, min_contributors=minimum)
        if reader.starts_with(_ACTIVE_TAG):
            reader.take(len(_ACTIVE_TAG), "active tag")
            identities = IdentityKeys(_registry(reader, "identity keys"))
        task_digest = b""
        if reader.starts_with(_TASK_TAG):
            reader.take(len(_TASK_TAG), "task tag")
            task_digest = reader.take(32, "task digest")
        if reader.remaining:
            raise DecodeError(PeerFault.MALFORMED, peer=_SERVER, detail=f"{reader.remaining} trailing bytes")
        config = RoundConfig(protocol=protocol, round_id=round_id, clients=clients, vector_length=vector_length,
                             ring_bits=ring_bits, threshold=threshold, degree=degree, graph_seed=graph_seed,
                             encoding_digest=encoding_digest, paillier=paillier, identities=identities,
                             task_digest=task_digest)
    except (ConfigurationError, CryptoError, ArithmeticError) as error:
        raise DecodeError(PeerFault.MALFORMED, peer=_SERVER, detail=f"invalid round configuration: {error}") from None
    if config.canonical_bytes() != bytes(data):
        raise DecodeError(PeerFault.MALFORMED, peer=_SERVER, detail="the round configuration is not canonical")
    return config
