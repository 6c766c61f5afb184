"""SecAgg (complete graph) and SecAgg+ (sparse graph) as one sans-IO implementation.

The steps follow Bonawitz et al., "Practical Secure Aggregation for
Privacy-Preserving Machine Learning", CCS 2017, §4 (Figure 4, honest-but-curious
server), restricted to each client's neighbourhood as in Bell et al., "Secure
Single-Server Aggregation with (Poly)Logarithmic Overhead", CCS 2020, §3. With
the complete graph the neighbourhood is the whole cohort and the two coincide.

Sign convention: for a pair u < v, client u adds PRG(s_uv) and v subtracts it.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .._errors import CryptoError, LocalProtocolError, PeerFault, PeerProtocolError, RoundAborted
from ..crypto import (
    verify_signature,
    ENVELOPE_OVERHEAD,
    SHARE_BYTES,
    KeyAgreementKey,
    MaskExpander,
    Purpose,
    derive_key,
    open_envelope,
    reconstruct_secret,
    seal,
    seed_commitment,
    share_from_bytes,
    share_to_bytes,
    split_secrets,
    validate_public_key,
)
from ..encoding import EncodedUpdate, Ring
from ._config import RoundConfig
from ._config import ClientIdentity, active_threshold
from ._messages import (
    AdvertiseKeys,
    ConsistencyRequest,
    ConsistencySignature,
    SurvivorSignature,
    ClientMessage,
    EncryptedShare,
    KeysBroadcast,
    MaskedInput,
    Message,
    PublicKeys,
    RoundStart,
    ServerMessage,
    ShareKeys,
    SharesDelivery,
    ShareValue,
    UnmaskingShares,
    UnmaskRequest,
)
from ._session import SERVER, ClientSession, ServerSession
from ._stages import ClientState, Stage

__all__ = ["SecAggClientSession", "SecAggServerSession", "ENVELOPE_BYTES", "apply_masks", "keys_payload",
           "consistency_payload", "consistency_quorum"]

_SHARE_PLAINTEXT_BYTES = 2 * SHARE_BYTES
ENVELOPE_BYTES = _SHARE_PLAINTEXT_BYTES + ENVELOPE_OVERHEAD


def _pair(u: int, v: int) -> tuple[int, int]:
    return (u, v) if u < v else (v, u)


def _x(client: int) -> int:
    # Shamir x-coordinates must be non-zero: client id + 1.
    return client + 1


def _share_key(config: RoundConfig, private: KeyAgreementKey, peer_public: bytes, u: int, v: int) -> bytes:
    return derive_key(private.exchange(peer_public), purpose=Purpose.SHARE_ENCRYPTION, salt=config.digest,
                      round_id=config.round_id, context=_pair(u, v))


def _pairwise_mask_key(config: RoundConfig, private: KeyAgreementKey, peer_public: bytes, u: int, v: int) -> bytes:
    return derive_key(private.exchange(peer_public), purpose=Purpose.PAIRWISE_MASK, salt=config.digest,
                      round_id=config.round_id, context=_pair(u, v))


def _self_mask_key(config: RoundConfig, seed: bytes, u: int) -> bytes:
    return derive_key(seed, purpose=Purpose.SELF_MASK, salt=config.digest, round_id=config.round_id, context=(u,))


def keys_payload(config: RoundConfig, owner: int, cipher_public_key: bytes, mask_public_key: bytes) -> bytes:
    """What a client signs in the active variant's AdvertiseKeys: its two keys, bound to itself and the round."""
    return (b"fedsecure/v1/advertise-keys" + config.digest + struct.pack("<QI", config.round_id, owner)
            + cipher_public_key + mask_public_key)


def consistency_payload(config: RoundConfig, survivors: Sequence[int]) -> bytes:
    """What a client signs in ConsistencyCheck: the survivor set U3 it was shown, bound to the round."""
    ordered = sorted(survivors)
    return (b"fedsecure/v1/consistency" + config.digest + struct.pack("<QI", config.round_id, len(ordered))
            + np.asarray(ordered, dtype="<u4").tobytes())


