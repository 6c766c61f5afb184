"""The public configuration of one aggregation round, shared by every party."""

from __future__ import annotations

import enum
import hashlib
import os
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NoReturn, Protocol

import numpy as np
import phe

from .._errors import ConfigurationError
from ..crypto import (
    MIN_SECURE_KEY_BITS,
    VERIFY_KEY_BYTES,
    MaskExpander,
    Purpose,
    SigningKey,
    ThresholdPaillierKey,
    derive_key,
)
from ..encoding import Ring, SlotLayout
from ._parameters import GraphParameters, ThreatModel, choose_parameters, complete_graph_parameters

__all__ = ["ProtocolKind", "RoundConfig", "MAX_CLIENT_ID", "PaillierKeys", "PaillierParameters", "RoundEncoding"]


class RoundEncoding(Protocol):
    """What a round needs from an encoding: :class:`EncodingConfig`, or distributed DP's encoding."""

    @property
    def clients(self) -> int: ...

    @property
    def vector_length(self) -> int: ...

    @property
    def ring(self) -> Ring: ...

    @property
    def max_coordinate(self) -> int: ...

    def digest(self) -> bytes: ...

MAX_CLIENT_ID = 2**32 - 2
_GRAPH_SEED_BYTES = 32


class ProtocolKind(enum.Enum):
    """Which aggregation protocol a round runs."""

    PLAINTEXT = "plaintext"
    SECAGG = "secagg"
    SECAGG_PLUS = "secagg+"
    PAILLIER = "paillier"
    PAILLIER_THRESHOLD = "paillier-threshold"

    @property
    def is_paillier(self) -> bool:
        return self in (ProtocolKind.PAILLIER, ProtocolKind.PAILLIER_THRESHOLD)


@dataclass(frozen=True, slots=True, eq=False)
class IdentityKeys:
    """The registry of every client's long-term Ed25519 verification key, for SecAgg's active-adversary variant.

    It is distributed out of band (a PKI the server does not control): with it a
    client can tell its peers' advertised keys and consistency signatures from
    ones the server made up (Bonawitz et al. 2017, §4, malicious-server setting).
    """

    verify_keys: Mapping[int, bytes]

    def __post_init__(self) -> None:
        keys = dict(self.verify_keys)
        if not keys or any(type(k) is not int or type(v) is not bytes or len(v) != VERIFY_KEY_BYTES
                           for k, v in keys.items()):
            raise ConfigurationError(f"identity keys must map client ids to {VERIFY_KEY_BYTES}-byte Ed25519 keys",
                                     parameter="identities")
        if len(set(keys.values())) != len(keys):
            raise ConfigurationError("two clients share an identity key", parameter="identities")
        object.__setattr__(self, "verify_keys", MappingProxyType(keys))

    def canonical_bytes(self) -> bytes:
        return struct.pack("<I", len(self.verify_keys)) + b"".join(
            struct.pack("<I", client) + key for client, key in sorted(self.verify_keys.items()))


