"""Paillier sessions: both trust arrangements end to end in the simulator, and every refusal the issue lists.

Keys here are deliberately tiny (INSECURE_KEY_BITS) so that the suite stays fast;
``insecure=True`` is required to use them, which is the point of one test below.
"""

from __future__ import annotations

import pickle
from dataclasses import fields, replace

import numpy as np
import pytest

from fedsecure import ConfigurationError, PeerFault, PeerProtocolError, RoundAborted
from fedsecure.encoding import EncodingConfig, Quantizer
from fedsecure.protocols import (
    DECRYPTOR,
    AggregateRequest,
    CiphertextCommitment,
    DecryptionRequest,
    EncryptedInput,
    PaillierClientSession,
    PaillierDeployment,
    ProtocolKind,
    RoundConfig,
    Stage,
    create_client_session,
    create_server_session,
    decode_message,
    encode_message,
)
from fedsecure.runtime import DropoutSchedule, Simulator, plaintext_ring_sum

INSECURE_KEY_BITS = 512
N = 6
DIMENSION = 300


@pytest.fixture(scope="module")
def separate() -> PaillierDeployment:
    return PaillierDeployment.create(ProtocolKind.PAILLIER, range(N), key_bits=INSECURE_KEY_BITS, insecure=True)


@pytest.fixture(scope="module")
def threshold() -> PaillierDeployment:
    return PaillierDeployment.create(ProtocolKind.PAILLIER_THRESHOLD, range(N), key_bits=INSECURE_KEY_BITS,
                                     insecure=True, decryption_threshold=4)


def _round(deployment: PaillierDeployment, round_id: int, *, ring_bits: int = 32, seed: int = 0):  # type: ignore[no-untyped-def]
    protocol = ProtocolKind.PAILLIER_THRESHOLD if deployment.keys.threshold_decryption else ProtocolKind.PAILLIER
    encoding = EncodingConfig.fit_scale(dimension=DIMENSION, clients=N, clip=4.0, ring_bits=ring_bits, max_weight=50)
    quantizer = Quantizer(encoding)
    rng = np.random.default_rng(seed)  # noqa: csprng-ok (test data)
    updates = {c: quantizer.encode(rng.normal(size=DIMENSION), weight=10 + c) for c in range(N)}
    config = RoundConfig.create(protocol=protocol, clients=updates, encoding=encoding, round_id=round_id,
                                paillier=deployment.keys)
    return config, updates


@pytest.mark.parametrize("ring_bits", [12, 32, 64])
@pytest.mark.parametrize("kind", ["separate", "threshold"])
def test_exact_sum_with_dropouts_at_every_client_stage(kind: str, ring_bits: int, request) -> None:  # type: ignore[no-untyped-def]
    deployment = request.getfixturevalue(kind)
    config, updates = _round(deployment, round_id=100 + ring_bits, ring_bits=ring_bits)
    dropped = {Stage.CIPHERTEXT_INPUT: [1]}
    if kind == "threshold":
        dropped[Stage.PARTIAL_DECRYPTION] = [4]  # contributed, then silent when asked to decrypt
    report = Simulator(config, updates, schedule=DropoutSchedule.at_stages(dropped), paillier=deployment).run()
    assert report.abort is None and report.result is not None
    assert report.result.survivors == frozenset({0, 2, 3, 4, 5})
    np.testing.assert_array_equal(report.result.ring_sum, plaintext_ring_sum(updates, report.result.survivors))
    parties = {r.sender for r in report.transcript} | {r.receiver for r in report.transcript}
    assert ("decryptor" in parties) == (kind == "separate")


def test_round_aborts_cleanly_below_the_minimum_and_the_next_round_proceeds(separate, threshold) -> None:  # type: ignore[no-untyped-def]
    for deployment in (separate, threshold):
        config, updates = _round(deployment, round_id=200)
        silent = [c for c in range(N) if c >= config.threshold - 1]
        report = Simulator(config, updates, schedule=DropoutSchedule.at_stages({Stage.CIPHERTEXT_INPUT: silent}),
                           paillier=deployment).run()
        assert report.result is None and report.abort is not None and "contributions" in report.abort.reason
        config, updates = _round(deployment, round_id=201)
        assert Simulator(config, updates, paillier=deployment).run().result is not None


