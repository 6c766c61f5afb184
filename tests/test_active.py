"""SecAgg's active-adversary variant: honest rounds stay exact, and a malicious server's attacks fail.

The attacks are scripted by hand against honest client sessions. Each is shown
succeeding against the honest-but-curious protocol (the weakened configuration
for this threat) and failing against the active variant.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from conftest import make_round
from fedsecure import ConfigurationError, LocalProtocolError, PeerFault, PeerProtocolError
from fedsecure.crypto import MaskExpander, reconstruct_secret
from fedsecure.crypto import KeyAgreementKey
from fedsecure.encoding import ClipMode, EncodingConfig, Quantizer
from fedsecure.protocols import (
    ConsistencyRequest,
    KeysBroadcast,
    MaskedInput,
    ProtocolKind,
    PublicKeys,
    RoundConfig,
    Stage,
    ThreatModel,
    UnmaskingShares,
    UnmaskRequest,
    active_threshold,
    create_client_session,
    create_identities,
    create_server_session,
)
from fedsecure.protocols._secagg import _pairwise_mask_key, _self_mask_key, _x
from fedsecure.runtime import DropoutSchedule, Simulator, client_stages, plaintext_ring_sum, simulate


def _active_round(clients: int, protocol: ProtocolKind = ProtocolKind.SECAGG, dimension: int = 32):
    encoding = EncodingConfig.fit_scale(dimension=dimension, clients=clients, clip=1.0,
                                        clip_mode=ClipMode.PER_COORDINATE)
    identities, keys = create_identities(range(clients))
    config = RoundConfig.create(protocol=protocol, clients=range(clients), encoding=encoding, round_id=5,
                                threat=ThreatModel(), identities=identities)
    rng = np.random.default_rng(1)  # noqa: csprng-ok (test data)
    updates = {c: Quantizer(encoding).encode(rng.uniform(-1, 1, dimension)) for c in config.clients}
    return config, updates, keys


def test_active_threshold_and_identities_are_required() -> None:
    config, updates, keys = _active_round(9)
    assert config.active and config.threshold >= active_threshold(9) == 7
    with pytest.raises(LocalProtocolError):
        create_client_session(config, 0, updates[0])
    with pytest.raises(LocalProtocolError):
        create_client_session(config, 0, updates[0], keys[1])  # someone else's identity
    assert config.digest != dataclasses.replace(config, identities=None, threshold=config.threshold).digest


@pytest.mark.parametrize("protocol", [ProtocolKind.SECAGG, ProtocolKind.SECAGG_PLUS])
def test_active_rounds_are_exact_under_dropouts_at_every_stage(protocol: ProtocolKind) -> None:
    clients = 60 if protocol is ProtocolKind.SECAGG_PLUS else 12
    stages = client_stages(protocol, active=True)
    assert Stage.CONSISTENCY_CHECK in stages
    for stage in stages:
        config, updates, keys = _active_round(clients, protocol)
        schedule = DropoutSchedule.at_stages({stage: [0, 3]})
        report = Simulator(config, updates, schedule=schedule, identities=keys).run()
        assert not report.aborted, (stage, report.abort)
        survivors = report.result.survivors
        expected = set(config.clients) - ({0, 3} if stage <= Stage.MASKED_INPUT else set())
        assert survivors == expected, stage
        np.testing.assert_array_equal(report.result.ring_sum, plaintext_ring_sum(updates, sorted(survivors)))


def test_simulate_active_end_to_end() -> None:
    report = simulate(protocol=ProtocolKind.SECAGG_PLUS, clients=40, dimension=200, dropout=0.1, active=True)
    assert report.correct and report.round.config.active


def test_consistency_quorum_failure_aborts_cleanly() -> None:
    config, updates, keys = _active_round(9)
    # Three of nine silent from the consistency check: six signatures, quorum seven.
    schedule = DropoutSchedule.at_stages({Stage.CONSISTENCY_CHECK: [1, 2, 3]})
    report = Simulator(config, updates, schedule=schedule, identities=keys).run()
    assert report.aborted and "consistency" in str(report.abort)


def _honest_run_to_unmasking(config: RoundConfig, updates, keys=None):
    """An honest server up to the end of MaskedInput; returns the server, the client sessions and its next outbox."""
    server = create_server_session(config)
    sessions = {c: create_client_session(config, c, updates[c], keys[c] if keys else None) for c in config.clients}
    outbox = server.start()
    masked: dict[int, np.ndarray] = {}
    while server.stage is not Stage.MASKED_INPUT:
        for message in outbox:
            for reply in sessions[message.recipient].receive(message):
                server.receive(reply)
        outbox = server.close_stage()
    for message in outbox:
        for reply in sessions[message.recipient].receive(message):
            if isinstance(reply, MaskedInput):
                masked[reply.sender] = np.array(reply.vector)
            server.receive(reply)
    return server, sessions, server.close_stage(), masked


def _unmask_victim(config: RoundConfig, server, victim: int, self_shares, key_shares, masked) -> np.ndarray:
    """What a server holding both kinds of share of ``victim`` computes: its input, masks removed."""
    t = config.threshold
    seed = reconstruct_secret(self_shares[:t], threshold=t)
    mask_key = KeyAgreementKey.from_raw_private_bytes(reconstruct_secret(key_shares[:t], threshold=t))
    removals = [(_self_mask_key(config, seed, victim), False)]
    for peer in sorted(config.neighbours(victim)):
        pairwise = _pairwise_mask_key(config, mask_key, server._keys[peer].mask_public_key, victim, peer)
        # The victim added +PRG when victim < peer: subtract what it added.
        removals.append((pairwise, victim > peer))
    vector = np.array(masked[victim], dtype=config.ring.dtype)
    MaskExpander(config.vector_length, config.ring.dtype).fold_into(vector, removals)
    return config.ring.reduce(vector)


VICTIM, CORRUPT = 0, 6
# Of seven clients, the server colludes with client 6 (within the default corrupt fraction). It tells the victim and
# clients 1, 2 that the victim survived, and clients 3, 4, 5 that it dropped.
SURVIVED_VIEW, DROPPED_VIEW = (0, 1, 2), (3, 4, 5)


def test_split_view_attack_reads_the_victim_under_the_passive_protocol() -> None:
    # The weakened configuration against an active server: no signatures, no consistency check, t = 4 of 7.
    config, updates, _ = make_round(ProtocolKind.SECAGG, clients=7)
    t = config.threshold
    server, sessions, outbox, masked = _honest_run_to_unmasking(config, updates)
    everyone = tuple(sorted(config.clients))
    without_victim = tuple(c for c in everyone if c != VICTIM)
    # The corrupt client hands over both of its shares of the victim.
    held = sessions[CORRUPT]._held_shares[VICTIM]
    self_shares, key_shares = [(_x(CORRUPT), held[0])], [(_x(CORRUPT), held[1])]
    for client in SURVIVED_VIEW + DROPPED_VIEW:
        survivors = everyone if client in SURVIVED_VIEW else without_victim
        reply = sessions[client].receive(UnmaskRequest(round_id=config.round_id, recipient=client,
                                                       survivors=survivors))[0]
        assert isinstance(reply, UnmaskingShares)
        self_shares += [(_x(client), s.value) for s in reply.self_mask_shares if s.owner == VICTIM]
        key_shares += [(_x(client), s.value) for s in reply.key_shares if s.owner == VICTIM]
    assert t == 4 and len(self_shares) >= t and len(key_shares) >= t
    recovered = _unmask_victim(config, server, VICTIM, self_shares, key_shares, masked)
    np.testing.assert_array_equal(recovered, updates[VICTIM].values)


def test_split_view_attack_fails_against_the_active_variant() -> None:
    from fedsecure.protocols import SurvivorSignature
    from fedsecure.protocols._secagg import consistency_payload

    config, updates, keys = _active_round(7)
    quorum = active_threshold(7)
    server, sessions, outbox, _ = _honest_run_to_unmasking(config, updates, keys)
    assert all(isinstance(m, ConsistencyRequest) for m in outbox)
    everyone = tuple(sorted(config.clients))
    without_victim = tuple(c for c in everyone if c != VICTIM)
    views = {c: everyone if c in SURVIVED_VIEW else without_victim for c in SURVIVED_VIEW + DROPPED_VIEW}
    # Every honest client signs only the set it was shown; the corrupt client signs both.
    signed: dict[tuple[int, ...], list[SurvivorSignature]] = {everyone: [], without_victim: []}
    for client, view in views.items():
        reply = sessions[client].receive(ConsistencyRequest(round_id=config.round_id, recipient=client,
                                                            survivors=view))[0]
        signed[view].append(SurvivorSignature(owner=client, signature=reply.signature))
    for view in signed:
        signed[view].append(SurvivorSignature(owner=CORRUPT,
                                              signature=keys[CORRUPT].sign(consistency_payload(config, view))))
    revealed = refusals = 0
    for client, view in views.items():
        request = UnmaskRequest(round_id=config.round_id, recipient=client, survivors=view,
                                signatures=tuple(signed[view]))
        try:
            reply = sessions[client].receive(request)[0]
        except PeerProtocolError as error:
            assert error.fault is PeerFault.BAD_SURVIVOR_SET
            refusals += 1
            continue
        revealed += any(s.owner == VICTIM for s in reply.self_mask_shares + reply.key_shares)
    # Four signatures on each view (three honest and the corrupt one), quorum five: every honest client refuses.
    assert quorum == 5 and [len(v) for v in signed.values()] == [4, 4]
    assert refusals == len(views) and revealed == 0


def test_key_substitution_is_refused_by_the_active_variant() -> None:
    config, updates, keys = _active_round(6)
    server = create_server_session(config)
    sessions = {c: create_client_session(config, c, updates[c], keys[c]) for c in config.clients}
    for message in server.start():
        for reply in sessions[message.recipient].receive(message):
            server.receive(reply)
    broadcasts = server.close_stage()
    attacker = KeyAgreementKey.generate()
    # The server swaps client 0's mask key for its own in what it forwards to client 1.
    target = next(m for m in broadcasts if m.recipient == 1)
    swapped = tuple(dataclasses.replace(k, mask_public_key=attacker.public_bytes) if k.owner == 0 else k
                    for k in target.keys)
    with pytest.raises(PeerProtocolError) as info:
        sessions[1].receive(KeysBroadcast(round_id=config.round_id, recipient=1, keys=swapped))
    assert info.value.fault is PeerFault.BAD_SIGNATURE


def test_key_substitution_goes_unnoticed_by_the_passive_protocol() -> None:
    config, updates, _ = make_round(ProtocolKind.SECAGG, clients=6)
    server = create_server_session(config)
    sessions = {c: create_client_session(config, c, updates[c]) for c in config.clients}
    for message in server.start():
        for reply in sessions[message.recipient].receive(message):
            server.receive(reply)
    target = next(m for m in server.close_stage() if m.recipient == 1)
    attacker = KeyAgreementKey.generate()
    swapped = tuple(PublicKeys(k.owner, k.cipher_public_key, attacker.public_bytes) if k.owner == 0 else k
                    for k in target.keys)
    # Accepted: the honest-but-curious protocol has no way to tell (SECURITY.md, threat model).
    assert sessions[1].receive(KeysBroadcast(round_id=config.round_id, recipient=1, keys=swapped))


def test_forged_consistency_signature_is_refused() -> None:
    config, updates, keys = _active_round(7)
    server, sessions, outbox, _ = _honest_run_to_unmasking(config, updates, keys)
    replies = {m.recipient: sessions[m.recipient].receive(m)[0] for m in outbox}
    from fedsecure.protocols import SurvivorSignature

    forged = tuple(SurvivorSignature(owner=c, signature=(replies[1].signature if c == 2 else replies[c].signature))
                   for c in sorted(replies))
    request = UnmaskRequest(round_id=config.round_id, recipient=3, survivors=tuple(sorted(config.clients)),
                            signatures=forged)
    with pytest.raises(PeerProtocolError) as info:
        sessions[3].receive(request)
    assert info.value.fault is PeerFault.BAD_SIGNATURE


def test_cli_simulate_active(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from fedsecure.cli import main

    assert main(["simulate", "--active", "--clients", "12", "--dim", "20", "--quiet", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["correct"] and summary["threshold"] >= active_threshold(12)


def test_a_client_joins_each_configuration_once() -> None:
    # A server rerunning one configuration could collect two sets of consistency signatures and replay them.
    config, updates, keys = _active_round(7)
    create_client_session(config, 2, updates[2], keys[2])
    with pytest.raises(LocalProtocolError, match="already took part"):
        create_client_session(config, 2, updates[2], keys[2])
    assert config.digest in keys[2].joined


def test_a_client_with_an_identity_refuses_a_passive_round() -> None:
    # The server chooses the configuration: a client that expects the active variant must not be downgraded.
    config, updates, keys = _active_round(7)
    passive, passive_updates, _ = make_round(ProtocolKind.SECAGG, clients=7)
    with pytest.raises(LocalProtocolError, match="requires the active"):
        create_client_session(passive, 0, passive_updates[0], keys[0])


@pytest.mark.parametrize("clients", [60, 200, 500])
def test_active_secagg_plus_parameters_bound_the_split_share_view(clients: int) -> None:
    # A server that hides some honest neighbours from the victim at ShareKeys and drops the others from U3
    # recovers the victim's input once it has 2t - k corrupt neighbours (the view of U2 is not signed). The
    # active parameters bound that event by 2^-sigma, and t > 2k/3.
    from fedsecure.protocols import choose_parameters, graph_security_failure

    threat = ThreatModel()
    params = choose_parameters(clients, threat, active=True)
    assert params.threshold >= active_threshold(params.degree)
    assert graph_security_failure(clients, params.degree, params.threshold, threat, active=True) <= 2.0 ** -40
    passive = choose_parameters(clients, threat)
    # The passive choice would not meet the active bound.
    assert graph_security_failure(clients, passive.degree, passive.threshold, threat, active=True) > 2.0 ** -40


def test_active_variant_refuses_a_third_corrupt() -> None:
    from fedsecure import ConfigurationError

    encoding = EncodingConfig.fit_scale(dimension=8, clients=30, clip=1.0, clip_mode=ClipMode.PER_COORDINATE)
    identities, _ = create_identities(range(30))
    for protocol in (ProtocolKind.SECAGG, ProtocolKind.SECAGG_PLUS):
        with pytest.raises(ConfigurationError):
            RoundConfig.create(protocol=protocol, clients=range(30), encoding=encoding, identities=identities,
                               threat=ThreatModel(dropout_fraction=0.05, corrupt_fraction=0.34))


def test_a_registry_that_gives_the_other_clients_server_made_keys_is_refused() -> None:
    # The attack: the server lists the victim's real key beside keys it made for every other cohort member. Those
    # "members" are the server, so the victim's shares of its self-mask seed and of its mask key all reach the
    # server, which could then unmask the victim alone. The victim checks the registry against the one it trusts.
    from fedsecure.crypto import SigningKey
    from fedsecure.protocols import ClientIdentity, IdentityKeys

    config, updates, keys = _active_round(6)
    victim = 0
    forged = IdentityKeys({c: (keys[c].public_bytes if c == victim else SigningKey.generate().public_bytes)
                           for c in config.clients})
    substituted = dataclasses.replace(config, identities=forged)
    with pytest.raises(LocalProtocolError, match="refusing keys the server chose"):
        create_client_session(substituted, victim, updates[victim], keys[victim])
    assert substituted.digest not in keys[victim].joined  # refused before it joined or sent anything
    # No identity without the registry it trusts, and none whose own key the registry lacks.
    with pytest.raises(TypeError):
        ClientIdentity(SigningKey.generate())  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError) as error:
        ClientIdentity(SigningKey.generate(), registry=config.identities)  # type: ignore[arg-type]
    assert error.value.parameter == "registry"
    with pytest.raises(ConfigurationError):
        ClientIdentity(SigningKey.generate(), registry=None)  # type: ignore[arg-type]
