"""The Flower runtime's own pieces: the configuration codec, session state, the client's policy, training, and
Flower's simulation engine. The transport-level behaviour is in ``test_transport_conformance.py``."""

from __future__ import annotations

import dataclasses
import hashlib
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedsecure import DecodeError, LocalProtocolError, PeerProtocolError
from fedsecure.encoding import ClipMode, EncodingConfig, Quantizer
from fedsecure.protocols import (
    PaillierDeployment,
    ProtocolKind,
    RoundConfig,
    Stage,
    ThreatModel,
    create_client_session,
    create_identities,
    decode_round_config,
    encode_round_config,
    restore_client_session,
)
from fedsecure.runtime import client_data

ENCODING = EncodingConfig.fit_scale(dimension=50, clients=12, clip=1.0, ring_bits=32,
                                    clip_mode=ClipMode.PER_COORDINATE)


def _configs() -> list[RoundConfig]:
    identities, _ = create_identities(range(12))
    paillier = PaillierDeployment.create(ProtocolKind.PAILLIER_THRESHOLD, range(12), key_bits=512, insecure=True)
    return [RoundConfig.create(protocol=ProtocolKind.SECAGG_PLUS, clients=range(12), encoding=ENCODING),
            RoundConfig.create(protocol=ProtocolKind.SECAGG, clients=range(12), encoding=ENCODING,
                               identities=identities),
            RoundConfig.create(protocol=ProtocolKind.PLAINTEXT, clients=range(12), encoding=ENCODING),
            RoundConfig.create(protocol=ProtocolKind.PAILLIER_THRESHOLD, clients=range(12), encoding=ENCODING,
                               paillier=paillier.keys)]


CONFIGS = _configs()


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.protocol.value + ("-active" if c.active else ""))
def test_round_config_round_trips_and_refuses_every_truncation(config: RoundConfig) -> None:
    data = encode_round_config(config)
    assert decode_round_config(data, allow_insecure_keys=True).digest == config.digest
    for cut in range(len(data)):
        try:
            shorter = decode_round_config(data[:cut], allow_insecure_keys=True)
        except DecodeError:
            continue
        # Only a cut exactly before the active variant's registry leaves a configuration: the passive one, with
        # another digest (and a client holding an identity refuses a passive round).
        assert config.active and not shorter.active and shorter.digest != config.digest
    with pytest.raises(DecodeError):
        decode_round_config(data + b"\0", allow_insecure_keys=True)


def test_small_paillier_keys_are_refused_unless_allowed() -> None:
    with pytest.raises(DecodeError, match="insecure"):
        decode_round_config(encode_round_config(CONFIGS[3]))


@given(st.binary(max_size=400), st.integers(min_value=0, max_value=600))
def test_round_config_decoder_fuzz(noise: bytes, position: int) -> None:
    data = bytearray(encode_round_config(CONFIGS[0]))
    data[position % len(data):position % len(data) + len(noise)] = noise
    try:
        config = decode_round_config(bytes(data))
    except DecodeError:
        return
    # Whatever parses is a valid configuration whose digest covers exactly these bytes.
    assert config.digest == hashlib.sha256(bytes(data)).digest()


def test_exported_state_is_bound_to_its_configuration_and_class() -> None:
    config = CONFIGS[0]
    other = RoundConfig.create(protocol=ProtocolKind.SECAGG_PLUS, clients=range(12), encoding=ENCODING, round_id=1)
    update = Quantizer(ENCODING).encode(client_data(0, 1, 50))
    state = create_client_session(config, 1, update).export_state()
    assert restore_client_session(config, state).state.value == "await-start"
    with pytest.raises(LocalProtocolError, match="another round configuration"):
        restore_client_session(other, state)
    with pytest.raises(LocalProtocolError, match="malformed"):
        restore_client_session(config, state[:40])
    plaintext = RoundConfig.create(protocol=ProtocolKind.PLAINTEXT, clients=range(12), encoding=ENCODING)
    with pytest.raises(LocalProtocolError):
        restore_client_session(plaintext, state)


def test_an_active_session_restores_only_with_the_identity_that_joined() -> None:
    identities, keys = create_identities(range(12))
    config = RoundConfig.create(protocol=ProtocolKind.SECAGG, clients=range(12), encoding=ENCODING,
                                identities=identities)
    update = Quantizer(ENCODING).encode(client_data(0, 2, 50))
    state = create_client_session(config, 2, update, keys[2]).export_state()
    assert restore_client_session(config, state, keys[2]).client_id == 2
    with pytest.raises(LocalProtocolError):
        restore_client_session(config, state, keys[3])
    with pytest.raises(LocalProtocolError):
        restore_client_session(config, state)


# ---- over LocalGrid ---------------------------------------------------------------------------------
flwr = pytest.importorskip("flwr")
from fedsecure.runtime.flower import (  # noqa: E402
    STATE_RECORD,
    ClientPolicy,
    FlowerTransport,
    LocalGrid,
    client_app,
    encoding_record,
)
from fedsecure.runtime.flower._jobs import auto_job, run_server_job  # noqa: E402


@pytest.fixture(autouse=True)
def _task_identity() -> None:
    # Flower's Message constructor needs the process's task identity, which a LocalGrid gives a process that has
    # none (as a ServerApp process has one).
    LocalGrid.create(client_app(), [])


def _grid(n: int, **options: Any) -> Any:
    return LocalGrid.create(client_app(**options), [{"partition-id": i, "num-partitions": n} for i in range(n)])


def _task(encoding: EncodingConfig) -> dict[str, Any]:
    return encoding_record(encoding) | {"task-job": "simulate", "task-seed": 0}


def test_a_client_refuses_a_downgrade_to_plaintext() -> None:
    config = RoundConfig.create(protocol=ProtocolKind.PLAINTEXT, clients=range(4), encoding=ENCODING)
    grid = _grid(4)
    report = FlowerTransport(grid, stage_timeout=0.01).run_round(config, {c: 1000 + c for c in range(4)},
                                                                 _task(ENCODING))
    assert report.aborted
    assert all("plaintext is not allowed" in str(e) for e in report.client_errors.values())
    assert len(report.client_errors) == 4