def test_threshold_round_aborts_when_fewer_than_t_holders_answer(threshold) -> None:  # type: ignore[no-untyped-def]
    config, updates = _round(threshold, round_id=300)
    schedule = DropoutSchedule.at_stages({Stage.PARTIAL_DECRYPTION: [0, 1, 2, 3]})  # 2 answer, t = 4
    report = Simulator(config, updates, schedule=schedule, paillier=threshold).run()
    assert report.result is None and report.abort is not None
    assert (report.abort.have, report.abort.need) == (2, 4)


def test_threshold_round_survives_one_holder_answering_garbage(threshold) -> None:  # type: ignore[no-untyped-def]
    config, updates = _round(threshold, round_id=310)

    def garbage(client: int, stage: Stage, data: bytes) -> bytes:
        if client == 0 and stage is Stage.PARTIAL_DECRYPTION:
            message = decode_message(data)
            junk = bytes([7]) * len(message.partials)  # type: ignore[union-attr]
            return encode_message(replace(message, partials=junk))  # type: ignore[type-var]
        return data

    report = Simulator(config, updates, interceptor=garbage, paillier=threshold).run()
    assert report.result is not None
    np.testing.assert_array_equal(report.result.ring_sum, plaintext_ring_sum(updates, range(N)))


def _deliver(server, sessions, messages) -> None:  # type: ignore[no-untyped-def]
    for message in messages:
        for reply in sessions[message.recipient].receive(decode_message(encode_message(message))):
            server.receive_bytes(encode_message(reply), sender=reply.sender)


def _collect(deployment: PaillierDeployment, round_id: int):  # type: ignore[no-untyped-def]
    """Run the commitment and input stages by hand; return the config, the server and its aggregate requests."""
    config, updates = _round(deployment, round_id=round_id)
    server = create_server_session(config)
    sessions = {c: create_client_session(config, c, updates[c], deployment.credentials[c]) for c in range(N)}
    _deliver(server, sessions, server.start())
    _deliver(server, sessions, server.close_stage())
    return config, server, server.close_stage(), sessions, updates


def _approved(deployment: PaillierDeployment, round_id: int):  # type: ignore[no-untyped-def]
    """Run every stage up to the decryption requests; return them with the config, server, sessions and updates."""
    config, server, requests, sessions, updates = _collect(deployment, round_id)
    _deliver(server, sessions, requests)
    return config, server, server.close_stage(), sessions, updates


def test_key_holder_refuses_a_second_decryption_for_the_same_round(separate) -> None:  # type: ignore[no-untyped-def]
    config, server, (request,), _, updates = _approved(separate, round_id=400)
    answer = separate.key_holder.receive(config, request)
    with pytest.raises(PeerProtocolError) as refused:
        separate.key_holder.receive(config, request)
    assert refused.value.fault is PeerFault.ALREADY_DECRYPTED and refused.value.peer == "server"
    server.receive_bytes(encode_message(answer), sender=DECRYPTOR)
    server.close_stage()
    np.testing.assert_array_equal(server.result().ring_sum, plaintext_ring_sum(updates, range(N)))


def test_the_key_holder_receives_no_contribution_only_the_aggregate_and_approvals(separate) -> None:  # type: ignore[no-untyped-def]
    config, _, (request,), _, _ = _approved(separate, round_id=402)
    assert isinstance(request, DecryptionRequest) and request.recipient == DECRYPTOR
    assert {f.name for f in fields(request)} == {"round_id", "recipient", "contributors", "aggregate", "approvals"}
    assert request.contributors == tuple(range(N)) and len(request.approvals) == N


