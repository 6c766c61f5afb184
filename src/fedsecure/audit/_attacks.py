"""Attack simulations: a malicious server (with colluding clients) trying to read one victim's update.

Each attack is scripted against honest client sessions and run twice: against
fedsecure's protective configuration for the threat, and against a deliberately
weakened one, to show that the auditor can see an attack succeed. When it
succeeds, the victim's update is reconstructed from what the server collected
and compared with the truth (relative L2 error of the decoded update). Where
fedsecure has no weaker configuration to offer (a binding it applies
unconditionally), the report says so instead of inventing one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._errors import CryptoError, PeerProtocolError
from ..crypto import KeyAgreementKey, MaskExpander, open_envelope, reconstruct_secret
from ..crypto import SHARE_BYTES, share_from_bytes
from ..encoding import ClipMode, EncodedUpdate, EncodingConfig, Quantizer
from ..protocols import (
    ClientIdentity,
    ConsistencyRequest,
    KeysBroadcast,
    MaskedInput,
    ProtocolKind,
    PublicKeys,
    RoundConfig,
    ServerSession,
    ShareKeys,
    SharesDelivery,
    Stage,
    SurvivorSignature,
    ThreatModel,
    UnmaskingShares,
    UnmaskRequest,
    create_client_session,
    create_identities,
    create_server_session,
)
from ..protocols._secagg import (
    _pairwise_mask_key,
    _self_mask_key,
    _share_key,
    _x,
    consistency_payload,
    consistency_quorum,
)

__all__ = ["ATTACKS", "AttackResult", "attack_names", "run_attack"]

THREAT = ThreatModel()


@dataclass(frozen=True)
class Outcome:
    """One run of an attack: did the server learn the victim's update, how well, and what stopped it if not."""

    defeated: bool | None
    reconstruction_error: float | None
    detail: str


@dataclass(frozen=True)
class AttackResult:
    """An attack against the protective and the weakened configuration."""

    name: str
    description: str
    protocol: str
    clients: int
    protected: Outcome
    weakened: Outcome

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "protocol": self.protocol,
                "clients": self.clients, "protected_config_defeated": self.protected.defeated,
                "weakened_config_defeated": self.weakened.defeated,
                "reconstruction_error": self.weakened.reconstruction_error,
                "protected_reconstruction_error": self.protected.reconstruction_error,
                "protected_detail": self.protected.detail, "weakened_detail": self.weakened.detail}


@dataclass
class _Round:
    config: RoundConfig
    quantizer: Quantizer
    floats: dict[int, np.ndarray]
    updates: dict[int, EncodedUpdate]
    identities: dict[int, ClientIdentity] | None


def _make_round(protocol: ProtocolKind, clients: int, *, active: bool, threshold: int | None = None,
                seed: int = 0) -> _Round:
    encoding = EncodingConfig.fit_scale(dimension=64, clients=clients, clip=1.0, clip_mode=ClipMode.PER_COORDINATE)
    quantizer = Quantizer(encoding)
    registry, keys = create_identities(range(clients)) if active else (None, None)
    config = RoundConfig.create(protocol=protocol, clients=range(clients), encoding=encoding, round_id=seed + 1,
                                threat=THREAT, identities=registry)
    if threshold is not None:
        # A deliberately weakened threshold, below what the threat model asks for.
        config = dataclasses.replace(config, threshold=threshold)
    rng = np.random.default_rng(seed)  # noqa: csprng-ok (simulated updates, not a secret)
    floats = {c: rng.uniform(-1, 1, 64) for c in config.clients}
    return _Round(config, quantizer, floats, {c: quantizer.encode(v) for c, v in floats.items()}, keys)


def _sessions(round_: _Round) -> dict[int, Any]:
    keys = round_.identities
    return {c: create_client_session(round_.config, c, round_.updates[c], keys[c] if keys else None)
            for c in round_.config.clients}