def consistency_quorum(config: RoundConfig) -> int:
    """How many clients must sign the same survivor set before anyone unmasks: more than 2/3 of the cohort.

    Each honest client signs one set per round, so with fewer than a third of the
    cohort corrupt, two different sets can never both reach this quorum
    (Bonawitz et al. 2017, §4, ConsistencyCheck, with t > 2n/3 as in §6.3).
    """
    return active_threshold(len(config.clients))


def _server_fault(fault: PeerFault, detail: str) -> PeerProtocolError:
    return PeerProtocolError(fault, peer=SERVER, detail=detail)  # type: ignore[arg-type]


def apply_masks(values: np.ndarray, ring: Ring, self_mask_key: bytes,
                pairwise: Sequence[tuple[bytes, bool]]) -> np.ndarray:
    """y = x + PRG(self_mask_key) + sum of (+/-) PRG(pairwise key), reduced into ``ring``.

    This is the whole of MaskedInputCollection's arithmetic (Bonawitz et al.
    2017, §4): each ``(key, add)`` pair adds its mask when ``add`` is true and
    subtracts it otherwise. One AES-CTR pass and one vector addition per key.
    """
    masked = np.array(values, dtype=ring.dtype, copy=True)
    MaskExpander(masked.size, ring.dtype).fold_into(masked, [(self_mask_key, True), *pairwise])
    return ring.reduce(masked)