def test_key_holder_refuses_unapproved_underapproved_and_too_small_aggregates(separate) -> None:  # type: ignore[no-untyped-def]
    config, _, (request,), _, _ = _approved(separate, round_id=401)
    holder = separate.key_holder
    assert (holder.min_contributors, holder.approval_quorum) == (3, 2)  # one colluder tolerated among 6

    def refused(bad: DecryptionRequest) -> PeerFault:
        with pytest.raises(PeerProtocolError) as error:
            holder.receive(config, bad)
        return error.value.fault

    # Another aggregate than the approved one: the approvals cover the aggregate's digest.
    other = bytearray(request.aggregate)
    other[5] ^= 1
    assert refused(replace(request, aggregate=bytes(other))) is PeerFault.BAD_SIGNATURE
    # Another contributor set (the victim's alone, or the set without one client): the approvals cover it too.
    assert refused(replace(request, contributors=request.contributors[1:],
                           approvals=request.approvals[1:])) is PeerFault.BAD_SIGNATURE
    # Fewer approvals than the quorum (one colluder's approval alone), or none.
    assert refused(replace(request, approvals=request.approvals[:1])) is PeerFault.TOO_FEW_APPROVALS
    assert refused(replace(request, approvals=())) is PeerFault.TOO_FEW_APPROVALS
    # An approval by a client outside the contributor set.
    few = replace(request, contributors=request.contributors[:2], approvals=request.approvals[:2])
    assert refused(few) is PeerFault.TOO_FEW_CONTRIBUTORS
    assert refused(replace(request, contributors=request.contributors[:4],
                           approvals=request.approvals[4:])) is PeerFault.BAD_AGGREGATE
    # A forged approval signature.
    forged = replace(request.approvals[0], signature=bytes(64))
    assert refused(replace(request, approvals=(forged, *request.approvals[1:]))) is PeerFault.BAD_SIGNATURE
    assert holder.decrypted_rounds.isdisjoint({401})  # nothing was decrypted along the way
    assert holder.receive(config, request).contributors == tuple(range(N))


def test_a_client_approves_only_an_aggregate_it_checked(separate) -> None:  # type: ignore[no-untyped-def]
    config, _, requests, sessions, _ = _collect(separate, round_id=403)
    request = requests[0]
    contributions = request.contributions

    saved = sessions[request.recipient].export_state()

    def refused(bad: AggregateRequest) -> PeerFault:
        # Each refusal aborts the session for good: start each from the saved approval stage.
        session = PaillierClientSession.restore_state(config, saved, separate.credentials[request.recipient])
        with pytest.raises(PeerProtocolError) as error:
            session.receive(bad)
        return error.value.fault

    # An aggregate that is not the product of the listed ciphertexts: say, one client's ciphertext alone.
    assert refused(replace(request, aggregate=contributions[0].ciphertexts)) is PeerFault.BAD_AGGREGATE
    # Ciphertexts that are not the committed ones, or a contribution re-attributed to another client.
    forged = replace(contributions[0], ciphertexts=contributions[1].ciphertexts)
    assert refused(replace(request, contributions=(forged, *contributions[1:]))) is PeerFault.BAD_AGGREGATE
    stolen = replace(contributions[0], sender=contributions[1].sender, ciphertexts=contributions[1].ciphertexts)
    assert refused(replace(request, contributions=(contributions[0], stolen, *contributions[2:]))) is PeerFault.BAD_SIGNATURE
    # Another client's proof: it was made for that client's ciphertexts and id.
    swapped = replace(contributions[0], proof=contributions[1].proof)
    assert refused(replace(request, contributions=(swapped, *contributions[1:]))) is PeerFault.BAD_PROOF
    # A commitment set other than the one the contributors revealed against.
    assert refused(replace(request, commitments=request.commitments[1:],
                           contributions=contributions[1:])) is PeerFault.BAD_SIGNATURE
    # Duplicates cannot even be built or decoded.
    with pytest.raises(ValueError, match="twice"):
        replace(request, contributions=(contributions[0], contributions[0], *contributions[2:]))
    # A single contribution would decrypt one client's input: refused below the minimum.
    assert refused(replace(request, contributions=contributions[:1],
                           aggregate=contributions[0].ciphertexts)) is PeerFault.TOO_FEW_CONTRIBUTORS


def test_threshold_holder_decrypts_only_the_set_it_approved_with_a_quorum_and_once(threshold) -> None:  # type: ignore[no-untyped-def]
    config, server, requests, sessions, _ = _approved(threshold, round_id=500)
    first = requests[0]
    assert len(first.approvals) == N and threshold.keys.decryption_threshold == 4

    def refused(holder: int, bad: DecryptionRequest) -> PeerFault:
        with pytest.raises(PeerProtocolError) as error:
            sessions[holder].receive(bad)
        return error.value.fault

    # A set other than the one it approved (the victim left out), then a quorum below t.
    assert refused(first.recipient, replace(first, contributors=first.contributors[1:])) is PeerFault.BAD_AGGREGATE
    second = requests[1]
    assert refused(second.recipient, replace(second, approvals=second.approvals[:3])) is PeerFault.TOO_FEW_APPROVALS
    # The sessions aborted for good; another holder answers the genuine request once ...
    assert sessions[first.recipient].state.value == "aborted"
    holder = requests[2].recipient
    sessions[holder].receive(requests[2])
    # ... and its credentials refuse a second partial decryption for the round, even in a fresh session.
    _, _, repeat, fresh, _ = _approved(threshold, round_id=500)
    with pytest.raises(PeerProtocolError) as error:
        fresh[holder].receive(next(r for r in repeat if r.recipient == holder))
    assert error.value.fault is PeerFault.ALREADY_DECRYPTED