class ClientIdentity:
    """A client's long-term identity in the active variant: its signing key, and every round it has joined.

    A client takes part in one configuration (its digest binds the round id,
    cohort, graph and keys registry) at most once. Otherwise a server could run
    the same configuration twice, collect consistency signatures on two
    different survivor sets, and replay them (Bonawitz et al. 2017, §4: each
    honest client signs one set per round). A deployment must persist
    :attr:`joined` across restarts and pass it back in.

    ``registry`` is required: it is the registry this client trusts, from a PKI
    the server does not control, and must list this client's own key. Without
    it a server could list the victim's real key beside keys of its own for
    every other cohort member and unmask the victim alone.
    """

    __slots__ = ("_signing_key", "_joined", "_registry")

    def __init__(self, signing_key: SigningKey, joined: Iterable[bytes] = (), *, registry: IdentityKeys) -> None:
        if not isinstance(registry, IdentityKeys):
            raise ConfigurationError("an identity needs the registry it trusts (IdentityKeys from the PKI)",
                                     parameter="registry")
        if signing_key.public_bytes not in registry.verify_keys.values():
            raise ConfigurationError("the identity's own key is not in the registry it trusts", parameter="registry")
        self._signing_key = signing_key
        self._joined = set(joined)
        self._registry = registry

    @property
    def public_bytes(self) -> bytes:
        """The 32-byte verification key the registry lists."""
        return self._signing_key.public_bytes

    @property
    def joined(self) -> frozenset[bytes]:
        """The configuration digests of every round this identity has taken part in."""
        return frozenset(self._joined)

    @property
    def registry(self) -> IdentityKeys:
        """The registry this client trusts (from the PKI, not from the server)."""
        return self._registry

    def check_registry(self, config: RoundConfig) -> None:
        """Refuse a configuration whose registry gives any cohort member another key than the trusted registry.

        Without this check the registry is whatever the server put in the configuration, and a server could list
        keys of its own for every other client (Bonawitz et al. 2017, §4 assumes a PKI the server does not control).
        """
        from .._errors import LocalProtocolError

        if config.identities is None:
            raise LocalProtocolError("an identity takes part only in rounds of the active variant, which carry "
                                     "the registry")
        trusted, offered = self._registry.verify_keys, config.identities.verify_keys
        wrong = [c for c in config.clients if trusted.get(c) != offered.get(c)]
        if wrong:
            raise LocalProtocolError(f"the round's identity registry differs from the trusted one for clients "
                                     f"{wrong[:5]}: refusing keys the server chose")

    def sign(self, data: bytes) -> bytes:
        return self._signing_key.sign(data)

    def private_bytes(self) -> bytes:
        """The raw Ed25519 private key, to persist on the client's own device with :attr:`joined`."""
        return self._signing_key.private_bytes()

    def claim(self, config: RoundConfig) -> None:
        """Record taking part in ``config``; refuse a configuration already joined."""
        from .._errors import LocalProtocolError

        if config.digest in self._joined:
            raise LocalProtocolError(f"this client already took part in round {config.round_id} of this "
                                     "configuration; joining it again would let a server replay its signatures")
        self._joined.add(config.digest)

    def __repr__(self) -> str:
        return f"<ClientIdentity {self._signing_key!r} joined={len(self._joined)}>"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a ClientIdentity holds a secret key and cannot be pickled")


def create_identities(clients: Iterable[int]) -> tuple[IdentityKeys, dict[int, ClientIdentity]]:
    """Fresh long-term Ed25519 identities for ``clients``, from the OS: the registry and the private identities.

    In a deployment each client makes its own key and registers only the public
    half with a PKI the server does not control; this helper is for simulations and tests. Each identity holds
    the registry, as each client would hold the PKI's copy.
    """
    keys = {int(c): SigningKey.generate() for c in clients}
    registry = IdentityKeys({c: key.public_bytes for c, key in keys.items()})
    return registry, {c: ClientIdentity(key, registry=registry) for c, key in keys.items()}


def active_threshold(degree: int) -> int:
    """The smallest threshold the active-adversary variant accepts for a closed neighbourhood of ``degree``.

    Bonawitz et al. 2017, §6.3: against a malicious server the consistency check
    needs t > 2k/3, so that two contradicting survivor sets cannot both collect t
    signatures when fewer than k/3 of the neighbourhood are corrupt.
    """
    return 2 * degree // 3 + 1