class SecAggClientSession(ClientSession):
    """A client of SecAgg/SecAgg+.

    Threat model: against an honest-but-curious server colluding with fewer than
    ``threshold`` of this client's neighbours, the server learns nothing about
    this client's input beyond the sum (Bonawitz et al. 2017, Theorem 6.3). The
    session refuses to unmask for fewer than ``threshold`` survivors and never
    reveals both shares of one peer.
    """

    def __init__(self, config: RoundConfig, client_id: int, update: EncodedUpdate,
                 identity: ClientIdentity | None = None) -> None:
        super().__init__(config, client_id, update)
        if config.identities is not None:
            # The active-adversary variant: the client's long-term key must be the one the registry lists,
            # and it joins each configuration once.
            if identity is None:
                raise LocalProtocolError("the active-adversary variant needs this client's identity")
            if identity.public_bytes != config.identities.verify_keys[client_id]:
                raise LocalProtocolError("this identity key is not the one registered for this client")
            identity.check_registry(config)
            identity.claim(config)
        elif identity is not None:
            # A client that holds an identity expects the active variant; a passive configuration is a downgrade.
            raise LocalProtocolError("this client requires the active-adversary variant; the round is not one")
        self._identity = identity
        self._signed_survivors: tuple[int, ...] | None = None
        self._neighbours = config.neighbours(client_id)
        # Two fresh key pairs per round (Bonawitz et al. 2017, §4, AdvertiseKeys):
        # c_u for share encryption, s_u for pairwise masks.
        self._cipher_key: KeyAgreementKey | None = KeyAgreementKey.generate()
        self._mask_key: KeyAgreementKey | None = KeyAgreementKey.generate()
        self._self_mask_seed: bytes | None = None
        self._peer_keys: dict[int, PublicKeys] = {}
        self._own_shares: tuple[int, int] | None = None
        self._held_shares: dict[int, tuple[int, int]] = {}
        self._sharing_peers: frozenset[int] = frozenset()
        self._unreadable: set[int] = set()
        # c_uv for each neighbour, derived once in ShareKeys and reused to open v's envelope.
        self._envelope_keys: dict[int, bytes] = {}

    def _handle(self, message: Message) -> list[ClientMessage]:
        if isinstance(message, RoundStart):
            return [self._advertise_keys()]
        if isinstance(message, KeysBroadcast):
            return [self._share_keys(message)]
        if isinstance(message, SharesDelivery):
            return [self._masked_input(message)]
        if isinstance(message, ConsistencyRequest):
            return [self._consistency(message)]
        if isinstance(message, UnmaskRequest):
            return [self._unmask(message)]
        raise _server_fault(PeerFault.OUT_OF_STAGE, type(message).__name__)

    def _secret_keys(self) -> tuple[KeyAgreementKey, KeyAgreementKey]:
        if self._cipher_key is None or self._mask_key is None:
            raise _server_fault(PeerFault.OUT_OF_STAGE, "the session's keys are gone")
        return self._cipher_key, self._mask_key

    def _advertise_keys(self) -> AdvertiseKeys:
        cipher_key, mask_key = self._secret_keys()
        signature = b""
        if self._identity is not None:
            # Bonawitz et al. 2017, §4, AdvertiseKeys (malicious setting): sigma_u over both public keys.
            signature = self._identity.sign(keys_payload(self._config, self._client_id, cipher_key.public_bytes,
                                                         mask_key.public_bytes))
        return AdvertiseKeys(round_id=self._config.round_id, sender=self._client_id,
                             cipher_public_key=cipher_key.public_bytes, mask_public_key=mask_key.public_bytes,
                             signature=signature)

    def _share_keys(self, message: KeysBroadcast) -> ShareKeys:
        config, me = self._config, self._client_id
        cipher_key, mask_key = self._secret_keys()
        owners = {k.owner for k in message.keys}
        if me not in owners or not owners <= self._neighbours | {me}:
            raise _server_fault(PeerFault.BAD_PUBLIC_KEY, "key list must be this client and its neighbours")
        mine = next(k for k in message.keys if k.owner == me)
        if (mine.cipher_public_key, mine.mask_public_key) != (cipher_key.public_bytes, mask_key.public_bytes):
            raise _server_fault(PeerFault.BAD_PUBLIC_KEY, "this client's own keys were altered")
        all_keys = [k.cipher_public_key for k in message.keys] + [k.mask_public_key for k in message.keys]
        if len(set(all_keys)) != len(all_keys):
            # Bonawitz et al. 2017, §4, ShareKeys: all public keys must be distinct.
            raise _server_fault(PeerFault.BAD_PUBLIC_KEY, "a public key appears twice")
        if len(owners) < config.threshold:
            raise _server_fault(PeerFault.BAD_SURVIVOR_SET,
                                f"{len(owners)} clients advertised keys, threshold {config.threshold}")
        if config.identities is not None:
            # Every forwarded key must carry its owner's signature: a server cannot substitute its own keys.
            for k in message.keys:
                try:
                    verify_signature(config.identities.verify_keys[k.owner], k.signature,
                                     keys_payload(config, k.owner, k.cipher_public_key, k.mask_public_key))
                except CryptoError:
                    raise _server_fault(PeerFault.BAD_SIGNATURE, f"client {k.owner}'s keys are not signed by it") from None
        self._peer_keys = {k.owner: k for k in message.keys if k.owner != me}
        holders = sorted(owners)
        self._self_mask_seed = os.urandom(32)
        shares = split_secrets([self._self_mask_seed, mask_key.raw_private_bytes()], threshold=config.threshold,
                               xs=[_x(h) for h in holders])
        envelopes = []
        for index, holder in enumerate(holders):
            pair_shares = (shares[0][index], shares[1][index])
            if holder == me:
                self._own_shares = pair_shares
                continue
            try:
                key = _share_key(config, cipher_key, self._peer_keys[holder].cipher_public_key, me, holder)
            except CryptoError:
                raise PeerProtocolError(PeerFault.BAD_PUBLIC_KEY, peer=holder) from None
            self._envelope_keys[holder] = key
            plaintext = share_to_bytes(pair_shares[0]) + share_to_bytes(pair_shares[1])
            envelope = seal(key, plaintext, sender=me, recipient=holder, round_id=config.round_id,
                            stage=int(Stage.SHARE_KEYS))
            envelopes.append(EncryptedShare(peer=holder, envelope=envelope))
        commitment = seed_commitment(self._self_mask_seed, salt=config.digest, round_id=config.round_id, owner=me)
        return ShareKeys(round_id=config.round_id, sender=me, seed_commitment=commitment, shares=tuple(envelopes))

    def _masked_input(self, message: SharesDelivery) -> MaskedInput:
        config, me = self._config, self._client_id
        _, mask_key = self._secret_keys()
        senders = [s.peer for s in message.shares]
        if not set(senders) <= self._peer_keys.keys():
            raise _server_fault(PeerFault.BAD_SHARE, "shares from a client that advertised no keys to us")
        if len(senders) + 1 < config.threshold:
            raise _server_fault(PeerFault.BAD_SURVIVOR_SET,
                                f"{len(senders) + 1} clients shared keys, threshold {config.threshold}")
        self._sharing_peers = frozenset(senders)
        for share in message.shares:
            v = share.peer
            try:
                plaintext = open_envelope(self._envelope_keys[v], share.envelope, sender=v, recipient=me,
                                          round_id=config.round_id, stage=int(Stage.SHARE_KEYS))
                if len(plaintext) != _SHARE_PLAINTEXT_BYTES:
                    raise CryptoError("envelope failed to authenticate")
                self._held_shares[v] = (share_from_bytes(plaintext[:SHARE_BYTES]),
                                        share_from_bytes(plaintext[SHARE_BYTES:]))
            except CryptoError:
                # One bad envelope must not take this honest client down with it: it still masks
                # with v (the server counts v in U2) but holds no share of v's secrets. If those
                # are needed, the server aborts naming v (too few shares).
                self._unreadable.add(v)
        if self._self_mask_seed is None:
            raise _server_fault(PeerFault.OUT_OF_STAGE, "no self-mask seed")
        pairwise: list[tuple[bytes, bool]] = []
        for v in senders:
            try:
                key = _pairwise_mask_key(config, mask_key, self._peer_keys[v].mask_public_key, me, v)
            except CryptoError:
                raise PeerProtocolError(PeerFault.BAD_PUBLIC_KEY, peer=v) from None
            pairwise.append((key, me < v))
        masked = apply_masks(self._encoded_values(), config.ring,
                             _self_mask_key(config, self._self_mask_seed, me), pairwise)
        return MaskedInput(round_id=config.round_id, sender=me, vector=masked)

    def _consistency(self, message: ConsistencyRequest) -> ConsistencySignature:
        config, me = self._config, self._client_id
        if self._identity is None:
            raise _server_fault(PeerFault.OUT_OF_STAGE, "a consistency check outside the active variant")
        survivors = set(message.survivors)
        if me not in survivors or not survivors <= set(config.clients):
            raise _server_fault(PeerFault.BAD_SURVIVOR_SET, "the survivor set must include this client, in the cohort")
        if len(survivors) < consistency_quorum(config):
            raise _server_fault(PeerFault.BAD_SURVIVOR_SET,
                                f"{len(survivors)} survivors, below the quorum {consistency_quorum(config)}")
        # Bonawitz et al. 2017, §4, ConsistencyCheck: sign U3 once; only this set can be unmasked later.
        self._signed_survivors = tuple(sorted(survivors))
        return ConsistencySignature(round_id=config.round_id, sender=me,
                                    signature=self._identity.sign(consistency_payload(config, self._signed_survivors)))

    def _check_consistency(self, message: UnmaskRequest) -> None:
        # Unmask only if a quorum of the survivors signed the very set this client signed (§4, Unmasking).
        config = self._config
        signed = self._signed_survivors
        if signed is None or config.identities is None:
            raise _server_fault(PeerFault.OUT_OF_STAGE, "unmasking before the consistency check")
        holdings = set(self._sharing_peers) | {self._client_id}
        if set(message.survivors) != set(signed) & holdings:
            raise _server_fault(PeerFault.BAD_SURVIVOR_SET, "the survivors differ from the set this client signed")
        payload = consistency_payload(config, signed)
        signers = set()
        for entry in message.signatures:
            if entry.owner not in signed:
                raise _server_fault(PeerFault.BAD_SIGNATURE, f"a consistency signature from {entry.owner}, not a survivor")
            try:
                verify_signature(config.identities.verify_keys[entry.owner], entry.signature, payload)
            except CryptoError:
                raise _server_fault(PeerFault.BAD_SIGNATURE,
                                    f"client {entry.owner}'s consistency signature is not over this set") from None
            signers.add(entry.owner)
        if len(signers) < consistency_quorum(config):
            raise _server_fault(PeerFault.BAD_SURVIVOR_SET,
                                f"{len(signers)} consistency signatures, quorum {consistency_quorum(config)}")

    def _unmask(self, message: UnmaskRequest) -> UnmaskingShares:
        config, me = self._config, self._client_id
        if config.identities is not None:
            self._check_consistency(message)
        holdings = set(self._sharing_peers) | {me}
        survivors = set(message.survivors)
        if me not in survivors or not survivors <= holdings:
            raise _server_fault(PeerFault.BAD_SURVIVOR_SET, "survivors must include this client and only its peers")
        if len(survivors) < config.threshold:
            # Bonawitz et al. 2017, §4, Unmasking: refuse when |U4| < t.
            raise _server_fault(PeerFault.BAD_SURVIVOR_SET,
                                f"{len(survivors)} survivors, threshold {config.threshold}")
        if self._own_shares is None:
            raise _server_fault(PeerFault.OUT_OF_STAGE, "no shares held")
        held = dict(self._held_shares)
        held[me] = self._own_shares
        # Survivors get their self-mask seed share revealed; the dropped, their key share. Never both.
        self_mask_shares = tuple(ShareValue(owner=v, value=held[v][0]) for v in sorted(survivors) if v in held)
        key_shares = tuple(ShareValue(owner=v, value=held[v][1]) for v in sorted(holdings - survivors) if v in held)
        return UnmaskingShares(round_id=config.round_id, sender=me, self_mask_shares=self_mask_shares,
                               key_shares=key_shares)

    def _export_fields(self) -> dict[str, Any]:
        def key_bytes(key: KeyAgreementKey | None) -> str | None:
            return None if key is None else key.raw_private_bytes().hex()

        return {
            "cipher_key": key_bytes(self._cipher_key),
            "mask_key": key_bytes(self._mask_key),
            "self_mask_seed": None if self._self_mask_seed is None else self._self_mask_seed.hex(),
            "peer_keys": [[k.owner, k.cipher_public_key.hex(), k.mask_public_key.hex(), k.signature.hex()]
                          for k in self._peer_keys.values()],
            "own_shares": None if self._own_shares is None else [hex(v) for v in self._own_shares],
            "held_shares": [[v, hex(a), hex(b)] for v, (a, b) in self._held_shares.items()],
            "sharing_peers": sorted(self._sharing_peers),
            "unreadable": sorted(self._unreadable),
            "envelope_keys": [[v, key.hex()] for v, key in self._envelope_keys.items()],
            "signed_survivors": None if self._signed_survivors is None else list(self._signed_survivors),
        }

    def _restore_fields(self, fields: Mapping[str, Any], credentials: Any) -> None:
        config = self._config
        finished = self._state in (ClientState.DONE, ClientState.ABORTED)
        if config.identities is not None and not finished:
            if not isinstance(credentials, ClientIdentity):
                raise LocalProtocolError("the active-adversary variant needs this client's identity")
            if credentials.public_bytes != config.identities.verify_keys[self._client_id]:
                raise LocalProtocolError("this identity key is not the one registered for this client")
            if config.digest not in credentials.joined:
                raise LocalProtocolError("this identity never joined the saved round")
            credentials.check_registry(config)
        elif config.identities is None and credentials is not None:
            raise LocalProtocolError("this client requires the active-adversary variant; the round is not one")
        self._identity = credentials if config.identities is not None and not finished else None
        self._neighbours = config.neighbours(self._client_id)

        def key(value: str | None) -> KeyAgreementKey | None:
            return None if value is None else KeyAgreementKey.from_raw_private_bytes(bytes.fromhex(value))

        self._cipher_key = key(fields["cipher_key"])
        self._mask_key = key(fields["mask_key"])
        seed = fields["self_mask_seed"]
        self._self_mask_seed = None if seed is None else bytes.fromhex(seed)
        self._peer_keys = {}
        for owner, cipher, mask, signature in fields["peer_keys"]:
            self._peer_keys[int(owner)] = PublicKeys(owner=int(owner), cipher_public_key=bytes.fromhex(cipher),
                                                     mask_public_key=bytes.fromhex(mask),
                                                     signature=bytes.fromhex(signature))
        own = fields["own_shares"]
        self._own_shares = None if own is None else (int(own[0], 16), int(own[1], 16))
        self._held_shares = {int(v): (int(a, 16), int(b, 16)) for v, a, b in fields["held_shares"]}
        self._sharing_peers = frozenset(int(v) for v in fields["sharing_peers"])
        self._unreadable = {int(v) for v in fields["unreadable"]}
        self._envelope_keys = {int(v): bytes.fromhex(k) for v, k in fields["envelope_keys"]}
        signed = fields["signed_survivors"]
        self._signed_survivors = None if signed is None else tuple(int(v) for v in signed)

    @property
    def unreadable_envelopes(self) -> frozenset[int]:
        """Peers whose share envelope failed to authenticate (this client holds no shares of theirs)."""
        return frozenset(self._unreadable)

    def _discard_secrets(self) -> None:
        super()._discard_secrets()
        self._cipher_key = None
        self._mask_key = None
        self._identity = None
        self._self_mask_seed = None
        self._own_shares = None
        self._held_shares = {}
        self._envelope_keys = {}