def test_server_drops_a_client_with_a_bad_signature_and_goes_on(separate) -> None:  # type: ignore[no-untyped-def]
    config, updates = _round(separate, round_id=600)

    def tamper(client: int, stage: Stage, data: bytes) -> bytes:
        if client == 3 and stage is Stage.CIPHERTEXT_INPUT:
            return data[:-1] + bytes([data[-1] ^ 1])  # flip a bit of the signature
        return data

    report = Simulator(config, updates, interceptor=tamper, paillier=separate).run()
    assert [(e.peer, e.fault) for e in report.rejected] == [(3, PeerFault.BAD_SIGNATURE)]
    assert report.result is not None and 3 not in report.result.survivors
    np.testing.assert_array_equal(report.result.ring_sum, plaintext_ring_sum(updates, report.result.survivors))


def test_server_drops_a_client_whose_proof_fails_and_goes_on(separate) -> None:  # type: ignore[no-untyped-def]
    config, updates = _round(separate, round_id=610)

    def tamper(client: int, stage: Stage, data: bytes) -> bytes:
        if client == 2 and stage is Stage.CIPHERTEXT_INPUT:
            message = decode_message(data)
            proof = bytearray(message.proof)  # type: ignore[union-attr]
            proof[-1] ^= 1
            return encode_message(replace(message, proof=bytes(proof)))  # type: ignore[type-var]
        return data

    report = Simulator(config, updates, interceptor=tamper, paillier=separate).run()
    assert [(e.peer, e.fault) for e in report.rejected] == [(2, PeerFault.BAD_PROOF)]
    assert report.result is not None and report.result.survivors == frozenset(range(N)) - {2}
    np.testing.assert_array_equal(report.result.ring_sum, plaintext_ring_sum(updates, report.result.survivors))


def test_server_refuses_a_total_from_anyone_but_the_decryptor(separate) -> None:  # type: ignore[no-untyped-def]
    config, server, (request,), _, _ = _approved(separate, round_id=700)
    answer = separate.key_holder.receive(config, request)
    fake = replace(answer, sender=2)
    with pytest.raises(PeerProtocolError) as error:
        server.receive_bytes(encode_message(fake), sender=2)
    assert error.value.fault is PeerFault.WRONG_SENDER and error.value.peer == 2
    assert 2 in server.dropped
    # The genuine total still lands, and client 2's contribution, already in the product, is still counted.
    server.receive_bytes(encode_message(answer), sender=DECRYPTOR)
    server.close_stage()
    assert server.result().survivors == frozenset(range(N))


def test_server_refuses_a_wrong_total_and_names_the_key_holder(separate) -> None:  # type: ignore[no-untyped-def]
    # A key holder that shifts the total (one plaintext off by one) is caught by the aggregate's randomness.
    config, server, (request,), _, _ = _approved(separate, round_id=710)
    answer = separate.key_holder.receive(config, request)
    width = (separate.keys.key_bits + 7) // 8
    first = (int.from_bytes(answer.plaintexts[:width], "little") + 1).to_bytes(width, "little")
    with pytest.raises(PeerProtocolError) as error:
        server.receive_bytes(encode_message(replace(answer, plaintexts=first + answer.plaintexts[width:])),
                             sender=DECRYPTOR)
    assert error.value.fault is PeerFault.BAD_PROOF and error.value.peer == DECRYPTOR
    with pytest.raises(RoundAborted) as aborted:
        server.close_stage()
    assert "decryptor" in aborted.value.reason and "does not match" in aborted.value.reason