def test_a_client_refuses_a_threshold_below_its_threat_model() -> None:
    # A server lowers the threshold to 2 (the below-threshold attack): a client's own threat model refuses it.
    config = dataclasses.replace(CONFIGS[0], threshold=2)
    grid = _grid(12)
    report = FlowerTransport(grid, stage_timeout=0.01).run_round(config, {c: 1000 + c for c in range(12)},
                                                                 _task(ENCODING))
    assert report.aborted and "below this client's threat model" in str(report.client_errors[0])


def test_a_client_refuses_an_encoding_its_configuration_does_not_bind() -> None:
    config = CONFIGS[0]
    other = EncodingConfig.fit_scale(dimension=50, clients=12, clip=2.0, ring_bits=32,
                                     clip_mode=ClipMode.PER_COORDINATE)
    report = FlowerTransport(_grid(12), stage_timeout=0.01).run_round(config, {c: 1000 + c for c in range(12)},
                                                                      _task(other))
    assert report.aborted and "encoding parameters do not match" in str(report.client_errors[3])


def test_session_state_lives_in_context_state_only_while_the_round_runs() -> None:
    config = CONFIGS[0]
    grid = _grid(12)
    grid.silence[1005] = Stage.MASKED_INPUT
    report = FlowerTransport(grid, stage_timeout=0.01).run_round(config, {c: 1000 + c for c in range(12)},
                                                                 _task(ENCODING))
    assert report.result is not None
    assert STATE_RECORD not in grid.state_of(1000).config_records  # Finished: forgotten.
    # Went silent mid-round (its replies were late or lost): the end-of-round notice makes it forget too.
    assert STATE_RECORD not in grid.state_of(1005).config_records
    assert (1005, "masked-input") not in grid.delivered and (1005, "") in grid.delivered
    # An abort: every client that was still in the round is told, and forgets.
    grid = _grid(12)
    for node in range(1000, 1008):
        grid.silence[node] = Stage.SHARE_KEYS
    report = FlowerTransport(grid, stage_timeout=0.01).run_round(config, {c: 1000 + c for c in range(12)},
                                                                 _task(ENCODING))
    assert report.aborted
    assert all(STATE_RECORD not in grid.state_of(node).config_records for node in range(1008, 1012))


def test_training_on_flower_aborted_round_leaves_the_model_untouched() -> None:
    weights_seen: dict[int, list[bytes]] = {}

    def job(context: Any, client_id: int, task: Any) -> Any:
        weights_seen.setdefault(int(task["round"]), []).append(task["task-weights"])
        return auto_job(context, client_id, task)

    # The server plans for no dropouts, and so do the clients' policies.
    grid = _grid(5, job=job, policy=ClientPolicy(threat=ThreatModel(dropout_fraction=0.0, corrupt_fraction=0.4)))
    for node in (1000, 1001, 1002):
        grid.silence[node] = Stage.SHARE_KEYS  # Round 0 aborts; these three are left out afterwards.
    history = run_server_job(grid, {"job": "linear784", "rounds": 2, "nodes": 5, "min-clients": 2, "dropout-fraction": 0.0, "corrupt-fraction": 0.4,
                                    "stage-timeout": 0.01})
    assert [r["aborted"] for r in history] == [True, False]
    assert history[1]["survivors"] == [3, 4] and history[1]["accuracy"] > 0.3
    # The aborted round changed nothing: round 1 starts from exactly round 0's model.
    first, second = (weights_seen[r] for r in sorted(weights_seen))
    assert set(first) == set(second) and len(set(first)) == 1


def test_flower_simulation_engine_runs_the_apps() -> None:
    pytest.importorskip("ray")
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    histories: list[list[dict[str, Any]]] = []
    server = ServerApp()

    @server.main()
    def main(grid: Any, context: Any) -> None:
        histories.append(run_server_job(grid, {"job": "simulate", "rounds": 2, "nodes": 6, "min-clients": 6,
                                               "dimension": 1000, "stage-timeout": 30.0}))

    run_simulation(server_app=server, client_app=client_app(job=auto_job), num_supernodes=6,
                   backend_config={"client_resources": {"num_cpus": 1}, "init_args": {"num_cpus": 2}})
    (history,) = histories
    assert [r["aborted"] for r in history] == [False, False]
    assert all(r["correct"] and len(r["survivors"]) == 6 for r in history)


def test_active_variant_on_flower_with_identity_files(tmp_path: Any) -> None:
    from fedsecure.runtime.flower import credentials_from_node_config, load_identity, \
        save_credentials_to_node_config, write_identities

    registry = write_identities(tmp_path, range(7))
    node_configs = [{"partition-id": i, "fedsecure-client-id": i,
                     "fedsecure-identity": str(tmp_path / f"client-{i}.identity.json")} for i in range(7)]
    app = client_app(job=auto_job, credentials=credentials_from_node_config,
                     save_credentials=save_credentials_to_node_config)
    grid = LocalGrid.create(app, node_configs)
    grid.silence[1003] = Stage.CONSISTENCY_CHECK
    history = run_server_job(grid, {"job": "simulate", "rounds": 2, "nodes": 7, "dimension": 200,
                                    "identities": str(registry), "stage-timeout": 0.01})
    assert [r["aborted"] for r in history] == [False, False]
    assert history[0]["correct"] and history[0]["survivors"] == [0, 1, 2, 3, 4, 5, 6]  # 3 masked, then went silent
    assert history[1]["survivors"] == [0, 1, 2, 4, 5, 6]
    # Each identity file records both configurations it joined (client 3 only the first).
    assert len(load_identity(tmp_path / "client-0.identity.json")[1].joined) == 2
    assert len(load_identity(tmp_path / "client-3.identity.json")[1].joined) == 1
    # A node whose identity file is another client's refuses.
    bad = LocalGrid.create(app, [dict(node_configs[0], **{"fedsecure-client-id": 1})])
    assert FlowerTransport(bad, stage_timeout=0.01).register() == {}