@dataclass(frozen=True, slots=True, eq=False)
class PaillierKeys:
    """The public key material of a Paillier deployment, set up once and reused across rounds.

    ``signing_keys`` is the registry of every client's Ed25519 verification key
    (distributed out of band, a PKI). ``colluders`` is the number of registered
    clients the deployment tolerates colluding with the server (from the threat
    model at setup): every decrypted total must hold at least ``colluders + 2``
    contributions, so at least two honest ones, and a separate key holder
    decrypts only with ``colluders + 1`` approvals, so at least one honest
    client checked the aggregate. For threshold decryption, ``key_holders``
    lists who holds shares of the decryption key, in share order; any
    ``decryption_threshold`` of them can decrypt, and ``2 t > l + colluders``
    so that no two contributor sets can both be decrypted in one round;
    ``verification_base`` and ``verification_keys`` check their partial
    decryptions (Shoup 2000). For a separate decryptor those are empty.
    ``insecure`` must be set to use a modulus below 2048 bits (tests only).
    """

    public_key: phe.PaillierPublicKey
    signing_keys: Mapping[int, bytes]
    key_holders: tuple[int, ...] = ()
    decryption_threshold: int = 0
    insecure: bool = False
    colluders: int = field(kw_only=True)
    verification_base: int = field(default=0, kw_only=True)
    verification_keys: tuple[int, ...] = field(default=(), kw_only=True)

    def __post_init__(self) -> None:
        if not isinstance(self.public_key, phe.PaillierPublicKey):
            raise ConfigurationError("public_key must be a phe.PaillierPublicKey", parameter="public_key")
        bits = int(self.public_key.n).bit_length()
        if bits < MIN_SECURE_KEY_BITS and not self.insecure:
            raise ConfigurationError(f"a {bits}-bit Paillier modulus is insecure; use key_bits >= "
                                     f"{MIN_SECURE_KEY_BITS}", parameter="key_bits")
        if any(type(k) is not bytes or len(k) != VERIFY_KEY_BYTES for k in self.signing_keys.values()):
            raise ConfigurationError("signing keys must be 32-byte Ed25519 keys", parameter="signing_keys")
        object.__setattr__(self, "signing_keys", MappingProxyType(dict(self.signing_keys)))
        if type(self.colluders) is not int or self.colluders < 0:
            raise ConfigurationError("colluders must be a non-negative integer", parameter="colluders")
        if self.colluders + 2 > len(self.signing_keys):
            raise ConfigurationError(
                f"tolerating {self.colluders} colluding clients needs at least {self.colluders + 2} registered "
                "clients (every total must hold two honest inputs)", parameter="corrupt_fraction")
        object.__setattr__(self, "key_holders", tuple(self.key_holders))
        object.__setattr__(self, "verification_keys", tuple(int(v) for v in self.verification_keys))
        holders = len(self.key_holders)
        if holders:
            low = (holders + self.colluders) // 2 + 1
            if not low <= self.decryption_threshold <= holders:
                # Each honest holder decrypts once per round, so two decryptions in one round would need
                # 2t - colluders <= l holders: 2t > l + colluders makes that impossible.
                raise ConfigurationError(
                    f"decryption_threshold must exceed (holders + colluders) / 2 = ({holders} + {self.colluders}) / 2 "
                    f"and not exceed {holders}: in [{low}, {holders}]", parameter="decryption_threshold")
            if len(self.verification_keys) != holders or not self.verification_base:
                raise ConfigurationError("threshold keys need the verification base and one verification key per "
                                         "holder", parameter="verification_keys")
        elif self.decryption_threshold or self.verification_keys or self.verification_base:
            raise ConfigurationError("a separate decryptor's keys have no threshold or verification keys",
                                     parameter="key_holders")

    @property
    def key_bits(self) -> int:
        return int(self.public_key.n).bit_length()

    @property
    def threshold_decryption(self) -> bool:
        return bool(self.key_holders)

    @property
    def min_contributors(self) -> int:
        """The fewest contributions any decrypted total may hold: the tolerated colluders plus two honest ones."""
        return self.colluders + 2

    @property
    def approval_quorum(self) -> int:
        """Approvals of one aggregate needed before it is decrypted.

        A separate key holder needs ``colluders + 1`` (at least one honest
        client checked every contribution); threshold holders need
        ``decryption_threshold`` (two different sets cannot both reach it).
        """
        return self.decryption_threshold if self.key_holders else self.colluders + 1

    def threshold_key(self) -> ThresholdPaillierKey:
        """The public side of the dealt threshold key, for checking and combining partial decryptions."""
        return ThresholdPaillierKey(public_key=self.public_key, holders=self.key_holders,
                                    threshold=self.decryption_threshold, verification_base=self.verification_base,
                                    verification_keys=self.verification_keys)

    def canonical_bytes(self) -> bytes:
        """The keys as bytes: modulus, registry, colluders, holders, threshold and verification keys."""
        n = int(self.public_key.n)
        width = (n.bit_length() + 7) // 8
        registry = b"".join(struct.pack("<I", c) + self.signing_keys[c] for c in sorted(self.signing_keys))
        verification = b"".join(int(v).to_bytes(2 * width, "little")
                                for v in ((self.verification_base, *self.verification_keys) if self.key_holders
                                          else ()))
        return b"".join((
            struct.pack("<I", width), n.to_bytes(width, "little"),
            struct.pack("<I", len(self.signing_keys)), registry,
            struct.pack("<III", self.colluders, self.decryption_threshold, len(self.key_holders)),
            np.asarray(self.key_holders, dtype="<u4").tobytes(), verification,
        ))