def test_a_holder_that_shifts_the_total_is_dropped_by_its_proof(threshold) -> None:  # type: ignore[no-untyped-def]
    import gmpy2

    from fedsecure.crypto import ciphertexts_from_bytes, ciphertexts_to_bytes

    config, updates = _round(threshold, round_id=720)
    public = threshold.keys.public_key

    def shift(client: int, stage: Stage, data: bytes) -> bytes:
        # Multiplying a partial by (1 + n)^k moves the combined plaintext by a multiple of k: undetectable
        # without a proof of correct partial decryption.
        if client == 1 and stage is Stage.PARTIAL_DECRYPTION:
            message = decode_message(data)
            partials = ciphertexts_from_bytes(message.partials, public)  # type: ignore[union-attr]
            partials[0] = gmpy2.f_mod(partials[0] * (1 + 5 * public.n), public.nsquare)
            return encode_message(replace(message, partials=ciphertexts_to_bytes(partials, public)))  # type: ignore[type-var]
        return data

    report = Simulator(config, updates, interceptor=shift, paillier=threshold).run()
    assert [(e.peer, e.fault) for e in report.rejected] == [(1, PeerFault.BAD_PROOF)]
    assert report.result is not None
    np.testing.assert_array_equal(report.result.ring_sum, plaintext_ring_sum(updates, range(N)))


def test_insecure_keys_need_to_be_asked_for_and_slots_that_cannot_fit_are_refused() -> None:
    with pytest.raises(ConfigurationError) as error:
        PaillierDeployment.create(ProtocolKind.PAILLIER, range(3), key_bits=1024)
    assert error.value.parameter == "key_bits"
    tiny = PaillierDeployment.create(ProtocolKind.PAILLIER, range(3), key_bits=64, insecure=True)
    encoding = EncodingConfig.fit_scale(dimension=4, clients=3, clip=1.0, ring_bits=64)
    with pytest.raises(ConfigurationError) as error:
        RoundConfig.create(protocol=ProtocolKind.PAILLIER, clients=range(3), encoding=encoding, paillier=tiny.keys)
    assert error.value.parameter == "ring_bits"
    with pytest.raises(ConfigurationError) as error:
        RoundConfig.create(protocol=ProtocolKind.PAILLIER_THRESHOLD, clients=range(3), encoding=encoding,
                           paillier=tiny.keys)
    assert error.value.parameter == "paillier"


def test_paillier_secrets_refuse_pickling_and_stay_out_of_reprs(separate, threshold) -> None:  # type: ignore[no-untyped-def]
    for secret in (separate, separate.key_holder, separate.credentials[0], threshold.credentials[0],
                   threshold.credentials[0].key_share):
        with pytest.raises(TypeError):
            pickle.dumps(secret)
        assert "mpz" not in repr(secret)
    share = threshold.credentials[0].key_share
    assert str(int(share._secret)) not in repr(share) and str(int(share._secret)) not in repr(threshold.credentials[0])
    contribution = EncryptedInput(round_id=1, sender=1, ciphertexts=b"\x07" * 64, proof=b"k", signature=b"s" * 64)
    assert "\\x07" not in repr(contribution)