@pytest.mark.parametrize("level", ["central", "distributed", "local"])
def test_every_dp_level_trains_on_flower_and_its_transcript_is_accounted(level: str, tmp_path: Any) -> None:
    from fedsecure.audit import read_transcript, run_checks

    grid = _grid(5, job=auto_job)
    grid.silence[1004] = Stage.MASKED_INPUT
    transcript = tmp_path / "transcript.jsonl"
    history = run_server_job(grid, {"job": "linear784", "protocol": "secagg", "rounds": 2, "nodes": 5, "dp": level,
                                    "epsilon": 30.0, "stage-timeout": 0.01, "transcript": str(transcript)})
    assert [r["aborted"] for r in history] == [False, False]
    assert 0 < history[0]["epsilon"] < history[1]["epsilon"] <= 30.0 + 1e-9
    checks = {c.name: c for c in run_checks(read_transcript(transcript))}
    assert checks["dp-accounted"].applicable and checks["dp-accounted"].passed, checks["dp-accounted"].detail
    assert all(c.passed for c in checks.values()), [c.detail for c in checks.values() if not c.passed]


def test_under_distributed_dp_a_vanished_node_is_a_drawn_client_that_drops_out() -> None:
    # Amplification is accounted for cohorts of a fixed size drawn from the whole population; a client whose node
    # died is still drawn and drops out as a dropout does, so the run goes on over the same population (it
    # stopped at the smaller one before) and every cohort keeps the size the clients' plan expects.
    grid = _grid(8, job=auto_job)
    grid.crash(1002)
    history = run_server_job(grid, {"job": "linear784", "protocol": "secagg", "rounds": 5, "nodes": 8,
                                    "min-clients": 2, "fraction": 0.5, "dp": "distributed", "epsilon": 30.0,
                                    "delta": 1e-4, "bits": 24, "stage-timeout": 10.0})
    assert len(history) == 5 and not any(r["aborted"] for r in history), [r["abort_reason"] for r in history]
    assert all(len(r["clients"]) == 4 and set(r["survivors"]) <= set(r["clients"]) for r in history)
    for r in history:
        gone = set(r["clients"]) - set(r["survivors"])
        assert all("unavailable" in r["dropped"][str(c)] for c in gone)