def _run_until(round_: _Round, stage: Stage) -> tuple[ServerSession, dict[int, Any], list[Any]]:
    """An honest round up to the opening of ``stage``: the server, the client sessions and the stage's messages."""
    server = create_server_session(round_.config)
    sessions = _sessions(round_)
    outbox = server.start()
    while server.stage is not stage:
        _deliver(server, sessions, outbox)
        outbox = server.close_stage()
    return server, sessions, outbox


def _deliver(server: ServerSession, sessions: Mapping[int, Any], outbox: list[Any],
             replies: dict[int, Any] | None = None) -> list[str]:
    """Hand each message to its client and its replies to the server; returns the clients' refusals."""
    refusals = []
    for message in outbox:
        try:
            answers = sessions[message.recipient].receive(message)
        except PeerProtocolError as error:
            refusals.append(f"client {message.recipient}: {error}")
            continue
        for reply in answers:
            if replies is not None:
                replies[message.recipient] = reply
            server.receive(reply)
    return refusals


def _error(round_: _Round, victim: int, recovered: np.ndarray) -> float:
    decoded = round_.quantizer.decode_sum(recovered).total
    truth = np.clip(round_.floats[victim], -1, 1)
    return float(np.linalg.norm(decoded - truth) / np.linalg.norm(truth))


def _unmask(round_: _Round, victim: int, masked: np.ndarray, seed: bytes,
            peer_mask_keys: Callable[[int], bytes]) -> np.ndarray:
    """Remove the victim's self-mask and every pairwise mask from its masked input (Bonawitz et al. 2017, §4)."""
    config = round_.config
    removals = [(_self_mask_key(config, seed, victim), False)]
    for peer in sorted(config.neighbours(victim)):
        # The victim added +PRG(s_uv) when it had the smaller id: subtract what it added.
        removals.append((peer_mask_keys(peer), victim > peer))
    vector = np.array(masked, dtype=config.ring.dtype)
    MaskExpander(config.vector_length, config.ring.dtype).fold_into(vector, removals)
    return config.ring.reduce(vector)