@dataclass(frozen=True, slots=True, eq=False)
class PaillierParameters:
    """The Paillier part of one round's public configuration: keys, slot layout and the contributor minimum."""

    keys: PaillierKeys
    layout: SlotLayout
    ciphertexts: int
    min_contributors: int

    def canonical_bytes(self) -> bytes:
        layout = self.layout
        return b"".join((
            b"fedsecure/v2/paillier",
            struct.pack("<IIIQIII", layout.value_bits, layout.headroom_bits, layout.slots, layout.offset,
                        layout.max_contributors, self.ciphertexts, self.min_contributors),
            self.keys.canonical_bytes(),
        ))


@dataclass(frozen=True, slots=True)
class RoundConfig:
    """Everything public about a round: protocol, cohort, sizes, threshold and neighbour graph.

    Build one with :meth:`create`. ``degree`` is the size of each closed
    neighbourhood (a client plus the peers it masks with and shares its secrets
    among); it equals the cohort size for SecAgg's complete graph. The graph of
    SecAgg+ is a random Harary graph whose order comes from ``graph_seed``,
    drawn from the OS by whoever creates the configuration (the server).

    Threat model: in the honest-but-curious setting the server draws
    ``graph_seed`` honestly. A malicious server could choose a seed that places
    its sybils around a victim; deriving the seed jointly, which would stop
    that, is not implemented (SECURITY.md, known gaps).
    """

    protocol: ProtocolKind
    round_id: int
    clients: tuple[int, ...]
    vector_length: int
    ring_bits: int
    threshold: int
    degree: int
    graph_seed: bytes
    encoding_digest: bytes
    paillier: PaillierParameters | None = None
    identities: IdentityKeys | None = None
    #: SHA-256 of the round's task (what each client trains from: the global model, the strategy's instructions),
    #: or empty. Bound into the digest, so clients handed different tasks derive keys whose masks never cancel.
    task_digest: bytes = b""
    _positions: dict[int, int] = field(init=False, repr=False, compare=False)
    _order: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _digest: bytes = field(init=False, repr=False, compare=False)
    _neighbour_cache: dict[int, frozenset[int]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.protocol, ProtocolKind):
            raise ConfigurationError("protocol must be a ProtocolKind", parameter="protocol")
        if not isinstance(self.round_id, int) or not 0 <= self.round_id < 2**64:
            raise ConfigurationError("round_id must fit in 64 bits", parameter="round_id")
        clients = tuple(self.clients)
        if not clients or list(clients) != sorted(set(clients)):
            raise ConfigurationError("clients must be a non-empty sorted tuple of distinct ids", parameter="clients")
        if clients[0] < 0 or clients[-1] > MAX_CLIENT_ID:
            raise ConfigurationError(f"client ids must lie in [0, {MAX_CLIENT_ID}]", parameter="clients")
        if self.vector_length < 1:
            raise ConfigurationError("vector_length must be positive", parameter="vector_length")
        Ring(self.ring_bits)
        if not 1 <= self.threshold <= min(self.degree, len(clients)):
            raise ConfigurationError("threshold must lie in [1, degree]", parameter="threshold")
        if self.degree < 1 or (self.degree < len(clients) and self.degree % 2 == 0):
            raise ConfigurationError("a sparse neighbourhood size must be odd", parameter="degree")
        if len(self.graph_seed) != _GRAPH_SEED_BYTES:
            raise ConfigurationError("graph_seed must be 32 bytes", parameter="graph_seed")
        if len(self.encoding_digest) != 32:
            raise ConfigurationError("encoding_digest must be 32 bytes", parameter="encoding_digest")
        if len(self.task_digest) not in (0, 32):
            raise ConfigurationError("task_digest must be empty or 32 bytes", parameter="task_digest")
        if self.protocol.is_paillier != (self.paillier is not None):
            raise ConfigurationError("Paillier rounds, and only they, carry Paillier parameters", parameter="paillier")
        if self.paillier is not None:
            self._check_paillier(self.paillier, clients)
        if self.identities is not None:
            if self.protocol not in (ProtocolKind.SECAGG, ProtocolKind.SECAGG_PLUS):
                raise ConfigurationError("the active-adversary variant is SecAgg's and SecAgg+'s",
                                         parameter="identities")
            missing = [c for c in clients if c not in self.identities.verify_keys]
            if missing:
                raise ConfigurationError(f"clients {missing[:5]} have no identity key", parameter="identities")
            if self.threshold < active_threshold(min(self.degree, len(clients))):
                raise ConfigurationError(
                    f"the active-adversary variant needs a threshold above 2k/3: at least "
                    f"{active_threshold(min(self.degree, len(clients)))}", parameter="threshold")
        if self.protocol is not ProtocolKind.PLAINTEXT and self.threshold < 2:
            # With t >= 2 every sum the server can ever unmask holds at least two inputs.
            raise ConfigurationError("secure aggregation needs a threshold of at least 2", parameter="threshold")
        order = self._ring_order(clients) if self.degree < len(clients) else clients
        object.__setattr__(self, "clients", clients)
        object.__setattr__(self, "_order", order)
        object.__setattr__(self, "_positions", {client: index for index, client in enumerate(order)})
        object.__setattr__(self, "_digest", hashlib.sha256(self.canonical_bytes()).digest())
        object.__setattr__(self, "_neighbour_cache", {})

    def _check_paillier(self, parameters: PaillierParameters, clients: tuple[int, ...]) -> None:
        # Whoever builds a configuration, its Paillier part must be the one create() would derive.
        if parameters.min_contributors != self.threshold or parameters.min_contributors < parameters.keys.min_contributors:
            raise ConfigurationError(f"min_contributors must equal the round threshold, at least the tolerated "
                                     f"colluders plus two ({parameters.keys.min_contributors})",
                                     parameter="min_contributors")
        if parameters.ciphertexts != parameters.layout.plaintexts_for(self.vector_length):
            raise ConfigurationError("the ciphertext count does not match the vector length and slot layout",
                                     parameter="ciphertexts")
        if parameters.layout.max_contributors < len(clients):
            raise ConfigurationError("the slots have headroom for fewer clients than the cohort", parameter="clients")
        if parameters.layout.slot_bits * parameters.layout.slots > parameters.keys.key_bits - 1:
            raise ConfigurationError("the slot layout does not fit the key", parameter="key_bits")
        layout = parameters.layout
        if layout != SlotLayout.create(max_coordinate=layout.offset, clients=layout.max_contributors,
                                       plaintext_bits=parameters.keys.key_bits - 1):
            raise ConfigurationError("the slot layout is not the one its bound, its contributors and the key "
                                     "determine", parameter="paillier")
        missing = [c for c in clients if c not in parameters.keys.signing_keys]
        if missing:
            raise ConfigurationError(f"clients {missing[:5]} have no registered signing key", parameter="signing_keys")
        if (self.protocol is ProtocolKind.PAILLIER_THRESHOLD) != parameters.keys.threshold_decryption:
            raise ConfigurationError(f"protocol {self.protocol.value} does not match the keys' trust arrangement",
                                     parameter="paillier")

    @classmethod
    def create(
        cls,
        *,
        protocol: ProtocolKind | str,
        clients: Iterable[int],
        encoding: RoundEncoding,
        round_id: int = 0,
        threat: ThreatModel | None = None,
        paillier: PaillierKeys | None = None,
        min_threshold: int = 0,
        identities: IdentityKeys | None = None,
        task_digest: bytes = b"",
    ) -> RoundConfig:
        """A configuration with the threshold and graph derived from ``threat``.

        SecAgg uses the complete graph; SecAgg+ the smallest random Harary graph
        meeting the bounds of :func:`~fedsecure.protocols.choose_parameters`;
        the plaintext baseline needs one client. Paillier rounds need ``paillier``
        (the deployment's public keys); their contributor minimum is the threshold
        SecAgg would use for the same cohort and ``threat``, and their slot
        layout comes from ``encoding``. The round is bound to
        ``encoding`` (its digest is part of the configuration), and a cohort
        larger than the encoding was sized for is refused, since its sum could wrap. ``task_digest`` binds
        the round's task (a transport's digest of what every client trains from).
        """
        try:
            protocol = ProtocolKind(protocol)  # "secagg+" as well as ProtocolKind.SECAGG_PLUS
        except ValueError:
            raise ConfigurationError(f"protocol must be one of {', '.join(p.value for p in ProtocolKind)}, got "
                                     f"{protocol!r}", parameter="protocol") from None
        cohort = tuple(sorted(set(int(c) for c in clients)))
        if len(cohort) > encoding.clients:
            raise ConfigurationError(
                f"the encoding is sized for {encoding.clients} clients; a cohort of {len(cohort)} could wrap the "
                "ring: raise `clients` in the EncodingConfig",
                parameter="clients",
            )
        threat = threat or ThreatModel()
        params: GraphParameters
        parameters: PaillierParameters | None = None
        if protocol is ProtocolKind.PLAINTEXT:
            params = GraphParameters(len(cohort), len(cohort), 1, 0.0, 0.0)
        elif protocol.is_paillier:
            if paillier is None:
                raise ConfigurationError(f"protocol {protocol.value} needs the deployment's Paillier keys",
                                         parameter="paillier")
            # Checked again by _check_paillier for configs built directly; here first, before any layout is sized.
            if paillier.threshold_decryption != (protocol is ProtocolKind.PAILLIER_THRESHOLD):
                raise ConfigurationError(f"protocol {protocol.value} does not match the keys' trust arrangement",
                                         parameter="paillier")
            missing = [c for c in cohort if c not in paillier.signing_keys]
            if missing:
                raise ConfigurationError(f"clients {missing[:5]} have no registered signing key",
                                         parameter="signing_keys")
            if len(cohort) < paillier.min_contributors:
                raise ConfigurationError(
                    f"a cohort of {len(cohort)} is below the {paillier.min_contributors} contributors the deployment "
                    f"requires ({paillier.colluders} tolerated colluders plus two honest clients)", parameter="clients")
            params = complete_graph_parameters(len(cohort), threat)
            min_threshold = max(min_threshold, paillier.min_contributors)
        elif protocol is ProtocolKind.SECAGG:
            if identities is not None and threat.corrupt_fraction >= 1 / 3:
                raise ConfigurationError("the active-adversary variant needs fewer than a third of the clients "
                                         "corrupt", parameter="corrupt_fraction")
            params = complete_graph_parameters(len(cohort), threat)
        else:
            # The active variant needs a different choice: t > 2k/3, and secrecy against 2t - k corrupt neighbours.
            params = choose_parameters(len(cohort), threat, active=identities is not None)
        threshold = max(params.threshold, min_threshold)
        if identities is not None:
            # The active-adversary variant: t > 2k/3 (Bonawitz et al. 2017, §6.3).
            threshold = max(threshold, active_threshold(min(params.degree, len(cohort))))
        if threshold > min(params.degree, len(cohort)):
            raise ConfigurationError(f"a threshold of {threshold} exceeds the neighbourhood of "
                                     f"{min(params.degree, len(cohort))} clients", parameter="min_threshold")
        if paillier is not None and protocol.is_paillier:
            layout = SlotLayout.create(max_coordinate=encoding.max_coordinate, clients=encoding.clients,
                                       plaintext_bits=paillier.key_bits - 1)
            parameters = PaillierParameters(keys=paillier, layout=layout,
                                            ciphertexts=layout.plaintexts_for(encoding.vector_length),
                                            min_contributors=threshold)
        seed = os.urandom(_GRAPH_SEED_BYTES) if params.degree < len(cohort) else bytes(_GRAPH_SEED_BYTES)
        return cls(protocol=protocol, round_id=round_id, clients=cohort, vector_length=encoding.vector_length,
                   ring_bits=encoding.ring.bits, threshold=threshold,
                   degree=min(params.degree, len(cohort)), graph_seed=seed, encoding_digest=encoding.digest(),
                   paillier=parameters, identities=identities, task_digest=task_digest)

    @property
    def ring(self) -> Ring:
        return Ring(self.ring_bits)

    @property
    def active(self) -> bool:
        """True for SecAgg's active-adversary variant: signed keys and a consistency check."""
        return self.identities is not None

    @property
    def complete_graph(self) -> bool:
        return self.degree >= len(self.clients)

    @property
    def digest(self) -> bytes:
        """SHA-256 over the canonical encoding of every field; used as the HKDF salt of the round."""
        return self._digest

    def canonical_bytes(self) -> bytes:
        """The configuration as bytes, field by field, fixed-width and length-prefixed."""
        return b"".join(
            (
                b"fedsecure/v1/round-config",
                struct.pack("<B", len(self.protocol.value)),
                self.protocol.value.encode(),
                struct.pack("<QIQBII", self.round_id, len(self.clients), self.vector_length, self.ring_bits,
                            self.threshold, self.degree),
                np.asarray(self.clients, dtype="<u4").tobytes(),
                self.graph_seed,
                self.encoding_digest,
                self.paillier.canonical_bytes() if self.paillier is not None else b"",
                b"active" + self.identities.canonical_bytes() if self.identities is not None else b"",
                b"task" + self.task_digest if self.task_digest else b"",
            )
        )

    def _ring_order(self, clients: tuple[int, ...]) -> tuple[int, ...]:
        # A Fisher-Yates shuffle driven by AES-CTR keyed from the public graph seed,
        # so every party derives the same order (Bell et al. 2020, random graph).
        key = derive_key(self.graph_seed, purpose=Purpose.NEIGHBOUR_GRAPH, salt=b"", round_id=self.round_id,
                         context=(len(clients),))
        words = MaskExpander(len(clients), np.uint64).expand(key)
        order = list(clients)
        for i in range(len(order) - 1, 0, -1):
            j = int(words[i]) % (i + 1)  # Bias below 2^-32 for cohorts under 2^32; the order is public.
            order[i], order[j] = order[j], order[i]
        return tuple(order)

    def neighbours(self, client: int) -> frozenset[int]:
        """The peers of ``client`` (itself excluded) in the round's graph."""
        if client not in self._positions:
            raise ConfigurationError(f"client {client} is not in the cohort", parameter="clients")
        cached = self._neighbour_cache.get(client)
        if cached is None:
            if self.complete_graph:
                cached = frozenset(c for c in self.clients if c != client)
            else:
                n = len(self._order)
                position = self._positions[client]
                half = (self.degree - 1) // 2
                cached = frozenset(
                    self._order[(position + offset) % n] for offset in range(-half, half + 1) if offset != 0
                )
            self._neighbour_cache[client] = cached
        return cached

    def in_cohort(self, client: int) -> bool:
        return client in self._positions
