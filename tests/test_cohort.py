"""Tier 3: the cohort simulator. The secure sum must equal the plaintext sum of the survivors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from conftest import make_round, ring_sum
from fedsecure import PeerFault
from fedsecure.encoding import EncodingConfig, Quantizer
from fedsecure.protocols import MaskedInput, ProtocolKind, RoundConfig, Stage, ThreatModel, decode_message
from fedsecure.runtime import DropoutSchedule, Simulator, client_stages, simulate

SECURE = [ProtocolKind.SECAGG, ProtocolKind.SECAGG_PLUS]
STAGES = [Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT, Stage.UNMASKING]


def _run(config, updates, schedule, **kwargs):
    report = Simulator(config, updates, schedule=schedule, **kwargs).run()
    return report


@pytest.mark.parametrize("protocol", SECURE)
@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
def test_exact_sum_with_dropouts_at_each_stage(protocol: ProtocolKind, stage: Stage, fraction: float) -> None:
    clients = 20
    threat = ThreatModel(dropout_fraction=0.45, corrupt_fraction=0.0)
    config, updates, _ = make_round(protocol, clients, 32, threat=threat)
    dropped = list(range(0, round(fraction * clients)))
    report = _run(config, updates, DropoutSchedule.at_stages({stage: dropped}))
    assert report.abort is None, report.abort
    result = report.result
    # Clients that drop before the masked input are absent from the sum; later ones are counted.
    expected_survivors = set(config.clients) - (set(dropped) if stage <= Stage.MASKED_INPUT else set())
    assert result.survivors == expected_survivors
    np.testing.assert_array_equal(result.ring_sum, ring_sum(config, updates, result.survivors))


@pytest.mark.parametrize("protocol", SECURE)
def test_exact_sum_with_dropouts_spread_over_every_stage(protocol: ProtocolKind) -> None:
    config, updates, _ = make_round(protocol, 40, 16, threat=ThreatModel(dropout_fraction=0.3, corrupt_fraction=0.1))
    rng = np.random.default_rng(3)  # noqa: csprng-ok (test schedule)
    schedule = DropoutSchedule.per_stage(config.clients, {s: 0.06 for s in STAGES}, rng=rng)
    report = _run(config, updates, schedule)
    assert report.abort is None
    np.testing.assert_array_equal(report.result.ring_sum, ring_sum(config, updates, report.result.survivors))
    assert len(report.result.dropped) == len(schedule.silent_from)


@pytest.mark.parametrize("stage", STAGES)
def test_exactly_t_survivors_succeed_and_t_minus_1_abort(stage: Stage) -> None:
    config, updates, _ = make_round(ProtocolKind.SECAGG, 9)
    t = config.threshold
    n = len(config.clients)
    ok = _run(config, updates, DropoutSchedule.at_stages({stage: range(n - t)}))
    assert ok.abort is None
    np.testing.assert_array_equal(ok.result.ring_sum, ring_sum(config, updates, ok.result.survivors))
    config, updates, _ = make_round(ProtocolKind.SECAGG, 9)
    failed = _run(config, updates, DropoutSchedule.at_stages({stage: range(n - t + 1)}))
    assert failed.result is None and failed.abort is not None
    assert failed.abort.have == t - 1 and failed.abort.need == t
    assert failed.abort.stage == stage.label


def test_secagg_plus_sparse_round_with_dropouts() -> None:
    threat = ThreatModel(dropout_fraction=0.1, corrupt_fraction=0.2)
    report = simulate(protocol=ProtocolKind.SECAGG_PLUS, clients=300, dimension=50, dropout=0.1, seed=4,
                      threat=threat)
    config = report.round.config
    assert not config.complete_graph
    assert report.correct and not report.round.aborted
    assert report.max_abs_error < 300 / report.encoding.scale
    # Each client talks to its neighbours only: far fewer envelopes than the complete graph would need.
    assert report.to_json()["bytes_down_per_client"] < 300 * 60


def test_a_client_sending_garbage_is_dropped_and_the_round_completes() -> None:
    config, updates, _ = make_round(ProtocolKind.SECAGG, 10)

    def tamper(sender: int, stage: Stage, data: bytes) -> bytes | None:
        if sender == 3 and stage is Stage.MASKED_INPUT:
            return data[:-4]  # Truncated vector.
        if sender == 4 and stage is Stage.SHARE_KEYS:
            return data + b"\x00"  # Trailing junk.
        if sender == 5 and stage is Stage.MASKED_INPUT:
            message = decode_message(data)
            assert isinstance(message, MaskedInput)
            wrong = MaskedInput(round_id=message.round_id, sender=5, vector=message.vector[:-1].copy())
            from fedsecure.protocols import encode_message

            return encode_message(wrong)
        return data

    report = _run(config, updates, DropoutSchedule(), interceptor=tamper)
    assert report.abort is None
    faults = {error.peer: error.fault for error in report.rejected}
    assert faults == {3: PeerFault.MALFORMED, 4: PeerFault.MALFORMED, 5: PeerFault.WRONG_SIZE}
    assert report.result.survivors == set(config.clients) - {3, 4, 5}
    np.testing.assert_array_equal(report.result.ring_sum, ring_sum(config, updates, report.result.survivors))
    assert report.result.dropped[4].stage is Stage.SHARE_KEYS


def test_a_duplicated_masked_input_is_counted_once() -> None:
    from fedsecure import PeerProtocolError
    from fedsecure.protocols import create_client_session, create_server_session

    config, updates, _ = make_round(ProtocolKind.SECAGG, 8)
    server = create_server_session(config)
    sessions = {c: create_client_session(config, c, updates[c]) for c in config.clients}
    outbox = server.start()
    while server.stage is not Stage.DONE:
        for message in outbox:
            for reply in sessions[message.recipient].receive(message):
                server.receive(reply)
                if isinstance(reply, MaskedInput) and reply.sender == 2:
                    # The same masked input again: refused, and the sender is dropped from later stages.
                    with pytest.raises(PeerProtocolError) as info:
                        server.receive(reply)
                    assert info.value.fault is PeerFault.DUPLICATE and info.value.peer == 2
        outbox = server.close_stage()
    result = server.result()
    # Its input was already in the running sum, so it counts once; its self-mask came off via the others' shares.
    assert 2 in result.survivors and result.dropped[2].stage is Stage.MASKED_INPUT
    np.testing.assert_array_equal(result.ring_sum, ring_sum(config, updates, result.survivors))


def test_plaintext_baseline_sums_too() -> None:
    config, updates, _ = make_round(ProtocolKind.PLAINTEXT, 6)
    report = _run(config, updates, DropoutSchedule.at_stages({Stage.PLAINTEXT_INPUT: [1]}))
    np.testing.assert_array_equal(report.result.ring_sum, ring_sum(config, updates, set(range(6)) - {1}))
    assert client_stages(ProtocolKind.PLAINTEXT) == (Stage.PLAINTEXT_INPUT,)


def test_masked_vector_is_uniform_even_for_an_all_zero_input() -> None:
    encoding = EncodingConfig(dimension=1 << 14, clients=5, clip=1.0, scale=4.0, ring_bits=12)
    quantizer = Quantizer(encoding)
    config = RoundConfig.create(protocol=ProtocolKind.SECAGG, clients=range(5), encoding=encoding)
    updates = {c: quantizer.encode(np.zeros(encoding.dimension)) for c in config.clients}
    captured: dict[int, np.ndarray] = {}

    def capture(sender: int, stage: Stage, data: bytes) -> bytes:
        if stage is Stage.MASKED_INPUT:
            message = decode_message(data)
            captured[sender] = np.array(message.vector)  # type: ignore[union-attr]
        return data

    report = Simulator(config, updates, interceptor=capture).run()
    assert report.abort is None and not report.result.ring_sum.any()
    for vector in captured.values():
        assert int(vector.max()) < 1 << 12
        counts = np.bincount(vector.astype(np.int64) >> 4, minlength=256)  # 256 bins over Z_(2^12).
        assert stats.chisquare(counts).pvalue > 1e-4
        assert stats.chisquare(np.bincount(vector.astype(np.int64) & 0xFF, minlength=256)).pvalue > 1e-4


def test_transcript_records_public_facts_only() -> None:
    config, updates, _ = make_round(ProtocolKind.SECAGG, 5)
    report = _run(config, updates, DropoutSchedule())
    types = {r.message_type for r in report.transcript}
    assert types == {"RoundStart", "AdvertiseKeys", "KeysBroadcast", "ShareKeys", "SharesDelivery", "MaskedInput",
                     "UnmaskRequest", "UnmaskingShares"}
    assert all(r.size > 0 for r in report.transcript)
    assert report.bytes_sent(0) > 4 * config.vector_length
    assert set(report.client_seconds) == set(config.clients)


@pytest.mark.slow
def test_secagg_plus_thousand_clients_with_dropouts() -> None:
    report = simulate(protocol=ProtocolKind.SECAGG_PLUS, clients=1000, dimension=1000, dropout=0.1, seed=9)
    assert not report.round.aborted and report.correct
    assert report.round.config.degree < 200


def test_garbage_envelopes_do_not_take_honest_clients_down() -> None:
    import os

    from fedsecure.protocols import EncryptedShare, ShareKeys, encode_message

    config, updates, _ = make_round(ProtocolKind.SECAGG, 8)

    def garble(sender: int, stage: Stage, data: bytes) -> bytes:
        if sender == 3 and stage is Stage.SHARE_KEYS:
            message = decode_message(data)
            assert isinstance(message, ShareKeys)
            junk = tuple(EncryptedShare(s.peer, os.urandom(len(s.envelope))) for s in message.shares)
            return encode_message(ShareKeys(round_id=message.round_id, sender=3,
                                            seed_commitment=message.seed_commitment, shares=junk))
        return data

    report = Simulator(config, updates, interceptor=garble).run()
    # Every honest client carried on; the round cannot unmask client 3 and says so, naming it.
    assert report.client_errors == {}
    assert report.abort is not None and "survivor 3" in report.abort.reason
    assert report.abort.stage == "unmasking"


def test_a_corrupted_share_aborts_instead_of_returning_a_wrong_sum() -> None:
    from fedsecure.protocols import ShareValue, UnmaskingShares, encode_message

    config, updates, _ = make_round(ProtocolKind.SECAGG, 6)

    def corrupt(sender: int, stage: Stage, data: bytes) -> bytes:
        if sender == 0 and stage is Stage.UNMASKING:
            message = decode_message(data)
            assert isinstance(message, UnmaskingShares)
            first, *rest = message.self_mask_shares
            forged = (ShareValue(first.owner, (first.value + 1) % (2**256)), *rest)
            return encode_message(UnmaskingShares(round_id=message.round_id, sender=0, self_mask_shares=forged,
                                                  key_shares=message.key_shares))
        return data

    report = Simulator(config, updates, interceptor=corrupt).run()
    assert report.result is None and report.abort is not None
    assert "commitment" in report.abort.reason