# --------------------------------------------------------------------------- split view
def _split_view(protocol: ProtocolKind, clients: int, *, active: bool) -> Outcome:
    round_ = _make_round(protocol, clients, active=active)
    config, victim = round_.config, 0
    holders = sorted(config.neighbours(victim))
    corrupt = holders[-max(1, math.floor(THREAT.corrupt_fraction * clients)) :][:1]
    honest = [h for h in holders if h not in corrupt]
    survived = [victim] + honest[: len(honest) // 2]
    dropped = honest[len(honest) // 2 :]
    server, sessions, outbox = _run_until(round_, Stage.MASKED_INPUT)
    replies: dict[int, Any] = {}
    _deliver(server, sessions, outbox, replies)
    masked = {c: np.array(r.vector) for c, r in replies.items() if isinstance(r, MaskedInput)}
    server.close_stage()
    everyone = tuple(sorted(config.clients))
    without = tuple(c for c in everyone if c != victim)
    views = {c: everyone for c in survived} | {c: without for c in dropped}
    signatures: dict[tuple[int, ...], list[SurvivorSignature]] = {everyone: [], without: []}
    refusals = []
    if active and round_.identities is not None:
        # The consistency check: honest clients sign the view they are shown; the corrupt ones sign both.
        for client, view in views.items():
            try:
                reply = sessions[client].receive(ConsistencyRequest(round_id=config.round_id, recipient=client,
                                                                    survivors=view))[0]
            except PeerProtocolError as error:
                refusals.append(f"client {client}: {error}")
                continue
            signatures[view].append(SurvivorSignature(owner=client, signature=reply.signature))
        for c in corrupt:
            for view in signatures:
                signatures[view].append(SurvivorSignature(owner=c, signature=round_.identities[c].sign(
                    consistency_payload(config, view))))
    held = {c: sessions[c]._held_shares[victim] for c in corrupt}  # What the colluding clients hand over.
    self_shares = [(_x(c), shares[0]) for c, shares in held.items()]
    key_shares = [(_x(c), shares[1]) for c, shares in held.items()]
    for client, view in views.items():
        local = tuple(sorted(set(view) & (config.neighbours(client) | {client})))
        request = UnmaskRequest(round_id=config.round_id, recipient=client, survivors=local,
                                signatures=tuple(signatures[view]) if active else ())
        try:
            reply = sessions[client].receive(request)[0]
        except PeerProtocolError as error:
            refusals.append(f"client {client}: {error}")
            continue
        self_shares += [(_x(client), s.value) for s in reply.self_mask_shares if s.owner == victim]
        key_shares += [(_x(client), s.value) for s in reply.key_shares if s.owner == victim]
    t = config.threshold
    if len(self_shares) < t or len(key_shares) < t:
        quorum = f", no view reaching the consistency quorum of {consistency_quorum(config)}" if active else ""
        return Outcome(False, None, f"the server got {len(self_shares)} self-mask and {len(key_shares)} key shares "
                       f"of the victim (threshold {t}); {len(refusals)} honest clients refused to unmask{quorum}. "
                       "Two defences stop it: t > 2k/3 leaves too few holders for two views, and the quorum")
    seed = reconstruct_secret(self_shares, threshold=t)
    mask_key = KeyAgreementKey.from_raw_private_bytes(reconstruct_secret(key_shares, threshold=t))
    keys = server._keys  # type: ignore[attr-defined]
    recovered = _unmask(round_, victim, masked[victim], seed, lambda peer: _pairwise_mask_key(
        config, mask_key, keys[peer].mask_public_key, victim, peer))
    return Outcome(True, _error(round_, victim, recovered),
                   f"{len(survived)} clients were told the victim survived and {len(dropped)} that it dropped; "
                   f"with {len(corrupt)} colluding client(s) the server held {len(self_shares)} self-mask and "
                   f"{len(key_shares)} key shares (threshold {t})")


# --------------------------------------------------------------------------- key substitution
def _key_substitution(protocol: ProtocolKind, clients: int, *, active: bool) -> Outcome:
    round_ = _make_round(protocol, clients, active=active)
    config, victim = round_.config, 0
    server = create_server_session(config)
    sessions = _sessions(round_)
    _deliver(server, sessions, server.start())
    broadcasts = server.close_stage()
    fakes: dict[int, KeyAgreementKey] = {}
    outbox = []
    for message in broadcasts:
        if isinstance(message, KeysBroadcast) and message.recipient == victim:
            # Man in the middle: the victim is shown the server's cipher keys in place of its peers'.
            keys = []
            for k in message.keys:
                if k.owner != victim:
                    fakes[k.owner] = KeyAgreementKey.generate()
                    k = PublicKeys(k.owner, fakes[k.owner].public_bytes, k.mask_public_key, k.signature)
                keys.append(k)
            message = KeysBroadcast(round_id=message.round_id, recipient=victim, keys=tuple(keys))
        outbox.append(message)
    replies: dict[int, Any] = {}
    refusals = _deliver(server, sessions, outbox, replies)
    if victim not in replies:
        return Outcome(False, None, f"the victim refused the substituted keys ({'; '.join(refusals)}); it sent "
                       "nothing encrypted under them")
    share_keys = replies[victim]
    if not isinstance(share_keys, ShareKeys):  # pragma: no cover - an honest client answers KeysBroadcast so
        raise RuntimeError(f"the victim answered with a {type(share_keys).__name__}")
    victim_cipher = server._keys[victim].cipher_public_key  # type: ignore[attr-defined]
    self_shares, key_shares = [], []
    for share in share_keys.shares:
        key = _share_key(config, fakes[share.peer], victim_cipher, victim, share.peer)
        try:
            plaintext = open_envelope(key, share.envelope, sender=victim, recipient=share.peer,
                                      round_id=config.round_id, stage=int(Stage.SHARE_KEYS))
        except CryptoError:
            continue
        self_shares.append((_x(share.peer), share_from_bytes(plaintext[:SHARE_BYTES])))
        key_shares.append((_x(share.peer), share_from_bytes(plaintext[SHARE_BYTES:])))
    # The round goes on; the server collects the victim's masked input.
    outbox = server.close_stage()
    replies = {}
    _deliver(server, sessions, outbox, replies)
    masked = replies.get(victim)
    t = config.threshold
    if not isinstance(masked, MaskedInput) or len(self_shares) < t:
        return Outcome(False, None, f"the server opened {len(self_shares)} of the victim's envelopes (threshold {t})")
    seed = reconstruct_secret(self_shares, threshold=t)
    mask_key = KeyAgreementKey.from_raw_private_bytes(reconstruct_secret(key_shares, threshold=t))
    keys = server._keys  # type: ignore[attr-defined]
    recovered = _unmask(round_, victim, np.array(masked.vector), seed, lambda peer: _pairwise_mask_key(
        config, mask_key, keys[peer].mask_public_key, victim, peer))
    return Outcome(True, _error(round_, victim, recovered),
                   f"the victim encrypted its shares to the server's keys; the server opened all "
                   f"{len(self_shares)} envelopes and unmasked the victim alone")


# --------------------------------------------------------------------------- below threshold
def _below_threshold(protocol: ProtocolKind, clients: int, *, active: bool, weakened: bool) -> Outcome:
    # Weakened: a threshold of 3, below the majority the threat model needs.
    round_ = _make_round(protocol, clients, active=active, threshold=3 if weakened else None)
    config, victim = round_.config, 0
    corrupt = max(config.clients)
    server, sessions, outbox = _run_until(round_, Stage.MASKED_INPUT)
    replies: dict[int, Any] = {}
    _deliver(server, sessions, outbox, replies)
    server.close_stage()
    key_shares: dict[int, list[tuple[int, int]]] = {}
    self_shares: list[tuple[int, int]] = []
    refusals = []
    for client in config.clients:
        if client in (victim, corrupt):
            continue
        # Each honest client is told that only the victim, the colluder and itself survived.
        survivors = tuple(sorted({victim, corrupt, client} & (config.neighbours(client) | {client})))
        try:
            if active:
                sessions[client].receive(ConsistencyRequest(round_id=config.round_id, recipient=client,
                                                            survivors=survivors))
            reply = sessions[client].receive(UnmaskRequest(round_id=config.round_id, recipient=client,
                                                           survivors=survivors))[0]
        except PeerProtocolError as error:
            refusals.append(f"client {client}: {error}")
            continue
        if not isinstance(reply, UnmaskingShares):  # pragma: no cover - an honest client answers so
            raise RuntimeError(f"client {client} answered with a {type(reply).__name__}")
        self_shares += [(_x(client), s.value) for s in reply.self_mask_shares if s.owner == victim]
        for s in reply.key_shares:
            key_shares.setdefault(s.owner, []).append((_x(client), s.value))
    t = config.threshold
    peers = sorted(config.neighbours(victim) - {corrupt})
    if len(self_shares) < t or any(len(key_shares.get(p, [])) < t for p in peers):
        return Outcome(False, None, f"{len(refusals)} of {len(config.clients) - 2} honest clients refused a "
                       f"survivor set below the threshold {t}")
    seed = reconstruct_secret(self_shares, threshold=t)
    victim_mask_public = server._keys[victim].mask_public_key  # type: ignore[attr-defined]
    colluder = sessions[corrupt]._mask_key  # The colluding client's own key.

    def pairwise(peer: int) -> bytes:
        private = colluder if peer == corrupt else KeyAgreementKey.from_raw_private_bytes(
            reconstruct_secret(key_shares[peer], threshold=t))
        return _pairwise_mask_key(config, private, victim_mask_public, victim, peer)

    masked = replies[victim]
    if not isinstance(masked, MaskedInput):  # pragma: no cover - an honest client answers so
        raise RuntimeError(f"the victim answered with a {type(masked).__name__}")
    recovered = _unmask(round_, victim, np.array(masked.vector), seed, pairwise)
    return Outcome(True, _error(round_, victim, recovered),
                   f"with threshold {t}, every honest client accepted a three-client survivor set and revealed the "
                   "victim's self-mask share and its peers' key shares")


# --------------------------------------------------------------------------- redirected shares
def _redirect(protocol: ProtocolKind, clients: int, *, active: bool) -> Outcome:
    round_ = _make_round(protocol, clients, active=active)
    config, victim = round_.config, 0
    server, sessions, outbox = _run_until(round_, Stage.SHARE_KEYS)
    _deliver(server, sessions, outbox)
    deliveries = server.close_stage()
    # The server hands the victim's envelope meant for one peer to another peer (and keeps none it can read).
    by_recipient = {m.recipient: m for m in deliveries if isinstance(m, SharesDelivery)}
    a, b = sorted(config.neighbours(victim))[:2]
    envelope_for_a = next(s for s in by_recipient[a].shares if s.peer == victim)
    tampered = dataclasses.replace(by_recipient[b], shares=tuple(
        envelope_for_a if s.peer == victim else s for s in by_recipient[b].shares))
    try:
        sessions[b].receive(tampered)
    except PeerProtocolError as error:
        return Outcome(False, None, f"client {b} refused the round: {error}")
    unreadable = sessions[b].unreadable_envelopes
    return Outcome(False if victim in unreadable else None, None,
                   f"client {b} could not open the redirected envelope (AES-GCM binds sender, recipient, round and "
                   "stage), and the server holds no key to any envelope" if victim in unreadable else
                   "the redirected envelope opened, which should be impossible")


# --------------------------------------------------------------------------- sybils
def _sybils(protocol: ProtocolKind, clients: int, *, active: bool, honest_others: int) -> Outcome:
    """The server's own clients fill the cohort around the victim; ``honest_others`` other clients are honest.

    The protocol forces at least t inputs into any sum it reveals, but cannot tell a sybil from a client: with
    every other client a sybil the sum minus their inputs is the victim's. One other honest client is enough to
    hide the victim inside a sum of two unknown inputs, which is all the minimum cohort can promise.
    """
    from ..runtime import Simulator

    round_ = _make_round(protocol, clients, active=active)
    config, victim = round_.config, 0
    honest = {victim} | set([c for c in sorted(config.clients) if c != victim][:honest_others])
    report = Simulator(config, round_.updates, identities=round_.identities).run()
    if report.result is None:
        return Outcome(False, None, f"the round aborted: {report.abort}")
    total = report.result.ring_sum.astype(np.int64)
    # The server knows its sybils' inputs and subtracts them from the sum.
    for c in config.clients:
        if c not in honest:
            total = total - round_.updates[c].values.astype(np.int64)
    recovered = config.ring.reduce(np.mod(total, 2**config.ring_bits).astype(config.ring.dtype))
    error = _error(round_, victim, recovered)
    sybils = clients - len(honest)
    if honest_others:
        # Not a fedsecure setting but a property of the cohort, so the verdict is n/a; the detail shows its effect.
        return Outcome(None, error, f"assumed one other honest client: {sybils} of {clients} clients are sybils "
                       f"and {honest_others} other is honest: the sum minus the sybils' inputs is the victim's plus that client's (error "
                       f"{error:.2g}). Secure aggregation cannot tell sybils from clients; the threshold (t = "
                       f"{config.threshold}) only guarantees that a revealed sum has at least t inputs")
    return Outcome(True, error, f"{sybils} of {clients} clients are the server's sybils: the sum minus their inputs "
                   "is the victim's. Nothing in the protocol prevents this; client authentication, a minimum number "
                   "of honest clients and differential privacy are the mitigations")


# --------------------------------------------------------------------------- replay
def _replay(protocol: ProtocolKind, clients: int, *, active: bool) -> Outcome:
    """Replay round 1's server messages into round 2, each at the moment round 2 expects its kind.

    With ``active`` it also tries the variant a malicious server would use against the consistency check: rerun
    the very same configuration, to collect a second set of signatures.
    """
    first = _make_round(protocol, clients, active=active, seed=0)
    server = create_server_session(first.config)
    sessions = _sessions(first)
    recorded: list[Any] = []
    outbox = server.start()
    while True:
        recorded.append(outbox)
        _deliver(server, sessions, outbox)
        outbox = server.close_stage()
        if server.stage is Stage.DONE:
            break
    # A later round of the same cohort and identities, driven honestly up to each stage in turn; there one
    # client gets round 1's message of that stage in place of its own.
    faults = []
    for index, stage_messages in enumerate(recorded):
        later = dataclasses.replace(first, config=dataclasses.replace(first.config,
                                                                      round_id=first.config.round_id + 1 + index))
        server = create_server_session(later.config)
        sessions = _sessions(later)
        outbox = server.start()
        for _ in range(index):
            _deliver(server, sessions, outbox)
            outbox = server.close_stage()
        target = outbox[0].recipient
        old = next((m for m in stage_messages if m.recipient == target), None)
        if old is None:
            continue
        try:
            sessions[target].receive(old)
            faults.append("accepted")
        except PeerProtocolError as error:
            faults.append(error.fault.value)
    refused = [f for f in faults if f != "accepted"]
    detail = (f"{len(refused)} of {len(faults)} round-1 messages replayed into round 2 at their own stage were "
              f"refused ({', '.join(sorted(set(refused)))})")
    if active and first.identities is not None:
        # Rerunning the same configuration: every client refuses to join it a second time.
        rejoined = 0
        for c in first.config.clients:
            try:
                create_client_session(first.config, c, first.updates[c], first.identities[c])
                rejoined += 1
            except Exception:  # noqa: BLE001 - any refusal counts; LocalProtocolError is the expected one
                pass
        detail += f"; rerunning round 1's configuration, {clients - rejoined} of {clients} clients refused to join"
        if rejoined:
            return Outcome(True, None, detail)
    return Outcome(bool(len(refused) < len(faults)), None, detail)


def _replay_with_reused_key(protocol: ProtocolKind, clients: int) -> Outcome:
    """The weakened configuration for replay: the victim reuses its mask key pair in the next round.

    Round 1 runs honestly, so the server legitimately reconstructs the victim's self-mask seed. In round 2 the
    server says the victim dropped after sharing keys, and the honest clients reveal shares of its mask key;
    with the key reused, those unmask the victim's round-1 input. Fresh keys per round (Bonawitz et al. 2017,
    §4, AdvertiseKeys) are what stops this; fedsecure offers no way to turn them off, so the reuse is injected.
    """
    first = _make_round(protocol, clients, active=False, seed=0)
    config, victim = first.config, 0
    server, sessions, outbox = _run_until(first, Stage.MASKED_INPUT)
    reused = sessions[victim]._mask_key  # The victim's round-1 mask key pair, kept for round 2.
    replies: dict[int, Any] = {}
    _deliver(server, sessions, outbox, replies)
    masked = replies[victim]
    outbox = server.close_stage()
    unmasking: dict[int, Any] = {}
    _deliver(server, sessions, outbox, unmasking)
    server.close_stage()
    t = config.threshold
    self_shares = [(_x(c), s.value) for c, r in unmasking.items() for s in r.self_mask_shares if s.owner == victim]
    seed = reconstruct_secret(self_shares, threshold=t)
    first_keys = {c: m.mask_public_key for c, m in server._keys.items()}  # type: ignore[attr-defined]
    # Round 2, with the victim's mask key reused; the victim goes silent after ShareKeys.
    second = dataclasses.replace(first, config=dataclasses.replace(config, round_id=config.round_id + 1))
    server2 = create_server_session(second.config)
    sessions2 = _sessions(second)
    sessions2[victim]._mask_key = reused
    outbox = server2.start()
    while server2.stage is not Stage.MASKED_INPUT:
        _deliver(server2, sessions2, outbox)
        outbox = server2.close_stage()
    _deliver(server2, sessions2, [m for m in outbox if m.recipient != victim])
    outbox = server2.close_stage()
    round2: dict[int, Any] = {}
    _deliver(server2, sessions2, outbox, round2)
    key_shares = [(_x(c), s.value) for c, r in round2.items() for s in r.key_shares if s.owner == victim]
    if len(key_shares) < second.config.threshold:
        return Outcome(False, None, f"round 2 revealed {len(key_shares)} shares of the victim's key")
    mask_key = KeyAgreementKey.from_raw_private_bytes(reconstruct_secret(key_shares, threshold=t))
    recovered = _unmask(first, victim, np.array(masked.vector), seed, lambda peer: _pairwise_mask_key(
        config, mask_key, first_keys[peer], victim, peer))
    error = _error(first, victim, recovered)
    return Outcome(error < 1e-3, error,
                   "round 1's self-mask seed plus round 2's shares of the reused mask key unmasked the victim's "
                   "round-1 input")


def _na(reason: str) -> Outcome:
    return Outcome(None, None, reason)


AttackRunner = Callable[[ProtocolKind, int], tuple[Outcome, Outcome]]

ATTACKS: dict[str, tuple[str, AttackRunner]] = {
    "split-view": ("tell some of the victim's neighbours it dropped and others it survived, to collect both kinds "
                   "of share (protected: active variant; weakened: honest-but-curious protocol)",
                   lambda p, n: (_split_view(p, n, active=True), _split_view(p, n, active=False))),
    "key-substitution": ("show the victim the server's public keys in place of its peers' (protected: signed keys "
                         "of the active variant; weakened: unsigned keys)",
                         lambda p, n: (_key_substitution(p, n, active=True), _key_substitution(p, n, active=False))),
    "below-threshold": ("ask for unmasking with a survivor set below the threshold (protected: the threat model's "
                        "threshold; weakened: a threshold of 3)",
                        lambda p, n: (_below_threshold(p, n, active=False, weakened=False),
                                      _below_threshold(p, n, active=False, weakened=True))),
    "replay": ("replay an earlier round's server messages into the next round, rerun a round's configuration to "
               "collect a second set of consistency signatures, and combine rounds (protected: round binding, fresh "
               "keys and one join per configuration; weakened: the victim's mask key reused in the next round)",
               lambda p, n: (_replay(p, n, active=True), _replay_with_reused_key(p, n))),
    "redirect-shares": ("forward the victim's envelope for one peer to another (protected: AES-GCM binding; "
                        "fedsecure has no configuration without it)",
                        lambda p, n: (_redirect(p, n, active=False),
                                      _na("no weakened configuration: envelope keys are pairwise, so a redirected "
                                          "envelope opens for no one"))),
    "sybils": ("fill the cohort with the server's own clients around the victim (protected: one other honest "
               "client in the cohort, which no protocol setting can enforce; weakened: every other client a sybil)",
               lambda p, n: (_sybils(p, n, active=True, honest_others=1), _sybils(p, n, active=False, honest_others=0))),
}


def attack_names(protocol: ProtocolKind) -> list[str]:
    """The attacks that target ``protocol``."""
    from ._paillier_attacks import PAILLIER_ATTACKS

    if protocol.is_paillier:
        return [name for name, (_, targets, _) in PAILLIER_ATTACKS.items() if protocol in targets]
    return list(ATTACKS)


def run_attack(name: str, *, protocol: ProtocolKind = ProtocolKind.SECAGG, clients: int = 10) -> AttackResult:
    """Run attack ``name`` against the protective and the weakened configuration of ``protocol``."""
    from ._paillier_attacks import PAILLIER_ATTACKS

    if protocol.is_paillier:
        if name not in PAILLIER_ATTACKS or protocol not in PAILLIER_ATTACKS[name][1]:
            raise ValueError(f"attack {name!r} does not target {protocol.value}; choose from "
                             f"{', '.join(attack_names(protocol))}")
        if clients < 5:
            raise ValueError("the Paillier attacks need at least 5 clients")
        description, _, paillier_runner = PAILLIER_ATTACKS[name]
        protected, weakened = paillier_runner(protocol, clients)
        return AttackResult(name, description, protocol.value, clients, protected, weakened)
    if name not in ATTACKS:
        raise ValueError(f"attack {name!r} does not target {protocol.value}; choose from {', '.join(ATTACKS)}")
    if protocol not in (ProtocolKind.SECAGG, ProtocolKind.SECAGG_PLUS):
        raise ValueError("these attacks target SecAgg and SecAgg+")
    description, runner = ATTACKS[name]
    protected, weakened = runner(protocol, clients)
    return AttackResult(name, description, protocol.value, clients, protected, weakened)