# ---- attacks found in review: each must now fail -----------------------------------------------------
def test_a_colluding_client_cannot_cancel_the_others_to_isolate_a_victim(separate) -> None:  # type: ignore[no-untyped-def]
    # The attack: client 5 submits E(0) * prod_{j in 1..4} c_j^-1, so that the product decrypts to client 0's
    # input alone. It needs the honest ciphertexts first; commitments made before any reveal rule that out.
    import gmpy2

    from fedsecure.crypto import PaillierEncryptor, ciphertexts_from_bytes, ciphertexts_to_bytes
    from fedsecure.protocols import Commitment, commitment_payload, commitment_set_digest, contribution_payload

    config, updates = _round(separate, round_id=800)
    public = separate.keys.public_key
    server = create_server_session(config)
    sessions = {c: create_client_session(config, c, updates[c], separate.credentials[c]) for c in range(5)}
    _deliver(server, sessions, [m for m in server.start() if m.recipient != 5])
    reveal_requests = server.close_stage()  # client 5 did not commit in time: the set has 0..4 only
    honest = {}
    for request in reveal_requests:
        (reply,) = sessions[request.recipient].receive(request)
        honest[reply.sender] = reply
        server.receive_bytes(encode_message(reply), sender=reply.sender)
    forged = PaillierEncryptor(public).encrypt([0] * config.paillier.ciphertexts)
    for j in (1, 2, 3, 4):
        column = ciphertexts_from_bytes(honest[j].ciphertexts, public)
        forged = [gmpy2.f_mod(a * gmpy2.invert(b, public.nsquare), public.nsquare) for a, b in zip(forged, column)]
    data = ciphertexts_to_bytes(forged, public)
    # Late to the server: out of stage, refused and dropped.
    import hashlib

    digest = hashlib.sha256(data).digest()
    signer = separate.credentials[5]
    late = CiphertextCommitment(round_id=800, sender=5, digest=digest,
                                signature=signer.sign(commitment_payload(config, 5, digest)))
    with pytest.raises(PeerProtocolError):
        server.receive_bytes(encode_message(late), sender=5)
    # Into the aggregate every honest client checks, with the colluder's commitment added to the set the honest
    # clients revealed against (its proof is a proof for some other ciphertext: it cannot prove this one).
    requests = server.close_stage()
    request = requests[0]
    saved = sessions[request.recipient].export_state()
    commitments = tuple(sorted((*request.commitments, Commitment(5, digest, late.signature)), key=lambda c: c.sender))
    sneaked = EncryptedInput(round_id=800, sender=5, ciphertexts=data, proof=honest[1].proof, signature=signer.sign(
        contribution_payload(config, 5, data, commitment_set_digest(commitments))))
    product = ciphertexts_to_bytes(
        [gmpy2.f_mod(a * b, public.nsquare) for a, b in zip(ciphertexts_from_bytes(request.aggregate, public), forged)],
        public)
    for attack, fault in ((replace(request, commitments=commitments, contributions=(*request.contributions, sneaked),
                                   aggregate=product), PeerFault.BAD_SIGNATURE),
                          (replace(request, contributions=(*request.contributions, sneaked), aggregate=product),
                           PeerFault.BAD_AGGREGATE)):
        session = PaillierClientSession.restore_state(config, saved, separate.credentials[attack.recipient])
        with pytest.raises(PeerProtocolError) as error:
            session.receive(attack)
        assert error.value.fault is fault  # the honest reveals were signed for the smaller set; 5 never committed


def test_threshold_needs_a_strict_majority_so_two_contributor_sets_cannot_both_be_decrypted() -> None:
    # With t <= n/2 the server could have two disjoint holder groups decrypt S and S minus {victim}.
    for threshold in (2, 3):
        with pytest.raises(ConfigurationError) as error:
            PaillierDeployment.create(ProtocolKind.PAILLIER_THRESHOLD, range(6), key_bits=INSECURE_KEY_BITS,
                                      insecure=True, decryption_threshold=threshold)
        assert error.value.parameter == "decryption_threshold"


def test_round_configs_with_weakened_paillier_parameters_are_refused(separate) -> None:  # type: ignore[no-untyped-def]
    config, _ = _round(separate, round_id=900)
    parameters = config.paillier
    for weakened in (replace(parameters, min_contributors=1), replace(parameters, ciphertexts=parameters.ciphertexts + 1)):
        with pytest.raises(ConfigurationError):
            replace(config, paillier=weakened)
    with pytest.raises(ConfigurationError):
        replace(config, threshold=1, paillier=replace(parameters, min_contributors=1))
    from fedsecure.crypto import SigningKey
    from fedsecure.protocols import PaillierCredentials

    # A config whose minimum is below the deployment's colluders plus two, even if it equals the threshold.
    with pytest.raises(ConfigurationError):
        replace(config, threshold=2, paillier=replace(parameters, min_contributors=2))
    # No credential without the deployment's trusted keys: it would trust whatever key a server put in a round.
    with pytest.raises(TypeError):
        PaillierCredentials(SigningKey.generate())  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError) as error:
        PaillierCredentials(SigningKey.generate(), None)  # type: ignore[arg-type]
    assert error.value.parameter == "trusted_keys"
    with pytest.raises(ConfigurationError) as error:
        PaillierCredentials(SigningKey.generate(), separate.keys)  # not a registered key
    assert error.value.parameter == "signing_key"


