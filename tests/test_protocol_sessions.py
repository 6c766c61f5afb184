"""Tier 2: the sans-IO state machines, driven by hand (no transport)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from conftest import make_round, ring_sum
from fedsecure.encoding import EncodingConfig, Quantizer
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


def test_client_refuses_a_key_list_below_the_threshold() -> None:
    config, updates, server, sessions, outbox = _drive_to(Stage.SHARE_KEYS)
    broadcast = next(m for m in outbox if isinstance(m, KeysBroadcast) and m.recipient == 0)
    own = next(k for k in broadcast.keys if k.owner == 0)
    others = tuple(k for k in broadcast.keys if k.owner != 0)
    short = KeysBroadcast(round_id=config.round_id, recipient=0, keys=(own,) + others[: config.threshold - 2])
    with pytest.raises(PeerProtocolError) as info:
        sessions[0].receive(short)
    assert info.value.fault is PeerFault.BAD_SURVIVOR_SET


def test_client_refuses_a_key_list_with_a_repeated_key() -> None:
    from fedsecure.protocols import PublicKeys

    config, updates, server, sessions, outbox = _drive_to(Stage.SHARE_KEYS)
    broadcast = next(m for m in outbox if isinstance(m, KeysBroadcast) and m.recipient == 0)
    keys = list(broadcast.keys)
    victim = next(i for i, k in enumerate(keys) if k.owner != 0)
    copied = next(k for k in keys if k.owner not in (0, keys[victim].owner))
    keys[victim] = PublicKeys(keys[victim].owner, copied.cipher_public_key, keys[victim].mask_public_key)
    with pytest.raises(PeerProtocolError) as info:
        sessions[0].receive(KeysBroadcast(round_id=config.round_id, recipient=0, keys=tuple(keys)))
    assert info.value.fault is PeerFault.BAD_PUBLIC_KEY and "twice" in str(info.value)


def test_client_refuses_a_key_list_that_alters_its_own_keys() -> None:
    from fedsecure.protocols import PublicKeys

    config, updates, server, sessions, outbox = _drive_to(Stage.SHARE_KEYS)
    broadcast = next(m for m in outbox if isinstance(m, KeysBroadcast) and m.recipient == 0)
    keys = tuple(PublicKeys(0, b"\x09" * 32, k.mask_public_key) if k.owner == 0 else k for k in broadcast.keys)
    with pytest.raises(PeerProtocolError) as info:
        sessions[0].receive(KeysBroadcast(round_id=config.round_id, recipient=0, keys=keys))
    assert info.value.fault is PeerFault.BAD_PUBLIC_KEY and "own keys" in str(info.value)


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


def test_an_unreadable_envelope_is_recorded_and_the_client_carries_on() -> None:
    config, updates, server, sessions, outbox = _drive_to(Stage.MASKED_INPUT)
    delivery = next(m for m in outbox if isinstance(m, SharesDelivery) and m.recipient == 0)
    first = delivery.shares[0]
    tampered = SharesDelivery(round_id=config.round_id, recipient=0,
                              shares=(type(first)(peer=first.peer, envelope=first.envelope[:-1] + b"\x00"),
                                      *delivery.shares[1:]))
    replies = sessions[0].receive(tampered)
    assert isinstance(replies[0], MaskedInput)
    assert sessions[0].unreadable_envelopes == {first.peer}


def test_shares_from_a_client_that_advertised_no_keys_are_refused() -> None:
    config, updates, server, sessions, outbox = _drive_to(Stage.MASKED_INPUT, clients=6)
    delivery = next(m for m in outbox if isinstance(m, SharesDelivery) and m.recipient == 0)
    stranger = type(delivery.shares[0])(peer=99, envelope=delivery.shares[0].envelope)
    with pytest.raises(PeerProtocolError) as info:
        sessions[0].receive(SharesDelivery(round_id=config.round_id, recipient=0,
                                           shares=(*delivery.shares, stranger)))
    assert info.value.fault is PeerFault.BAD_SHARE


def test_sessions_cannot_be_pickled_and_hide_secrets() -> None:
    config, updates, _ = make_round()
    client = create_client_session(config, 0, updates[0])
    with pytest.raises(TypeError):
        pickle.dumps(client)
    secrets = [client._cipher_key.raw_private_bytes().hex(), client._mask_key.raw_private_bytes().hex()]
    assert not any(secret in repr(client) for secret in secrets)
    client.abort()
    assert client._cipher_key is None and client._update is None and client.state is ClientState.ABORTED


def test_secagg_plus_parameters_meet_their_bounds() -> None:
    threat = ThreatModel(dropout_fraction=0.1, corrupt_fraction=0.2)
    for n in (50, 200, 1000):
        params = choose_parameters(n, threat)
        assert 2 * params.threshold >= params.degree
        assert params.security_failure <= 2.0**-40 and params.correctness_failure <= 2.0**-30
    sparse = choose_parameters(1000, threat)
    assert sparse.degree < 200 and not sparse.complete
    encoding = EncodingConfig.fit_scale(dimension=10, clients=1000, clip=1.0)
    config = RoundConfig.create(protocol=ProtocolKind.SECAGG_PLUS, clients=range(1000), encoding=encoding,
                                threat=threat)
    degrees = {len(config.neighbours(c)) for c in config.clients}
    assert degrees == {config.degree - 1}
    # The graph is undirected: v is u's neighbour exactly when u is v's.
    assert all(u in config.neighbours(v) for u in config.clients for v in config.neighbours(u))


def test_graph_is_fresh_per_round_but_shared_by_all_parties() -> None:
    encoding = EncodingConfig.fit_scale(dimension=4, clients=300, clip=1.0)
    a = RoundConfig.create(protocol=ProtocolKind.SECAGG_PLUS, clients=range(300), encoding=encoding)
    b = RoundConfig.create(protocol=ProtocolKind.SECAGG_PLUS, clients=range(300), encoding=encoding)
    assert a.graph_seed != b.graph_seed and a.digest != b.digest
    copy = RoundConfig(protocol=a.protocol, round_id=a.round_id, clients=a.clients, vector_length=4,
                       ring_bits=a.ring_bits, threshold=a.threshold, degree=a.degree, graph_seed=a.graph_seed,
                       encoding_digest=a.encoding_digest)
    assert copy.digest == a.digest and copy.neighbours(5) == a.neighbours(5)


def test_client_refuses_an_update_outside_the_ring_or_from_another_encoding() -> None:
    from fedsecure import InvalidUpdateError
    from fedsecure.encoding import EncodedUpdate

    encoding = EncodingConfig(dimension=8, clients=4, clip=1.0, scale=16.0)
    ring = encoding.ring
    assert ring.bits < 32
    config = RoundConfig.create(protocol=ProtocolKind.SECAGG, clients=range(4), encoding=encoding)
    bad = np.full(8, ring.modulus, dtype=ring.dtype)
    with pytest.raises(InvalidUpdateError, match="outside"):
        create_client_session(config, 0, EncodedUpdate(values=bad, ring=ring, encoding_digest=encoding.digest(),
                                                                   max_coordinate=encoding.max_coordinate))
    good = Quantizer(encoding).encode(np.zeros(8))
    create_client_session(config, 0, good)
    # Same ring and length, another scale: refused, since the sum would decode wrongly.
    other = EncodingConfig(dimension=8, clients=4, clip=1.0, scale=8.0, ring_bits=ring.bits)
    with pytest.raises(InvalidUpdateError, match="another EncodingConfig"):
        create_client_session(config, 0, Quantizer(other).encode(np.zeros(8)))


def test_a_cohort_larger_than_the_encoding_allows_is_refused() -> None:
    from fedsecure import ConfigurationError

    encoding = EncodingConfig(dimension=8, clients=4, clip=1.0, scale=16.0)
    with pytest.raises(ConfigurationError) as info:
        RoundConfig.create(protocol=ProtocolKind.SECAGG, clients=range(40), encoding=encoding)
    assert info.value.parameter == "clients"


def test_secure_rounds_need_two_clients_and_a_threshold_of_two() -> None:
    from fedsecure import ConfigurationError

    encoding = EncodingConfig(dimension=8, clients=4, clip=1.0, scale=16.0)
    with pytest.raises(ConfigurationError):
        RoundConfig.create(protocol=ProtocolKind.SECAGG, clients=[0], encoding=encoding)
    config = RoundConfig.create(protocol=ProtocolKind.SECAGG, clients=range(2), encoding=encoding,
                                threat=ThreatModel(dropout_fraction=0.0))
    assert config.threshold == 2


def test_parameters_for_cohorts_beyond_a_thousand_do_not_overflow() -> None:
    from fedsecure.protocols import choose_parameters, complete_graph_parameters

    assert complete_graph_parameters(5000, ThreatModel()).threshold == 2500
    large = choose_parameters(100_000, ThreatModel())
    assert large.degree < 200 and large.security_failure < 1e-9