class SecAggServerSession(ServerSession):
    """The SecAgg/SecAgg+ server: routes keys and envelopes, sums masked inputs, unmasks only the total.

    Memory: the masked inputs are added into one running sum as they arrive, so
    the server holds O(vector length) numbers plus O(clients x degree) keys and
    envelopes, whatever the number of clients.
    """

    def __init__(self, config: RoundConfig) -> None:
        super().__init__(config)
        self._keys: dict[int, AdvertiseKeys] = {}
        self._seen_public_keys: set[bytes] = set()
        self._envelopes: dict[int, dict[int, bytes]] = {}
        self._commitments: dict[int, bytes] = {}
        self._u1: frozenset[int] = frozenset()
        self._u2: frozenset[int] = frozenset()
        self._u3: frozenset[int] = frozenset()
        self._holdings: dict[int, frozenset[int]] = {}
        self._running_sum: np.ndarray | None = None
        self._in_sum: set[int] = set()
        self._unmasking: dict[int, UnmaskingShares] = {}
        self._consistency: dict[int, bytes] = {}

    # ---- receiving -------------------------------------------------------------------------------
    def _handle(self, message: ClientMessage) -> None:
        if isinstance(message, AdvertiseKeys):
            self._on_keys(message)
        elif isinstance(message, ShareKeys):
            self._on_shares(message)
        elif isinstance(message, MaskedInput):
            self._on_masked_input(message)
        elif isinstance(message, ConsistencySignature):
            self._on_consistency(message)
        elif isinstance(message, UnmaskingShares):
            self._on_unmasking(message)

    def _on_keys(self, message: AdvertiseKeys) -> None:
        for key in (message.cipher_public_key, message.mask_public_key):
            if key in self._seen_public_keys:
                raise PeerProtocolError(PeerFault.BAD_PUBLIC_KEY, peer=message.sender, detail="key reused")
            try:
                validate_public_key(key)
            except CryptoError:
                raise PeerProtocolError(PeerFault.BAD_PUBLIC_KEY, peer=message.sender,
                                        detail="not a valid X25519 key") from None
        identities = self._config.identities
        if identities is not None:
            try:
                verify_signature(identities.verify_keys[message.sender], message.signature,
                                 keys_payload(self._config, message.sender, message.cipher_public_key,
                                              message.mask_public_key))
            except CryptoError:
                raise PeerProtocolError(PeerFault.BAD_SIGNATURE, peer=message.sender,
                                        detail="advertised keys not signed by the sender's identity key") from None
        self._seen_public_keys.update((message.cipher_public_key, message.mask_public_key))
        self._keys[message.sender] = message

    def _on_consistency(self, message: ConsistencySignature) -> None:
        identities = self._config.identities
        if identities is None:  # pragma: no cover - the passive stage table never accepts this message
            raise PeerProtocolError(PeerFault.OUT_OF_STAGE, peer=message.sender)
        try:
            verify_signature(identities.verify_keys[message.sender], message.signature,
                             consistency_payload(self._config, sorted(self._u3)))
        except CryptoError:
            raise PeerProtocolError(PeerFault.BAD_SIGNATURE, peer=message.sender,
                                    detail="consistency signature not over the survivor set") from None
        self._consistency[message.sender] = message.signature

    def _on_shares(self, message: ShareKeys) -> None:
        u = message.sender
        expected = self._config.neighbours(u) & self._u1
        recipients = {s.peer for s in message.shares}
        if recipients != expected:
            raise PeerProtocolError(PeerFault.BAD_SHARE, peer=u,
                                    detail=f"envelopes for {len(recipients)} peers, expected {len(expected)}")
        if any(len(s.envelope) != ENVELOPE_BYTES for s in message.shares):
            raise PeerProtocolError(PeerFault.BAD_SHARE, peer=u, detail="envelope of the wrong size")
        self._envelopes[u] = {s.peer: s.envelope for s in message.shares}
        self._commitments[u] = message.seed_commitment

    def _on_masked_input(self, message: MaskedInput) -> None:
        ring = self._config.ring
        vector = message.vector
        if vector.shape != (self._config.vector_length,) or vector.dtype != ring.dtype:
            raise PeerProtocolError(PeerFault.WRONG_SIZE, peer=message.sender,
                                    detail=f"{vector.size} words of {vector.dtype}, expected "
                                    f"{self._config.vector_length} of {ring.dtype}")
        if not ring.contains(vector):
            raise PeerProtocolError(PeerFault.MALFORMED, peer=message.sender, detail="values outside the ring")
        if self._running_sum is None:
            self._running_sum = np.zeros(self._config.vector_length, dtype=ring.dtype)
        np.add(self._running_sum, vector, out=self._running_sum)
        self._in_sum.add(message.sender)

    def _on_unmasking(self, message: UnmaskingShares) -> None:
        u = message.sender
        holdings = self._holdings[u]
        expected_self = holdings & self._u3
        self_owners = {s.owner for s in message.self_mask_shares}
        key_owners = {s.owner for s in message.key_shares}
        # A client may lack a peer's shares (an unreadable envelope), never hold extra or misfiled ones.
        if not self_owners <= expected_self or not key_owners <= holdings - self._u3:
            raise PeerProtocolError(PeerFault.BAD_SHARE, peer=u, detail="share lists do not match the survivor set")
        self._unmasking[u] = message

    def _on_drop(self, client: int) -> None:
        # A dropped client's contributions to an open stage are forgotten, except a
        # masked input already in the running sum, which stays counted (client in U3).
        if self._stage is Stage.ADVERTISE_KEYS:
            self._keys.pop(client, None)
        elif self._stage is Stage.SHARE_KEYS:
            self._envelopes.pop(client, None)
            self._commitments.pop(client, None)
        elif self._stage is Stage.CONSISTENCY_CHECK:
            self._consistency.pop(client, None)
        elif self._stage is Stage.UNMASKING:
            self._unmasking.pop(client, None)

    def _discard_state(self) -> None:
        self._running_sum = None
        self._envelopes = {}
        self._unmasking = {}
        self._holdings = {}

    # ---- closing stages ----------------------------------------------------------------------------
    def _close(self, responders: frozenset[int]) -> list[ServerMessage]:
        config, t = self._config, self._config.threshold
        if self._stage is Stage.ADVERTISE_KEYS:
            self._require(len(responders), t, "too few clients advertised keys")
            self._u1 = responders
            self._active = set(responders)
            messages: list[ServerMessage] = []
            # Each responder's entry is the same in every list it appears in (entries are immutable): built once.
            entries = {v: PublicKeys(owner=v, cipher_public_key=self._keys[v].cipher_public_key,
                                     mask_public_key=self._keys[v].mask_public_key, signature=self._keys[v].signature)
                       for v in responders}
            for u in sorted(responders):
                owners = sorted((config.neighbours(u) & responders) | {u})
                messages.append(KeysBroadcast(round_id=config.round_id, recipient=u,
                                              keys=tuple(entries[v] for v in owners)))
            return messages
        if self._stage is Stage.SHARE_KEYS:
            self._require(len(responders), t, "too few clients shared keys")
            self._u2 = responders
            self._active = set(responders)
            messages = []
            for u in sorted(responders):
                peers = sorted(config.neighbours(u) & responders)
                self._holdings[u] = frozenset(peers) | {u}
                shares = tuple(EncryptedShare(peer=v, envelope=self._envelopes[v][u]) for v in peers)
                messages.append(SharesDelivery(round_id=config.round_id, recipient=u, shares=shares))
            self._envelopes = {}
            return messages
        if self._stage is Stage.MASKED_INPUT:
            self._u3 = frozenset(self._in_sum)
            self._require(len(self._u3), t, "too few masked inputs")
            self._active = set(self._u3 - self._dropped.keys())
            if config.active:
                # Bonawitz et al. 2017, §4, ConsistencyCheck: show every survivor the whole of U3.
                self._require(len(self._u3), consistency_quorum(config), "too few masked inputs for the quorum")
                survivors = tuple(sorted(self._u3))
                return [ConsistencyRequest(round_id=config.round_id, recipient=u, survivors=survivors)
                        for u in sorted(self._active)]
            return [UnmaskRequest(round_id=config.round_id, recipient=u,
                                  survivors=tuple(sorted(self._holdings[u] & self._u3)))
                    for u in sorted(self._active)]
        if self._stage is Stage.CONSISTENCY_CHECK:
            self._require(len(responders), consistency_quorum(config), "too few consistency signatures")
            self._active = set(responders)
            signatures = tuple(SurvivorSignature(owner=u, signature=self._consistency[u]) for u in sorted(responders))
            return [UnmaskRequest(round_id=config.round_id, recipient=u,
                                  survivors=tuple(sorted(self._holdings[u] & self._u3)), signatures=signatures)
                    for u in sorted(responders)]
        # Stage.UNMASKING
        self._require(len(responders), t, "too few clients answered the unmasking request")
        self._unmask(responders)
        return []

    def _unmask(self, responders: frozenset[int]) -> None:
        config, t = self._config, self._config.threshold
        self_shares: dict[int, list[tuple[int, int]]] = {v: [] for v in self._u3}
        key_shares: dict[int, list[tuple[int, int]]] = {v: [] for v in self._u2 - self._u3}
        for u in sorted(responders):
            reply = self._unmasking[u]
            for s in reply.self_mask_shares:
                self_shares[s.owner].append((_x(u), s.value))
            for s in reply.key_shares:
                key_shares[s.owner].append((_x(u), s.value))
        for v, shares in self_shares.items():
            self._require(len(shares), t, f"too few shares of survivor {v}'s self-mask seed")
        for v, shares in key_shares.items():
            self._require(len(shares), t, f"too few shares of dropped client {v}'s mask key")
        if self._running_sum is None:
            raise RuntimeError("unreachable: masked inputs were required above")  # pragma: no cover
        total = self._running_sum
        removals: list[tuple[bytes, bool]] = []
        # Remove the self-masks of survivors (Bonawitz et al. 2017, §4, Unmasking).
        for v in sorted(self_shares):
            try:
                seed = reconstruct_secret(self_shares[v], threshold=t)
            except CryptoError:
                seed = b""
            if seed_commitment(seed, salt=config.digest, round_id=config.round_id, owner=v) != self._commitments[v]:
                # Corrupted shares: abort rather than return a wrong sum.
                raise RoundAborted(f"shares of survivor {v}'s self-mask seed do not match its commitment",
                                   stage=self._stage.label, have=len(self_shares[v]), need=t)
            removals.append((_self_mask_key(config, seed, v), False))
        # Remove the pairwise masks that survivors shared with clients that dropped after ShareKeys.
        for v in sorted(key_shares):
            try:
                private = KeyAgreementKey.from_raw_private_bytes(reconstruct_secret(key_shares[v], threshold=t))
            except CryptoError:
                private = None
            if private is None or private.public_bytes != self._keys[v].mask_public_key:
                # The reconstructed key must match the public key v advertised; a mismatch means corrupted shares.
                raise RoundAborted(f"shares of dropped client {v}'s mask key are inconsistent",
                                   stage=self._stage.label, have=len(key_shares[v]), need=t)
            for u in sorted(config.neighbours(v) & self._u3):
                key = _pairwise_mask_key(config, private, self._keys[u].mask_public_key, u, v)
                # Survivor u added +PRG(s_uv) when u < v and -PRG(s_uv) otherwise; undo it.
                removals.append((key, u > v))
        MaskExpander(config.vector_length, config.ring.dtype).fold_into(total, removals)
        config.ring.reduce(total)
        self._finish(total, self._u3)
        self._discard_state()