@pytest.mark.parametrize("kind", ["separate", "threshold"])
def test_an_out_of_range_contribution_aborts_cleanly_without_releasing_anything(kind: str, request) -> None:  # type: ignore[no-untyped-def]
    from fedsecure.crypto import PaillierEncryptor

    deployment = request.getfixturevalue(kind)
    config, updates = _round(deployment, round_id=1000)
    public = deployment.keys.public_key

    class OversizedEncryptor:  # a malicious client's encryptor: plaintexts far wider than their slots
        def __init__(self) -> None:
            self.public_key = public
            self._inner = PaillierEncryptor(public)

        def encrypt_with_proof(self, plaintexts, context):  # type: ignore[no-untyped-def]
            # It knows its own (oversized) plaintexts, so its proof of knowledge is valid.
            return self._inner.encrypt_with_proof([1 << (int(public.n).bit_length() - 2)] * len(plaintexts), context)

    credentials = deployment.credentials[2]
    honest = credentials._encryptor
    credentials._encryptor = OversizedEncryptor()
    try:
        report = Simulator(config, updates, paillier=deployment).run()
    finally:
        credentials._encryptor = honest
    assert report.result is None and report.abort is not None
    if kind == "separate":
        assert report.decryptor_error is not None and report.decryptor_error.fault is PeerFault.BAD_AGGREGATE
        assert 1000 in deployment.key_holder.decrypted_rounds
    else:
        assert "out of range" in report.abort.reason


def test_a_client_refuses_a_slot_layout_the_server_narrowed_whatever_its_values(separate) -> None:  # type: ignore[no-untyped-def]
    # The attack: offer slots whose offset is below the encoding's bound; packing would refuse exactly when a
    # coordinate lies beyond it, and a binary search over such rounds would find the client's extreme values.
    from fedsecure import LocalProtocolError
    from fedsecure.encoding import SlotLayout

    config, updates = _round(separate, round_id=1100)
    parameters = config.paillier
    for offset in (parameters.layout.offset // 2, parameters.layout.offset - 1, parameters.layout.offset * 2):
        layout = SlotLayout.create(max_coordinate=offset, clients=parameters.layout.max_contributors,
                                   plaintext_bits=separate.keys.key_bits - 1)
        narrowed = replace(config, paillier=replace(parameters, layout=layout,
                                                    ciphertexts=layout.plaintexts_for(config.vector_length)))
        outcomes = set()
        for c in range(N):  # some updates fit the narrower slots, some do not: every one is refused alike
            with pytest.raises(LocalProtocolError, match="slot layout") as error:
                create_client_session(narrowed, c, updates[c], separate.credentials[c])
            outcomes.add(str(error.value))
        assert len(outcomes) == 1
    # A layout that does not follow from its own bound and key is not even a valid configuration.
    odd = replace(parameters.layout, slots=parameters.layout.slots - 1)
    with pytest.raises(ConfigurationError):
        replace(config, paillier=replace(parameters, layout=odd, ciphertexts=odd.plaintexts_for(config.vector_length)))


def test_a_layout_of_zero_slots_is_a_declared_decode_error(separate) -> None:  # type: ignore[no-untyped-def]
    import struct

    from fedsecure import DecodeError
    from fedsecure.protocols import decode_round_config, encode_round_config

    config, _ = _round(separate, round_id=1200)
    raw = bytearray(encode_round_config(config))
    position = raw.index(b"fedsecure/v2/paillier") + len(b"fedsecure/v2/paillier")
    for offset, value in ((8, 0), (0, 0), (12, 0), (8, 2**32 - 1)):  # slots, value bits, offset, huge slots
        mutated = bytearray(raw)
        struct.pack_into("<I", mutated, position + offset, value)
        with pytest.raises(DecodeError):
            decode_round_config(bytes(mutated), allow_insecure_keys=True)


def test_key_holder_and_clients_refuse_duplicated_contributors_and_approvals(separate) -> None:  # type: ignore[no-untyped-def]
    # Duplicates cannot be built or decoded; an in-process caller that forces them past the message's own checks
    # is refused by the key holder as well.
    config, _, (request,), _, _ = _approved(separate, round_id=1300)
    forced = replace(request)
    object.__setattr__(forced, "contributors", (0, 0, 1, 2, 3))
    with pytest.raises(PeerProtocolError) as error:
        separate.key_holder.receive(config, forced)
    assert error.value.fault is PeerFault.DUPLICATE
    forced = replace(request)
    object.__setattr__(forced, "approvals", (request.approvals[0],) * 3)
    with pytest.raises(PeerProtocolError) as error:
        separate.key_holder.receive(config, forced)
    assert error.value.fault is PeerFault.DUPLICATE
    assert 1300 not in separate.key_holder.decrypted_rounds
