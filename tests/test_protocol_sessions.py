"""Tier 2: the sans-IO state machines, driven by hand (no transport)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from conftest import make_round, ring_sum
from fedsecure import LocalProtocolError, PeerFault, PeerProtocolError, RoundAborted
from fedsecure.protocols import (
    AdvertiseKeys,
    ClientState,
    KeysBroadcast,
    MaskedInput,
    ProtocolKind,
    RoundConfig,
    RoundStart,
    SharesDelivery,
    Stage,
    ThreatModel,
    UnmaskingShares,
    UnmaskRequest,
    choose_parameters,
    create_client_session,
    create_server_session,
    encode_message,
)


def _drive_to(stage: Stage, protocol: ProtocolKind = ProtocolKind.SECAGG, clients: int = 6):
    """Run a round honestly until the server is in ``stage``; returns config, server, clients, outbox."""
    config, updates, _ = make_round(protocol, clients)
    server = create_server_session(config)
    sessions = {c: create_client_session(config, c, updates[c]) for c in config.clients}
    outbox = server.start()
    while server.stage is not stage:
        for message in outbox:
            for reply in sessions[message.recipient].receive(message):
                server.receive(reply)
        outbox = server.close_stage()
    return config, updates, server, sessions, outbox


def test_stage_table_drives_an_honest_round() -> None:
    config, updates, server, sessions, outbox = _drive_to(Stage.UNMASKING)
    for message in outbox:
        for reply in sessions[message.recipient].receive(message):
            server.receive(reply)
    assert server.close_stage() == []
    assert server.stage is Stage.DONE
    result = server.result()
    assert result.survivors == frozenset(config.clients)
    np.testing.assert_array_equal(result.ring_sum, ring_sum(config, updates, config.clients))
    assert all(s.state is ClientState.DONE for s in sessions.values())


def test_client_refuses_out_of_stage_messages_and_stays_aborted() -> None:
    config, updates, _ = make_round()
    client = create_client_session(config, 0, updates[0])
    with pytest.raises(PeerProtocolError) as info:
        client.receive(UnmaskRequest(round_id=config.round_id, recipient=0, survivors=(0, 1, 2, 3, 4)))
    assert info.value.fault is PeerFault.OUT_OF_STAGE and info.value.peer == "server"
    assert client.state is ClientState.ABORTED
    with pytest.raises(LocalProtocolError):
        client.receive(RoundStart(round_id=config.round_id, recipient=0, config_digest=config.digest))


@pytest.mark.parametrize(
    "message,fault",
    [
        (lambda c: RoundStart(round_id=c.round_id + 1, recipient=0, config_digest=c.digest), PeerFault.WRONG_ROUND),
        (lambda c: RoundStart(round_id=c.round_id, recipient=1, config_digest=c.digest), PeerFault.WRONG_RECIPIENT),
        (lambda c: RoundStart(round_id=c.round_id, recipient=0, config_digest=bytes(32)), PeerFault.CONFIG_MISMATCH),
    ],
)
def test_client_checks_round_recipient_and_config(message, fault) -> None:
    config, updates, _ = make_round()
    client = create_client_session(config, 0, updates[0])
    with pytest.raises(PeerProtocolError) as info:
        client.receive(message(config))
    assert info.value.fault is fault


def test_client_refuses_key_list_below_threshold_or_with_repeated_keys() -> None:
    config, updates, server, sessions, outbox = _drive_to(Stage.SHARE_KEYS)
    broadcast = next(m for m in outbox if isinstance(m, KeysBroadcast) and m.recipient == 0)
    own = next(k for k in broadcast.keys if k.owner == 0)
    short = KeysBroadcast(round_id=config.round_id, recipient=0,
                          keys=(own,) + tuple(k for k in broadcast.keys if k.owner != 0)[: config.threshold - 2])
    client = create_client_session(config, 0, updates[0])
    client.receive(RoundStart(round_id=config.round_id, recipient=0, config_digest=config.digest))
    with pytest.raises(PeerProtocolError) as info:
        client.receive(short)
    assert info.value.fault in (PeerFault.BAD_SURVIVOR_SET, PeerFault.BAD_PUBLIC_KEY)


def test_honest_client_never_reveals_both_share_kinds_and_refuses_below_threshold() -> None:
    config, updates, server, sessions, outbox = _drive_to(Stage.UNMASKING, clients=8)
    t = config.threshold
    request = next(m for m in outbox if m.recipient == 0)
    everyone = tuple(sorted(request.survivors))
    # Below the threshold: refused, and nothing is revealed.
    few = tuple([0] + [c for c in everyone if c != 0][: t - 2])
    with pytest.raises(PeerProtocolError) as info:
        sessions[0].receive(UnmaskRequest(round_id=config.round_id, recipient=0, survivors=few))
    assert info.value.fault is PeerFault.BAD_SURVIVOR_SET
    # For every admissible survivor set, the two share kinds are disjoint and cover the holdings.
    for size in range(t, len(everyone) + 1):
        fresh_config, _, _, fresh_sessions, _ = _drive_to(Stage.UNMASKING, clients=8)
        survivors = tuple(range(size))
        reply = fresh_sessions[0].receive(
            UnmaskRequest(round_id=fresh_config.round_id, recipient=0, survivors=survivors))[0]
        assert isinstance(reply, UnmaskingShares)
        self_owners = {s.owner for s in reply.self_mask_shares}
        key_owners = {s.owner for s in reply.key_shares}
        assert not self_owners & key_owners
        assert self_owners == set(survivors)
        assert self_owners | key_owners == set(fresh_config.clients)


def test_a_second_unmasking_request_is_refused() -> None:
    config, updates, server, sessions, outbox = _drive_to(Stage.UNMASKING)
    request = next(m for m in outbox if m.recipient == 0)
    sessions[0].receive(request)
    with pytest.raises(PeerProtocolError) as info:
        sessions[0].receive(UnmaskRequest(round_id=config.round_id, recipient=0,
                                          survivors=tuple(sorted(set(request.survivors) - {1}))))
    assert info.value.fault is PeerFault.OUT_OF_STAGE


def test_server_drops_misbehaving_clients_and_carries_on() -> None:
    config, updates, _ = make_round(clients=8)
    server = create_server_session(config)
    sessions = {c: create_client_session(config, c, updates[c]) for c in config.clients}
    adverts = {m.recipient: sessions[m.recipient].receive(m)[0] for m in server.start()}
    server.receive(adverts[0])
    # Duplicate.
    with pytest.raises(PeerProtocolError) as info:
        server.receive(adverts[0])
    assert info.value.fault is PeerFault.DUPLICATE and info.value.peer == 0
    # Replayed from another round.
    stale = AdvertiseKeys(round_id=config.round_id + 1, sender=1, cipher_public_key=adverts[1].cipher_public_key,
                          mask_public_key=adverts[1].mask_public_key)
    with pytest.raises(PeerProtocolError) as info:
        server.receive(stale)
    assert info.value.fault is PeerFault.WRONG_ROUND and info.value.peer == 1
    # Out of stage.
    with pytest.raises(PeerProtocolError) as info:
        server.receive(MaskedInput(round_id=config.round_id, sender=2, vector=updates[2].values))
    assert info.value.fault is PeerFault.OUT_OF_STAGE
    # Someone else's bytes, and garbage.
    with pytest.raises(PeerProtocolError) as info:
        server.receive_bytes(encode_message(adverts[4]), sender=3)
    assert info.value.fault is PeerFault.WRONG_SENDER and info.value.peer == 3
    with pytest.raises(PeerProtocolError) as info:
        server.receive_bytes(b"\x01garbage", sender=5)
    assert info.value.peer == 5
    # A low-order public key.
    with pytest.raises(PeerProtocolError) as info:
        server.receive(AdvertiseKeys(round_id=config.round_id, sender=6, cipher_public_key=bytes(32),
                                     mask_public_key=adverts[6].mask_public_key))
    assert info.value.fault is PeerFault.BAD_PUBLIC_KEY
    # Not in the cohort.
    with pytest.raises(PeerProtocolError) as info:
        server.receive(AdvertiseKeys(round_id=config.round_id, sender=99, cipher_public_key=b"a" * 32,
                                     mask_public_key=b"b" * 32))
    assert info.value.fault is PeerFault.NOT_IN_COHORT
    server.receive(adverts[7])
    assert set(server.dropped) == {0, 1, 2, 3, 5, 6}
    assert server.dropped[0].fault is PeerFault.DUPLICATE
    # Only client 7 is left: below the threshold, the round aborts with the counts, stickily.
    with pytest.raises(RoundAborted) as aborted:
        server.close_stage()
    assert aborted.value.stage == "advertise-keys" and aborted.value.have == 1
    assert aborted.value.need == config.threshold
    with pytest.raises(RoundAborted):
        server.result()
    with pytest.raises(RoundAborted):
        server.close_stage()


def test_result_before_the_end_is_a_local_error() -> None:
    config, _, _ = make_round()
    server = create_server_session(config)
    with pytest.raises(LocalProtocolError):
        server.result()
    with pytest.raises(LocalProtocolError):
        server.close_stage()
    server.start()
    with pytest.raises(LocalProtocolError):
        server.start()


def test_shares_delivery_from_unknown_peer_is_refused() -> None:
    config, updates, server, sessions, outbox = _drive_to(Stage.MASKED_INPUT)
    delivery = next(m for m in outbox if isinstance(m, SharesDelivery) and m.recipient == 0)
    tampered = SharesDelivery(round_id=config.round_id, recipient=0,
                              shares=tuple(s if i else type(s)(peer=s.peer, envelope=s.envelope[:-1] + b"\x00")
                                           for i, s in enumerate(delivery.shares)))
    with pytest.raises(PeerProtocolError) as info:
        sessions[0].receive(tampered)
    assert info.value.fault is PeerFault.BAD_ENVELOPE


def test_sessions_cannot_be_pickled_and_hide_secrets() -> None:
    config, updates, _ = make_round()
    client = create_client_session(config, 0, updates[0])
    with pytest.raises(TypeError):
        pickle.dumps(client)
    assert "key" not in repr(client).lower()


def test_secagg_plus_parameters_meet_their_bounds() -> None:
    threat = ThreatModel(dropout_fraction=0.1, corrupt_fraction=0.2)
    for n in (50, 200, 1000):
        params = choose_parameters(n, threat)
        assert 2 * params.threshold >= params.degree
        assert params.security_failure <= 2.0**-40 and params.correctness_failure <= 2.0**-30
    sparse = choose_parameters(1000, threat)
    assert sparse.degree < 200 and not sparse.complete
    config = RoundConfig.create(protocol=ProtocolKind.SECAGG_PLUS, clients=range(1000),
                                ring=make_round()[0].ring, vector_length=10, threat=threat)
    degrees = {len(config.neighbours(c)) for c in config.clients}
    assert degrees == {config.degree - 1}
    assert all(v in config.neighbours(u) for u in range(0, 1000, 97) for v in config.neighbours(u))


def test_graph_is_fresh_per_round_but_shared_by_all_parties() -> None:
    ring = make_round()[0].ring
    a = RoundConfig.create(protocol=ProtocolKind.SECAGG_PLUS, clients=range(300), ring=ring, vector_length=4)
    b = RoundConfig.create(protocol=ProtocolKind.SECAGG_PLUS, clients=range(300), ring=ring, vector_length=4)
    assert a.graph_seed != b.graph_seed and a.digest != b.digest
    copy = RoundConfig(protocol=a.protocol, round_id=a.round_id, clients=a.clients, vector_length=4,
                       ring_bits=a.ring_bits, threshold=a.threshold, degree=a.degree, graph_seed=a.graph_seed)
    assert copy.digest == a.digest and copy.neighbours(5) == a.neighbours(5)


def test_client_refuses_an_update_outside_the_ring() -> None:
    from fedsecure import InvalidUpdateError
    from fedsecure.encoding import EncodedUpdate, Ring

    ring = Ring(20)
    config = RoundConfig.create(protocol=ProtocolKind.SECAGG, clients=range(4), ring=ring, vector_length=8)
    bad = np.full(8, ring.modulus, dtype=ring.dtype)
    with pytest.raises(InvalidUpdateError):
        create_client_session(config, 0, EncodedUpdate(values=bad, ring=ring, encoding_digest=bytes(32)))
    good = np.full(8, ring.modulus - 1, dtype=ring.dtype)
    create_client_session(config, 0, EncodedUpdate(values=good, ring=ring, encoding_digest=bytes(32)))