def test_under_distributed_dp_a_restarted_supernode_takes_back_a_vanished_clients_place(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A restarted SuperNode comes back under a new node id. Cohorts are drawn from a population of exactly `nodes`
    # clients, so it takes the id of the client whose node is gone instead of growing the population (which
    # stopped the run); a node beyond the population is left out.
    import fedsecure.runtime.flower._jobs as jobs

    grid = _grid(8, job=auto_job)
    progress = jobs._Progress.__call__

    def restart_after_round_0(self: Any, event: str, **details: Any) -> None:
        if event == "round-end" and details.get("round") == 0:
            grid.restart(1002)
        progress(self, event, **details)

    monkeypatch.setattr(jobs._Progress, "__call__", restart_after_round_0)
    history = run_server_job(grid, {"job": "linear784", "protocol": "secagg", "rounds": 4, "nodes": 8,
                                    "min-clients": 2, "fraction": 0.5, "dp": "distributed", "epsilon": 30.0,
                                    "delta": 1e-4, "bits": 24, "stage-timeout": 10.0})
    assert len(history) == 4 and not any(r["aborted"] for r in history), [r["abort_reason"] for r in history]
    assert all(set(r["clients"]) <= set(range(8)) for r in history)


@pytest.mark.parametrize("client_ids", ["assigned", "registered"])
def test_under_distributed_dp_a_supernode_restarted_before_its_old_id_lapses_takes_its_place_once_it_does(
        monkeypatch: pytest.MonkeyPatch, client_ids: str) -> None:
    # On a real SuperLink a restarted SuperNode is listed under its new node id while its old one is still listed,
    # until the old heartbeat lapses. With no id free (assigned ids), or claiming the id the old node still holds
    # (registered ids), it waits rather than being left out for good: once the old node has failed a round, the
    # restarted one takes its client id back.
    import fedsecure.runtime.flower._jobs as jobs
    from fedsecure.pipeline._privacy import DistributedDP

    grid = _grid(8, job=auto_job)
    cohorts = [[0, 1, 2, 3], [2, 3, 4, 5], [2, 5, 6, 7], [0, 2, 4, 6]]  # client 2 in every round

    def scripted(self: Any, clients: Any, seed: int, round_index: int) -> list[Any]:
        assert len(clients) == self.population
        return [clients[i] for i in cohorts[round_index]]

    progress = jobs._Progress.__call__

    def restart_after_round_0(self: Any, event: str, **details: Any) -> None:
        if event == "round-end" and details.get("round") == 0:
            grid.crash(1002)
            grid.join(grid._configs[1002])
        progress(self, event, **details)

    monkeypatch.setattr(DistributedDP, "sample", scripted)
    monkeypatch.setattr(jobs._Progress, "__call__", restart_after_round_0)
    history = run_server_job(grid, {"job": "linear784", "protocol": "secagg", "rounds": 4, "nodes": 8,
                                    "client-ids": client_ids, "min-clients": 2, "fraction": 0.5,
                                    "dp": "distributed", "epsilon": 30.0, "delta": 1e-4, "bits": 24,
                                    "stage-timeout": 10.0})
    assert [2 in r["survivors"] for r in history] == [True, False, True, True], [r["dropped"] for r in history]


def test_under_distributed_dp_an_extra_supernode_stating_its_own_client_id_is_left_out(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Cohorts are drawn from exactly the population the accounting assumes. A SuperNode joining mid-run with a
    # client id of its own beyond it is left out; the run goes on (the draw over a grown pool used to stop it).
    import fedsecure.runtime.flower._jobs as jobs

    grid = _grid(4, job=auto_job)
    progress = jobs._Progress.__call__
    joined: list[int] = []

    def join_after_round_0(self: Any, event: str, **details: Any) -> None:
        if event == "round-end" and details.get("round") == 0:
            joined.append(grid.join({"partition-id": 0, "num-partitions": 4, "fedsecure-client-id": 77}))
        progress(self, event, **details)

    monkeypatch.setattr(jobs._Progress, "__call__", join_after_round_0)
    history = run_server_job(grid, {"job": "linear784", "protocol": "secagg", "rounds": 3, "nodes": 4,
                                    "client-ids": "registered", "min-clients": 2, "fraction": 0.75,
                                    "dp": "distributed", "epsilon": 30.0, "delta": 1e-4, "bits": 24,
                                    "stage-timeout": 10.0})
    assert joined and len(history) == 3 and not any(r["aborted"] for r in history)
    assert all(set(r["clients"]) <= set(range(4)) for r in history)


def _four_registered_and_one_more(claimed_id: int, rounds: int) -> list[dict[str, Any]]:
    # Four honest nodes stating ids 0-3 and a fifth stating `claimed_id`, all there from the start; distributed DP
    # planned for a population of four.
    configs = [{"partition-id": i, "num-partitions": 4, "fedsecure-client-id": i} for i in range(4)]
    grid = LocalGrid.create(client_app(job=auto_job),
                            configs + [{"partition-id": 0, "num-partitions": 4, "fedsecure-client-id": claimed_id}])
    history: list[dict[str, Any]] = run_server_job(grid, {
        "job": "linear784", "protocol": "secagg", "rounds": rounds, "nodes": 4, "client-ids": "registered",
        "min-clients": 2, "fraction": 0.75, "dp": "distributed", "epsilon": 30.0, "delta": 1e-4, "bits": 24,
        "stage-timeout": 10.0})
    return history


def test_under_distributed_dp_an_extra_supernode_at_start_does_not_push_out_an_honest_one() -> None:
    # Registered at once with the four honest nodes, the one stating an id beyond the population is the one left out.
    history = _four_registered_and_one_more(77, rounds=3)
    assert not any(r["aborted"] for r in history)
    assert set().union(*(r["clients"] for r in history)) <= {0, 1, 2, 3}


def test_under_distributed_dp_a_population_short_of_the_plan_skips_rounds_without_a_traceback() -> None:
    # Two nodes claiming one id at start are both refused it, so three of the four planned clients are registered:
    # the draw is impossible, and each round is skipped with the reason instead of the run stopping.
    history = _four_registered_and_one_more(0, rounds=2)
    assert [r["aborted"] for r in history] == [True, True]
    assert all("planned for 4 clients" in r["abort_reason"] for r in history), history


@pytest.mark.parametrize("protocol", [ProtocolKind.PAILLIER, ProtocolKind.PAILLIER_THRESHOLD])
def test_paillier_on_flower_with_credential_files(protocol: ProtocolKind, tmp_path: Any) -> None:
    from fedsecure.runtime.flower import apps, load_key_holder, load_paillier_credentials, write_paillier_deployment

    n = 5
    public = write_paillier_deployment(tmp_path, PaillierDeployment.create(protocol, range(n), key_bits=1024,
                                                                           insecure=True))
    policy = {"fedsecure-protocols": protocol.value, "fedsecure-allow-insecure-keys": True}
    node_configs = [dict(policy, **{"partition-id": i, "fedsecure-client-id": i,
                                    "fedsecure-paillier": str(tmp_path / f"client-{i}.paillier.json")})
                    for i in range(n)]
    if protocol is ProtocolKind.PAILLIER:
        node_configs.append(dict(policy, **{"fedsecure-key-holder": str(tmp_path / "key-holder.json")}))
        # A node that claims the key holder's role with another deployment's key is not believed (and, registered
        # after the real one, would otherwise be chosen).
        write_paillier_deployment(tmp_path / "impostor", PaillierDeployment.create(protocol, range(n), key_bits=512,
                                                                                   insecure=True))
        node_configs.append(dict(policy, **{"fedsecure-key-holder": str(tmp_path / "impostor" / "key-holder.json")}))
    grid = LocalGrid.create(apps.client, node_configs)
    grid.silence[1001] = Stage.CIPHERTEXT_INPUT
    history = run_server_job(grid, {"job": "simulate", "rounds": 2, "nodes": len(node_configs), "dimension": 300,
                                    "paillier": str(public), "stage-timeout": 0.01})
    assert [r["aborted"] for r in history] == [False, False], history
    assert all(r["correct"] for r in history)
    assert history[0]["survivors"] == [0, 2, 3, 4]
    # Every party persisted the rounds it decrypted, so none decrypts a round twice after a restart.
    round_ids = {r["round_id"] for r in history}
    if protocol is ProtocolKind.PAILLIER:
        assert load_key_holder(tmp_path / "key-holder.json").decrypted_rounds == round_ids
    else:
        assert load_paillier_credentials(tmp_path / "client-0.paillier.json")[1].decrypted_rounds == round_ids
    # A second run against the same files: its round ids are its own, so nothing is refused as already done.
    again = run_server_job(LocalGrid.create(apps.client, node_configs), {
        "job": "simulate", "rounds": 1, "nodes": len(node_configs), "dimension": 300, "paillier": str(public),
        "stage-timeout": 0.01})
    assert not again[0]["aborted"] and again[0]["round_id"] not in round_ids


def test_registration_keeps_an_id_with_its_first_owner_and_refuses_ids_out_of_range() -> None:
    grid = _grid(3)
    transport = FlowerTransport(grid, stage_timeout=0.01)
    first = transport.register([1000, 1001])
    assert first == {1000: 0, 1001: 1}
    hijacker = LocalGrid.create(client_app(), [{"partition-id": 1}, {"partition-id": 2**33}])
    late = FlowerTransport(hijacker, stage_timeout=0.01).register(known=first)
    assert late == {}  # Client 1 belongs to node 1001; 2^33 is not a client id.


def _start_record(config: RoundConfig, encoding: EncodingConfig, **changes: Any) -> Any:
    from flwr.app import ConfigRecord, Message, RecordDict

    from fedsecure.protocols import RoundStart, encode_message

    from fedsecure.runtime.flower._common import task_digest

    task = encoding_record(encoding) | {"task-job": "simulate", "task-seed": 0}
    task |= {key: value for key, value in changes.items() if key in task or key.startswith(("task-", "encoding-"))}
    # The server binds the task it sends (malformed or not: these tests are about the fields themselves).
    config = dataclasses.replace(config, task_digest=task_digest(task))
    content = task | {"kind": "round-start", "round": config.round_id, "stage": "advertise-keys",
                      "config": encode_round_config(config), "client": 1,
                      "message": encode_message(RoundStart(round_id=config.round_id, recipient=1,
                                                           config_digest=config.digest))}
    content |= changes
    return Message(RecordDict({"fedsecure": ConfigRecord(content)}), 1001, "query.fedsecure")


@pytest.mark.parametrize("changes, fragment", [
    ({"client": "abc"}, "`client` is not an integer"),
    ({"task-seed": "x"}, "job failed"),
    ({"encoding-clip-mode": "sideways"}, "encoding parameters"),
    ({"encoding-dimension": 20_000_000}, "an encoding of 20000000 values for a round of 50"),
    ({"encoding-dimension": 1e308}, "`encoding-dimension` is not an integer"),
    ({"encoding-dimension": 2**200}, "`encoding-dimension`"),
    ({"encoding-scale": "x"}, "`encoding-scale` is not a finite number"),
    ({"encoding-clip": float("nan")}, "`encoding-clip` is not a finite number"),
    ({"encoding-clients": -3}, "`encoding-clients`"),
])
def test_a_malformed_round_start_is_refused_by_name_not_crashed_on(changes: dict[str, Any], fragment: str) -> None:
    from flwr.app import Context, RecordDict

    from fedsecure.runtime.flower import FedSecureClient

    calls = []

    def job(context: Any, client: int, task: Any) -> Any:
        calls.append(client)
        return auto_job(context, client, task)

    handler = FedSecureClient(job)
    context = Context(run_id=1, node_id=1001, node_config={"partition-id": 1}, state=RecordDict(), run_config={})
    reply = handler.handle(_start_record(CONFIGS[0], ENCODING, **changes), context)
    error = reply.content.config_records["fedsecure"]["error"]
    assert fragment in error
    assert "message" not in reply.content.config_records["fedsecure"]
    if "encoding" in fragment or "integer" in fragment:
        assert calls == []  # Refused before any work.


def test_a_client_joins_each_configuration_once() -> None:
    from flwr.app import Context, RecordDict

    from fedsecure.runtime.flower import FedSecureClient

    handler = FedSecureClient(auto_job)
    context = Context(run_id=1, node_id=1001, node_config={"partition-id": 1}, state=RecordDict(), run_config={})
    first = handler.handle(_start_record(CONFIGS[0], ENCODING), context)
    assert "message" in first.content.config_records["fedsecure"]
    again = handler.handle(_start_record(CONFIGS[0], ENCODING), context)
    assert "already joined" in again.content.config_records["fedsecure"]["error"]


def test_an_encoding_larger_than_the_round_is_refused_before_any_work() -> None:
    from flwr.app import Context, RecordDict

    from fedsecure.runtime.flower import FedSecureClient

    huge = EncodingConfig.fit_scale(dimension=20_000_000, clients=12, clip=1.0, ring_bits=32,
                                    clip_mode=ClipMode.PER_COORDINATE)
    # The server binds the huge encoding's digest into a configuration of 50 values.
    config = dataclasses.replace(CONFIGS[0], encoding_digest=huge.digest())
    calls = []
    handler = FedSecureClient(lambda context, client, task: calls.append(client))  # type: ignore[arg-type,func-returns-value]
    context = Context(run_id=1, node_id=1001, node_config={"partition-id": 1}, state=RecordDict(), run_config={})
    reply = handler.handle(_start_record(config, huge), context)
    assert "an encoding of 20000000 values for a round of 50" in reply.content.config_records["fedsecure"]["error"]
    assert calls == []


@pytest.mark.parametrize("app", ["examples/flower", "tests/flower_app"])
def test_every_job_setting_is_in_the_app_config(app: str) -> None:
    # flwr run refuses --run-config keys the app's pyproject.toml does not list.
    import tomllib
    from pathlib import Path

    from fedsecure.runtime.flower._jobs import JobSettings

    root = Path(__file__).resolve().parents[1]
    table = tomllib.loads((root / app / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    expected = {f.name.replace("_", "-") for f in dataclasses.fields(JobSettings)}
    assert set(table) == expected
    assert JobSettings.from_run_config(table) == JobSettings()


def test_fedsecure_flower_writes_the_keys_each_protocol_needs(tmp_path: Any) -> None:
    import argparse

    from fedsecure.cli import _flower_credentials
    from fedsecure.runtime.flower import load_key_holder, load_paillier_keys, load_registry

    def args(**values: Any) -> argparse.Namespace:
        defaults = {"supernodes": 3, "protocol": "secagg+", "active": False, "key_bits": 512,
                    "insecure_small_keys": True}
        return argparse.Namespace(**(defaults | values))

    run: dict[str, Any] = {}
    nodes = _flower_credentials(args(active=True), tmp_path / "active", run)
    assert set(load_registry(run["identities"]).verify_keys) == {0, 1, 2}
    assert nodes[2]["fedsecure-client-id"] == 2 and (tmp_path / "active" / "client-2.identity.json").exists()
    assert (tmp_path / "active" / "client-2.identity.json").stat().st_mode & 0o077 == 0  # Secret: owner only.
    run = {}
    nodes = _flower_credentials(args(protocol="paillier"), tmp_path / "paillier", run)
    assert sorted(nodes) == [0, 1, 2, 3] and "fedsecure-key-holder" in nodes[3]  # The key holder's extra node.
    assert not load_paillier_keys(run["paillier"]).threshold_decryption
    assert load_key_holder(nodes[3]["fedsecure-key-holder"]).decrypted_rounds == frozenset()
    assert _flower_credentials(args(protocol="plaintext"), tmp_path / "plain", {})[0] == {
        "fedsecure-protocols": "plaintext"}
    assert _flower_credentials(args(), tmp_path / "none", {}) == {}


def test_clients_refuse_keys_the_server_chose(tmp_path: Any) -> None:
    """A server that swaps the Paillier key, or other clients' identity keys, in its configuration is refused."""
    import json

    from fedsecure.runtime.flower import apps, write_identities, write_paillier_deployment

    n = 4
    public = write_paillier_deployment(tmp_path / "paillier", PaillierDeployment.create(
        ProtocolKind.PAILLIER_THRESHOLD, range(n), key_bits=512, insecure=True))
    attacker = PaillierDeployment.create(ProtocolKind.PAILLIER_THRESHOLD, range(n), key_bits=512, insecure=True)
    doctored = json.loads(public.read_text()) | {"n": hex(attacker.keys.public_key.n)}
    public.write_text(json.dumps(doctored))
    configs = [{"partition-id": i, "fedsecure-client-id": i, "fedsecure-protocols": "paillier-threshold",
                "fedsecure-allow-insecure-keys": True,
                "fedsecure-paillier": str(tmp_path / "paillier" / f"client-{i}.paillier.json")} for i in range(n)]
    history = run_server_job(LocalGrid.create(apps.client, configs), {
        "job": "simulate", "rounds": 1, "nodes": n, "dimension": 50, "paillier": str(public), "stage-timeout": 0.01})
    assert history[0]["aborted"]
    assert all("differ from the deployment's" in reason or "not the one this client holds a share of" in reason
               for reason in history[0]["dropped"].values()) and len(history[0]["dropped"]) == n

    registry = write_identities(tmp_path / "identities", range(n))
    impostors = {str(c): _fresh_verify_key_hex() for c in range(1, n)}
    doctored = json.loads(registry.read_text())
    doctored["verify_keys"] |= impostors
    registry.write_text(json.dumps(doctored))
    configs = [{"partition-id": i, "fedsecure-client-id": i,
                "fedsecure-identity": str(tmp_path / "identities" / f"client-{i}.identity.json")} for i in range(n)]
    history = run_server_job(LocalGrid.create(apps.client, configs), {
        "job": "simulate", "rounds": 1, "nodes": n, "dimension": 50, "identities": str(registry),
        "stage-timeout": 0.01})
    assert history[0]["aborted"] and "refusing keys the server chose" in history[0]["dropped"]["0"]


def _fresh_verify_key_hex() -> str:  # noqa: N802 (a test helper named after what it makes)
    from fedsecure.crypto import SigningKey

    return SigningKey.generate().public_bytes.hex()


def test_concurrent_decryption_requests_for_one_round_decrypt_once(tmp_path: Any) -> None:
    """Two ClientApp processes of the key holder's node, racing on one round: the file lock lets one decrypt."""
    import multiprocessing

    from fedsecure.runtime.flower import load_key_holder, write_paillier_deployment

    deployment = PaillierDeployment.create(ProtocolKind.PAILLIER, range(3), key_bits=512, insecure=True)
    write_paillier_deployment(tmp_path, deployment)
    path = str(tmp_path / "key-holder.json")
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(2)
    results = context.Queue()
    workers = [context.Process(target=_claim_round, args=(path, barrier, results)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    outcomes = sorted(results.get(timeout=5) for _ in workers)
    assert outcomes == ["claimed", "refused"]
    assert load_key_holder(path).decrypted_rounds == {0}


def _claim_round(path: str, barrier: Any, results: Any) -> None:
    # What the key holder's ClientApp does around a decryption: lock, load, check and claim, save.
    from types import SimpleNamespace

    from fedsecure.runtime.flower import key_holder_from_node_config, lock_node_files, save_key_holder_to_node_config

    context = SimpleNamespace(node_config={"fedsecure-key-holder": path})
    barrier.wait()
    with lock_node_files(context):
        holder = key_holder_from_node_config(context)
        assert holder is not None
        if 0 in holder.decrypted_rounds:
            results.put("refused")
            return
        holder._decrypted_rounds.add(0)  # The claim receive() records before it decrypts.
        save_key_holder_to_node_config(context, holder)
        results.put("claimed")


@pytest.mark.parametrize("level, required, minimum, accepted", [
    ("", "local", 0.3, False), ("central", "local,distributed", 0.3, False), ("distributed", "local", 0.3, False),
    ("local", "local", 0.3, True), ("distributed", "distributed", 0.1, True), ("local", "local", 100.0, False)])
def test_a_client_can_require_differential_privacy(level: str, required: str, minimum: float,
                                                   accepted: bool) -> None:
    node = {"fedsecure-require-dp": required, "fedsecure-min-noise-multiplier": minimum}
    grid = LocalGrid.create(client_app(job=auto_job), [node | {"partition-id": i, "num-partitions": 4}
                                                       for i in range(4)])
    settings: dict[str, Any] = {"job": "linear784", "protocol": "secagg", "rounds": 1, "nodes": 4,
                                "stage-timeout": 0.01, "dropout-fraction": 0.0}
    if level:
        settings |= {"dp": level, "epsilon": 30.0}
    (summary,) = run_server_job(grid, settings)
    assert summary["aborted"] is not accepted
    if not accepted:
        assert all("requires" in reason for reason in summary["dropped"].values())


def test_a_credential_file_that_cannot_be_locked_is_a_refusal(tmp_path: Any) -> None:
    from flwr.app import Context, RecordDict

    from fedsecure.runtime.flower import FedSecureClient, lock_node_files

    handler = FedSecureClient(auto_job, lock=lock_node_files)
    missing = str(tmp_path / "no-such-directory" / "client-1.identity.json")
    context = Context(run_id=1, node_id=1001, node_config={"partition-id": 1, "fedsecure-identity": missing},
                      state=RecordDict(), run_config={})
    reply = handler.handle(_start_record(CONFIGS[0], ENCODING), context)
    assert "FileNotFoundError" in reply.content.config_records["fedsecure"]["error"]


def _dp_start(cohort: int, plan_text: str, seed: bytes = b"s" * 32) -> tuple[Any, Any]:
    """A round-start record for a distributed-DP round of ``cohort`` clients whose plan the server states."""
    from flwr.app import ConfigRecord, Message, RecordDict

    from fedsecure.dp import DistributedPlan
    from fedsecure.protocols import RoundStart, encode_message

    plan = DistributedPlan.from_json(plan_text, max_dimension=2**40) if plan_text.startswith("{") else None
    encoding = plan.encoding(seed) if plan is not None else None
    config = RoundConfig.create(protocol=ProtocolKind.SECAGG, clients=range(cohort), encoding=encoding or ENCODING)
    content = {"encoding-kind": "distributed-dp", "dp-plan": plan_text, "dp-rotation-seed": seed,
               "task-job": "simulate", "task-seed": 0, "kind": "round-start", "round": config.round_id,
               "stage": "advertise-keys", "config": encode_round_config(config), "client": 1,
               "message": encode_message(RoundStart(round_id=config.round_id, recipient=1,
                                                    config_digest=config.digest))}
    return Message(RecordDict({"fedsecure": ConfigRecord(content)}), 1001, "query.fedsecure"), config


def _handle_dp(message: Any, node: dict[str, Any] | None = None) -> str:
    from flwr.app import Context, RecordDict

    import numpy as np

    from fedsecure.runtime.flower import ClientUpdate, FedSecureClient

    handler = FedSecureClient(lambda context, client, task: ClientUpdate(np.full(50, 0.01)))
    context = Context(run_id=1, node_id=1001, node_config={"partition-id": 1} | (node or {}), state=RecordDict(),
                      run_config={})
    record = handler.handle(_bind_task(message), context).content.config_records["fedsecure"]
    return str(record.get("error", "accepted"))


def _bind_task(message: Any) -> Any:
    """The round start as a server that sends these (possibly hostile) fields would bind them: its configuration's
    task digest covers the record as it now stands, so what the client checks next is the fields themselves."""
    from fedsecure.protocols import RoundStart, decode_round_config, encode_message
    from fedsecure.runtime.flower._common import task_digest

    record = message.content.config_records["fedsecure"]
    config = decode_round_config(record["config"], allow_insecure_keys=True)
    config = dataclasses.replace(config, task_digest=task_digest(dict(record)))
    record["config"] = encode_round_config(config)
    record["message"] = encode_message(RoundStart(round_id=config.round_id, recipient=int(record["client"]),
                                                  config_digest=config.digest))
    return message


def test_a_client_computes_the_distributed_noise_itself_and_refuses_a_lying_plan() -> None:
    # The attacks: a plan whose stated noise multiplier is not what its local variance gives (the client would add
    # variance 1 while told it meets its requirement), and an honest plan sized for a million shares shown to a
    # cohort of ten (each share a millionth of what ten need). Both refused before any work.
    import json

    from fedsecure.dp import Mechanism, plan_distributed

    # The requirement is measured on the honest shares of the smallest sum the server can unmask: threshold (5 of
    # 10) shares less the 2 colluders the default threat model tolerates, whose noise multiplier is
    # 1.0 * sqrt(3 / 10) = 0.55 for a plan of 1.0 over ten shares.
    node = {"fedsecure-require-dp": "distributed", "fedsecure-min-noise-multiplier": 0.5}
    honest = plan_distributed(mechanism=Mechanism.DDGAUSS, dimension=50, clip=1.0, bits=32, expected_clients=10,
                              max_clients=10, noise_multiplier=1.0)
    message, _ = _dp_start(10, honest.to_json())
    assert _handle_dp(message, node) == "accepted"
    lying = json.loads(honest.to_json()) | {"local_variance": 1.0}
    message, _ = _dp_start(10, honest.to_json())
    message.content.config_records["fedsecure"]["dp-plan"] = json.dumps(lying)
    assert "noise_multiplier" in _handle_dp(message, node)
    million = plan_distributed(mechanism=Mechanism.DDGAUSS, dimension=50, clip=1.0, bits=62,
                               expected_clients=1_000_000, max_clients=1_000_000, noise_multiplier=1.0)
    message, _ = _dp_start(10, million.to_json())
    assert "expects 1000000 noise shares, the cohort has only 10" in _handle_dp(message)
    # A consistent plan below the requirement: the client's own figure is what it compares.
    weak = plan_distributed(mechanism=Mechanism.DDGAUSS, dimension=50, clip=1.0, bits=32, expected_clients=10,
                            max_clients=10, noise_multiplier=0.5)
    message, _ = _dp_start(10, weak.to_json())
    assert "requires distributed DP" in _handle_dp(message, node)


def test_every_field_of_the_distributed_plan_is_bound_into_the_configuration() -> None:
    from fedsecure.dp import DistributedPlan, Mechanism, plan_distributed

    plan = plan_distributed(mechanism=Mechanism.DDGAUSS, dimension=50, clip=1.0, bits=32, expected_clients=10,
                            max_clients=10, noise_multiplier=1.0)
    digests = {plan.encoding(b"s" * 32).digest()}
    for name in ("noise_multiplier", "l2_sensitivity", "l1_sensitivity", "wrap_bound", "beta", "local_variance"):
        digests.add(dataclasses.replace(plan, **{name: getattr(plan, name) * 1.5 + 1e-3}).encoding(b"s" * 32).digest())
    assert len(digests) == 7
    assert DistributedPlan.from_json(plan.to_json(), max_dimension=50) == plan


def test_a_huge_plan_is_refused_before_anything_is_allocated() -> None:
    # The attack: a round of 16 values whose plan claims a padded dimension of 2^30 made the client allocate
    # gigabytes (and 2^30 escaped as a MemoryError) before any size check.
    import json
    import tracemalloc

    from fedsecure.dp import Mechanism, plan_distributed

    plan = plan_distributed(mechanism=Mechanism.DDGAUSS, dimension=16, clip=1.0, bits=32, expected_clients=10,
                            max_clients=10, noise_multiplier=1.0)
    for changes in ({"padded_dimension": 2**30}, {"dimension": 2**30, "padded_dimension": 2**30},
                    {"dimension": 2**62, "padded_dimension": 2**62}, {"bits": "x"}, {"clip": 1e999}, {"extra": 1}):
        message, _ = _dp_start(10, plan.to_json())
        message.content.config_records["fedsecure"]["dp-plan"] = json.dumps(json.loads(plan.to_json()) | changes)
        tracemalloc.start()
        error = _handle_dp(message)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert "distributed-DP plan" in error or "values for a round of" in error, error
        assert peak < 50 << 20, f"{changes}: {peak} bytes"


def test_a_stale_session_cannot_answer_a_step_twice(tmp_path: Any) -> None:
    # Flower saves a node's context.state only after the reply has gone out (and a failed save is lost); its
    # simulation engine runs one node's messages concurrently from the same state. A ClientApp that starts from
    # a stale state would answer the same step again: here, join the round a second time under fresh keys. The
    # node's answer ledger, kept under its lock outside context.state, refuses the second answer.
    from flwr.app import Context, RecordDict

    from fedsecure.runtime.flower import AnswerLedger, FedSecureClient, answer_ledger_path, lock_node_files

    node = {"partition-id": 1, "fedsecure-state-dir": str(tmp_path)}

    def answer(handler: Any) -> str:
        context = Context(run_id=1, node_id=1001, node_config=node, state=RecordDict(), run_config={})  # stale
        record = handler.handle(_start_record(CONFIGS[0], ENCODING), context).content.config_records["fedsecure"]
        return "answered" if "message" in record else str(record["error"])

    protected = FedSecureClient(auto_job, lock=lock_node_files,
                                answers=lambda context: AnswerLedger(answer_ledger_path(context)))
    assert answer(protected) == "answered"
    assert "already answered step await-start" in answer(protected)
    # Weakened: without the ledger the same stale state answers again.
    unprotected = FedSecureClient(auto_job)
    assert answer(unprotected) == answer(unprotected) == "answered"
    assert oct((tmp_path / "answers-node-1001.json").stat().st_mode & 0o777) == "0o600"


def test_a_plan_that_would_hang_or_crash_the_client_and_a_bare_dp_claim_are_refused() -> None:
    import json

    from fedsecure.dp import Mechanism, plan_distributed

    plan = plan_distributed(mechanism=Mechanism.DDGAUSS, dimension=50, clip=1.0, bits=32, expected_clients=10,
                            max_clients=10, noise_multiplier=1.0)
    # Deep nesting (RecursionError), a huge number, and a consistent plan whose variance takes the exact
    # sampler's slow path for every coordinate: each a named refusal, at once.
    fields = json.loads(plan.to_json())
    l2 = fields["l2_sensitivity"]
    slow = fields | {"local_variance": 2.0**60, "noise_multiplier": (10 * 2.0**60) ** 0.5 / l2}
    for text in ("[" * 4000, plan.to_json().replace(str(fields["clip"]), "1" + "0" * 400), json.dumps(slow)):
        message, _ = _dp_start(10, plan.to_json())
        message.content.config_records["fedsecure"]["dp-plan"] = text
        started = time.perf_counter()
        assert "distributed-DP plan" in _handle_dp(message)
        assert time.perf_counter() - started < 5
    # A plain round whose record merely says "distributed" does not meet a distributed-DP requirement.
    from flwr.app import ConfigRecord, Message, RecordDict

    from fedsecure.protocols import RoundStart, encode_message

    config = RoundConfig.create(protocol=ProtocolKind.SECAGG, clients=range(12), encoding=ENCODING)
    content = encoding_record(ENCODING) | {"kind": "round-start", "config": encode_round_config(config), "client": 1,
                                           "dp-level": "distributed", "round": config.round_id,
                                           "message": encode_message(RoundStart(round_id=config.round_id, recipient=1,
                                                                                config_digest=config.digest))}
    claim = Message(RecordDict({"fedsecure": ConfigRecord(content)}), 1001, "query.fedsecure")
    assert "requires distributed DP" in _handle_dp(claim, {"fedsecure-require-dp": "distributed"})


def test_the_answer_ledger_lives_only_in_a_private_directory(tmp_path: Any) -> None:
    import os

    from fedsecure import PeerProtocolError
    from fedsecure.runtime.flower._answers import private_directory

    private_directory(tmp_path / "mine")
    assert oct((tmp_path / "mine").stat().st_mode & 0o777) == "0o700"
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "mine")
    for directory in (shared, link):
        with pytest.raises(PeerProtocolError, match="not a private directory"):
            private_directory(directory)


def test_a_clients_distributed_dp_floor_counts_out_the_colluders_it_tolerates() -> None:
    # Colluding clients know their own noise shares and subtract them: the noise an honest client's requirement
    # is measured against is that of the threshold's shares less the colluders its threat model tolerates.
    from fedsecure.dp import Mechanism, plan_distributed
    from fedsecure.runtime.flower import ClientPolicy

    plan = plan_distributed(mechanism=Mechanism.DDGAUSS, dimension=100, clip=1.0, bits=20, expected_clients=10,
                            max_clients=10, noise_multiplier=1.0)
    encoding = plan.encoding(bytes(32))
    config = RoundConfig.create(protocol=ProtocolKind.SECAGG, clients=range(10), encoding=encoding,
                                threat=ThreatModel(dropout_fraction=0.3, corrupt_fraction=0.2))
    at_threshold = plan.noise_multiplier_for(config.threshold)
    colluders = 2  # floor(0.2 * 10)
    honest = plan.noise_multiplier_for(config.threshold - colluders)
    assert honest < at_threshold
    for corrupt, accepted in ((0.0, True), (0.2, False)):
        policy = ClientPolicy(threat=ThreatModel(dropout_fraction=0.3, corrupt_fraction=corrupt),
                              require_dp=frozenset({"distributed"}), min_noise_multiplier=(honest + at_threshold) / 2)
        if accepted:
            policy.check_privacy(encoding, {}, config)
        else:
            with pytest.raises(PeerProtocolError, match="requires distributed DP"):
                policy.check_privacy(encoding, {}, config)
    assert colluders == int(0.2 * 10)


def test_under_distributed_dp_a_client_whose_job_fails_still_adds_its_noise_share() -> None:
    # A job can fail because of its data; dropping out would then tell the server so, and take a noise share out
    # of the sum. The client sends a zero update with its full share instead. Without distributed DP it refuses.
    from flwr.app import Context, RecordDict

    import numpy as np

    from fedsecure.dp import Mechanism, plan_distributed
    from fedsecure.runtime.flower import FedSecureClient

    plan = plan_distributed(mechanism=Mechanism.DDGAUSS, dimension=50, clip=1.0, bits=32, expected_clients=10,
                            max_clients=10, noise_multiplier=1.0)
    sent: list[Any] = []

    def failing(context: Any, client: int, task: Any) -> Any:
        raise RuntimeError("the loss diverged on this client's data")

    handler = FedSecureClient(failing, observe=lambda context, round_id, client, encoded: sent.append(encoded))
    context = Context(run_id=1, node_id=1001, node_config={"partition-id": 1}, state=RecordDict(), run_config={})
    message, _ = _dp_start(10, plan.to_json())
    record = handler.handle(_bind_task(message), context).content.config_records["fedsecure"]
    assert "error" not in record and len(sent) == 1
    noise = sent[0].ring.to_signed(np.asarray(sent[0].values)).astype(np.float64)
    assert noise.std() == pytest.approx(plan.local_variance**0.5, rel=0.25)  # the share, on a zero update
    assert abs(noise.mean()) < 4 * plan.local_variance**0.5 / np.sqrt(noise.size)
    plain = FedSecureClient(failing).handle(_start_record(CONFIGS[0], ENCODING), context)
    assert "job failed" in plain.content.config_records["fedsecure"]["error"]
