"""Every protocol and user-level DP through the Flower drop-in, over fedsecure's in-process Flower ``Grid`` (each
message serialised to Flower's protobuf and each node's context rebuilt per message, as a SuperNode does): a
user's ``@app.train()`` function and Flower's Message-API FedAvg, with ``SecureGrid`` and
``secure_aggregation_mod`` swapped in, per-node credentials named in node config as on a real deployment."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("flwr")

from fedsecure import ConfigurationError  # noqa: E402
from fedsecure.dp import DPConfig, PrivacyLevel  # noqa: E402
from fedsecure.protocols import PaillierDeployment, ProtocolKind, Stage  # noqa: E402

CLIENTS = 5
SHAPES = ((6, 3), (3,))


def _data(partition: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(partition)  # noqa: csprng-ok (simulated data)
    x = rng.normal(size=(20 + 5 * partition, 6))
    return x, x @ np.arange(18).reshape(6, 3) / 10


def _step(partition: int, weights: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    x, y = _data(partition)
    error = x @ weights + bias - y
    return ((weights - 0.05 * (x.T @ error) / len(x)).astype(np.float32),
            (bias - 0.05 * error.mean(axis=0)).astype(np.float32), len(x))


def _client_app() -> Any:
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    from fedsecure.flower import secure_aggregation_mod

    app = ClientApp(mods=[secure_aggregation_mod])

    @app.train()
    def train(message: Any, context: Any) -> Any:  # a user's own train function
        weights, bias, examples = _step(int(context.node_config["partition-id"]),
                                        *message.content["arrays"].to_numpy_ndarrays())
        metrics = MetricRecord({"num-examples": examples})
        return Message(RecordDict({"arrays": ArrayRecord([weights, bias]), "metrics": metrics}), reply_to=message)

    return app


def _fedavg(partitions: list[int]) -> list[np.ndarray]:
    """Plaintext FedAvg of one round from zero, over ``partitions``."""
    steps = [_step(p, np.zeros(SHAPES[0], np.float32), np.zeros(SHAPES[1], np.float32)) for p in partitions]
    total = sum(n for _, _, n in steps)
    return [sum(s[i].astype(np.float64) * s[2] for s in steps) / total for i in (0, 1)]


def _deployment(kind: str, keys: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Node configs and SecureGrid keywords for ``kind``, with credential files written to ``keys``."""
    from fedsecure.runtime.flower import write_identities, write_paillier_deployment

    configs: list[dict[str, Any]] = [{"partition-id": i, "num-partitions": CLIENTS} for i in range(CLIENTS)]
    options: dict[str, Any] = {}
    if kind in ("secagg", "secagg+"):
        options["protocol"] = kind
    elif kind == "active":
        options["identities"] = write_identities(keys, range(CLIENTS))
        for i in range(CLIENTS):
            configs[i] |= {"fedsecure-client-id": i, "fedsecure-identity": str(keys / f"client-{i}.identity.json")}
    else:
        protocol = ProtocolKind(kind)
        deployment = PaillierDeployment.create(protocol, list(range(CLIENTS)), key_bits=1024, insecure=True)
        options |= {"protocol": kind, "paillier": write_paillier_deployment(keys, deployment)}
        policy = {"fedsecure-protocols": kind, "fedsecure-allow-insecure-keys": True}
        for i in range(CLIENTS):
            configs[i] |= policy | {"fedsecure-client-id": i,
                                    "fedsecure-paillier": str(keys / f"client-{i}.paillier.json")}
        if deployment.key_holder is not None:
            # The separate key holder is one more node; the strategy may sample it, the round leaves it out.
            configs.append(policy | {"partition-id": CLIENTS, "num-partitions": CLIENTS,
                                     "fedsecure-key-holder": str(keys / "key-holder.json")})
    return configs, options


def _run(configs: list[dict[str, Any]], options: dict[str, Any], *, rounds: int = 1,
         silence: dict[int, Stage] | None = None) -> tuple[list[np.ndarray], Any]:
    from flwr.app import ArrayRecord
    from flwr.serverapp.strategy import FedAvg

    from fedsecure.flower import SecureGrid
    from fedsecure.runtime.flower import LocalGrid

    grid = LocalGrid.create(_client_app(), configs)
    for node, stage in (silence or {}).items():
        grid.silence[1000 + node] = stage
    secure = SecureGrid(grid, clip=100.0, stage_timeout=2.0, fit_timeout=5.0, **options)
    strategy = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=CLIENTS,
                      min_available_nodes=CLIENTS)
    initial = ArrayRecord([np.zeros(SHAPES[0], np.float32), np.zeros(SHAPES[1], np.float32)])
    result = strategy.start(grid=secure, initial_arrays=initial, num_rounds=rounds)
    return result.arrays.to_numpy_ndarrays(), secure


@pytest.mark.parametrize("kind", ["secagg", "secagg+", "active", "paillier", "paillier-threshold"])
def test_every_protocol_through_the_drop_in_gives_fedavgs_result(kind: str, tmp_path: Path) -> None:
    configs, options = _deployment(kind, tmp_path)
    arrays, secure = _run(configs, options)
    (summary,) = secure.summaries
    assert summary.aggregated and summary.survivors == tuple(range(CLIENTS))
    for got, want in zip(arrays, _fedavg(list(range(CLIENTS)))):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("stage", [Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT, Stage.UNMASKING])
def test_a_client_dropping_at_any_stage_of_a_drop_in_round_leaves_the_survivors_mean(stage: Stage,
                                                                                     tmp_path: Path) -> None:
    configs, options = _deployment("secagg+", tmp_path)
    arrays, secure = _run(configs, options, silence={2: stage})
    (summary,) = secure.summaries
    # A client silent from the unmasking stage on has already sent its masked input: it is in the sum.
    contributors = list(range(CLIENTS)) if stage is Stage.UNMASKING else [0, 1, 3, 4]
    partitions = sorted(summary.nodes[client] - 1000 for client in summary.survivors)  # nodes are 1000 + partition
    assert summary.aggregated and partitions == contributors
    for got, want in zip(arrays, _fedavg(contributors)):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("level", [PrivacyLevel.CENTRAL, PrivacyLevel.DISTRIBUTED])
def test_user_level_dp_through_the_drop_in_adds_the_planned_noise_and_counts_epsilon(level: PrivacyLevel,
                                                                                     tmp_path: Path) -> None:
    configs, options = _deployment("secagg", tmp_path)
    dp = DPConfig(level=level, delta=1e-3, noise_multiplier=1.0)
    arrays, secure = _run(configs, options | {"dp": dp}, rounds=2)
    assert [s.aggregated for s in secure.summaries] == [True, True]
    epsilons = [s.epsilon for s in secure.summaries]
    assert epsilons[0] is not None and 0 < epsilons[0] < epsilons[1] == secure.ledger.epsilon
    # Each client's loss is kept under its Flower node id (1000 + partition), which lasts from round to round,
    # not under its position in the strategy's list, which may name another node next round.
    ledger = secure.ledger
    assert all(ledger.client_epsilon(1000 + p) > 0 for p in range(CLIENTS))
    assert all(ledger.client_epsilon(p) == 0 for p in range(CLIENTS))
    # One round's release: the unweighted mean of clipped updates plus noise of sigma = z * C / denominator
    # (plus stochastic rounding's small addition), the denominator being the cohort less the planned dropouts.
    arrays, secure = _run(configs, options | {"dp": dp}, rounds=1)
    updates = [np.concatenate([a.ravel().astype(np.float64) for a in _step(p, np.zeros(SHAPES[0]),
                                                                          np.zeros(SHAPES[1]))[:2]])
               for p in range(CLIENTS)]
    denominator = CLIENTS * (1 - secure.threat.dropout_fraction)
    noise = np.concatenate([a.ravel() for a in arrays]) - sum(updates) / denominator
    sigma = 100.0 / denominator
    assert 0.5 < noise.std() / sigma < 1.6, noise.std() / sigma


def test_the_drop_in_refuses_settings_it_cannot_honour(tmp_path: Path) -> None:
    from fedsecure.flower import SecureAggregationWorkflow

    with pytest.raises(ConfigurationError, match="deployment's public file"):
        SecureAggregationWorkflow(protocol="paillier")
    with pytest.raises(ConfigurationError, match="local DP runs inside"):
        SecureAggregationWorkflow(dp=DPConfig(level=PrivacyLevel.LOCAL, delta=1e-5, noise_multiplier=1.0))
    configs, options = _deployment("paillier", tmp_path)
    with pytest.raises(ConfigurationError, match="SecAgg ring"):
        SecureAggregationWorkflow(dp=DPConfig(level=PrivacyLevel.DISTRIBUTED, delta=1e-5, noise_multiplier=1.0),
                                  **options)
    with pytest.raises(ConfigurationError, match="protocol must be one of"):
        SecureAggregationWorkflow(protocol="secagg++")


def test_a_node_without_a_registered_identity_is_left_out_and_named(tmp_path: Path) -> None:
    configs, options = _deployment("active", tmp_path)
    del configs[4]["fedsecure-identity"]  # a node its operator never gave a key: it cannot join the active variant
    arrays, secure = _run(configs, options)
    (summary,) = secure.summaries
    assert summary.aggregated and 4 not in summary.survivors and len(summary.survivors) == CLIENTS - 1
    assert "identity" in summary.dropped[4].lower(), summary.dropped


@pytest.mark.parametrize("allow_plaintext", [False, True])
def test_the_mod_refuses_a_train_message_that_asks_for_parameters_in_the_clear(allow_plaintext: bool) -> None:
    # A server that skips secure aggregation sends a plain train message: the user's train function would answer
    # with its trained parameters. The mod refuses unless the node's policy allows the plaintext baseline.
    from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict

    from fedsecure.runtime.flower import LocalGrid

    policy = {"fedsecure-protocols": "secagg,secagg+,plaintext"} if allow_plaintext else {}
    grid = LocalGrid.create(_client_app(), [{"partition-id": 0, "num-partitions": 1} | policy])
    initial = ArrayRecord([np.zeros(SHAPES[0], np.float32), np.zeros(SHAPES[1], np.float32)])
    message = Message(RecordDict({"arrays": initial, "config": ConfigRecord({})}), 1000, "train")
    (reply,) = grid.send_and_receive([message])
    if allow_plaintext:
        assert not reply.has_error()
        np.testing.assert_allclose(reply.content["arrays"].to_numpy_ndarrays()[1], _step(0, *initial.to_numpy_ndarrays())[1])
    else:
        assert reply.has_error() and "only through secure aggregation" in reply.error.reason


def _isolation_attack(monkeypatch: pytest.MonkeyPatch, *, clients_check: bool) -> tuple[Any, list[np.ndarray]]:
    """A malicious server's model-inconsistency attack: the victim (partition 2) gets the real model, every other
    client a learning rate of zero, so the others' updates vanish and the sum is the victim's update alone. The
    server binds the victim's task and skips its own consistency check; with ``clients_check`` False the clients
    skip theirs too (the weakened configuration)."""
    from flwr.app import ArrayRecord, ConfigRecord, RecordDict

    from fedsecure.encoding import ClipMode, EncodingConfig
    from fedsecure.protocols import RoundConfig
    from fedsecure.runtime.flower import FlowerTransport, LocalGrid, encoding_record
    from fedsecure.runtime.flower import _client, _common, _server

    app = _client_app_with_learning_rate()
    grid = LocalGrid.create(app, [{"partition-id": i, "num-partitions": CLIENTS} for i in range(CLIENTS)])
    encoding = EncodingConfig.fit_scale(dimension=21, clients=CLIENTS, clip=100.0, ring_bits=64,
                                        clip_mode=ClipMode.L2, max_weight=1000)
    initial = ArrayRecord([np.zeros(SHAPES[0], np.float32), np.zeros(SHAPES[1], np.float32)])
    records = {1000 + p: RecordDict({"arrays": initial, "config": ConfigRecord({"lr": 0.05 if p == 2 else 0.0})})
               for p in range(CLIENTS)}
    victim_task = _common.task_digest(encoding_record(encoding), records[1002])
    monkeypatch.setattr(_server, "task_digest", lambda fields, records=None: victim_task)
    if not clients_check:
        monkeypatch.setattr(_client, "task_digest", lambda fields, records=None: victim_task)
    config = RoundConfig.create(protocol=ProtocolKind.SECAGG_PLUS, clients=range(CLIENTS), encoding=encoding,
                                round_id=int.from_bytes(os.urandom(4), "big"), task_digest=victim_task)
    from fedsecure.encoding import Quantizer

    report = FlowerTransport(grid, stage_timeout=2.0, message_type="train").run_round(
        config, {c: 1000 + c for c in range(CLIENTS)}, encoding_record(encoding), start_records=records)
    if report.result is None:
        return report, []
    decoded = Quantizer(encoding).decode_sum(report.result.ring_sum)
    return report, [decoded.total / decoded.total_weight]


def _client_app_with_learning_rate() -> Any:
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    from fedsecure.flower import secure_aggregation_mod

    app = ClientApp(mods=[secure_aggregation_mod])

    @app.train()
    def train(message: Any, context: Any) -> Any:  # a user's train function that reads its learning rate
        x, y = _data(int(context.node_config["partition-id"]))
        weights, bias = message.content["arrays"].to_numpy_ndarrays()
        rate = float(message.content["config"]["lr"])
        error = x @ weights + bias - y
        weights = (weights - rate * (x.T @ error) / len(x)).astype(np.float32)
        bias = (bias - rate * error.mean(axis=0)).astype(np.float32)
        metrics = MetricRecord({"num-examples": len(x)})
        return Message(RecordDict({"arrays": ArrayRecord([weights, bias]), "metrics": metrics}), reply_to=message)

    return app


def test_a_server_cannot_isolate_one_clients_update_by_giving_the_others_another_task(
        monkeypatch: pytest.MonkeyPatch) -> None:
    report, _ = _isolation_attack(monkeypatch, clients_check=True)
    # Protective: every client handed a task other than the one the configuration binds refuses before training.
    assert report.result is None
    refused = [c for c, e in report.client_errors.items() if "task" in str(e) and "configuration binds" in str(e)]
    assert sorted(refused) == [0, 1, 3, 4]


def test_without_the_task_check_the_isolation_attack_recovers_the_victims_update(
        monkeypatch: pytest.MonkeyPatch) -> None:
    report, (mean,) = _isolation_attack(monkeypatch, clients_check=False)
    # Weakened (clients do not check their task): the others' updates are zero, and the "mean" times the total
    # weight over the victim's weight is the victim's own update.
    assert report.result is not None and len(report.result.survivors) == CLIENTS
    weights, bias, examples = _step(2, np.zeros(SHAPES[0], np.float32), np.zeros(SHAPES[1], np.float32))
    total = sum(len(_data(p)[1]) for p in range(CLIENTS))
    victim = np.concatenate([weights.ravel(), bias.ravel()]).astype(np.float64)
    np.testing.assert_allclose(mean * total / examples, victim, rtol=0, atol=1e-6)


def test_a_strategy_that_gives_clients_different_instructions_gets_no_secure_round(tmp_path: Path) -> None:
    configs, options = _deployment("secagg+", tmp_path)
    from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict

    from fedsecure.flower import SecureGrid
    from fedsecure.runtime.flower import LocalGrid

    grid = LocalGrid.create(_client_app(), configs)
    secure = SecureGrid(grid, clip=100.0, stage_timeout=2.0, fit_timeout=5.0, **options)
    initial = ArrayRecord([np.zeros(SHAPES[0], np.float32), np.zeros(SHAPES[1], np.float32)])
    messages = [Message(RecordDict({"arrays": initial, "config": ConfigRecord({"lr": 0.05 * (node == 1002)})}),
                        node, "train") for node in range(1000, 1000 + CLIENTS)]
    replies = list(secure.send_and_receive(messages))
    assert all(reply.has_error() for reply in replies)
    assert "different instructions" in secure.summaries[-1].reason


@pytest.mark.parametrize("message_type", ["train.default", "get_parameters"])
def test_the_mod_refuses_every_message_that_would_return_parameters_in_the_clear(message_type: str) -> None:
    from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict

    from fedsecure.runtime.flower import LocalGrid

    app = _client_app() if message_type.startswith("train") else _legacy_client_app()
    grid = LocalGrid.create(app, [{"partition-id": 0, "num-partitions": 1}])
    initial = ArrayRecord([np.zeros(SHAPES[0], np.float32), np.zeros(SHAPES[1], np.float32)])
    (reply,) = grid.send_and_receive([Message(RecordDict({"arrays": initial, "config": ConfigRecord({})}), 1000,
                                              message_type)])
    assert reply.has_error() and "only through secure aggregation" in reply.error.reason


def _legacy_client_app() -> Any:
    """A NumPyClient app whose get_parameters returns the parameters it last trained (kept between messages)."""
    from flwr.client import ClientApp, NumPyClient

    from fedsecure.flower import secure_aggregation_mod

    class Keeping(NumPyClient):
        def get_parameters(self, config: dict[str, Any]) -> list[np.ndarray]:
            return list(_step(0, np.zeros(SHAPES[0], np.float32), np.zeros(SHAPES[1], np.float32))[:2])

    return ClientApp(client_fn=lambda context: Keeping().to_client(), mods=[secure_aggregation_mod])


def test_a_claim_of_local_dp_does_not_satisfy_a_node_that_requires_it(tmp_path: Path) -> None:
    # The drop-in runs the user's own fit, which fedsecure cannot make private: a round start that claims local
    # DP is refused, so a node requiring local DP never takes part on a field's word.
    from fedsecure.encoding import ClipMode, EncodingConfig
    from fedsecure.protocols import RoundConfig
    from fedsecure.runtime.flower import FlowerTransport, LocalGrid, encoding_record

    node = {"fedsecure-require-dp": "local", "fedsecure-min-noise-multiplier": 1.0}
    grid = LocalGrid.create(_client_app(), [node | {"partition-id": i, "num-partitions": CLIENTS}
                                            for i in range(CLIENTS)])
    encoding = EncodingConfig.fit_scale(dimension=21, clients=CLIENTS, clip=100.0, ring_bits=64,
                                        clip_mode=ClipMode.L2, max_weight=1000)
    from flwr.app import ArrayRecord, ConfigRecord, RecordDict

    initial = ArrayRecord([np.zeros(SHAPES[0], np.float32), np.zeros(SHAPES[1], np.float32)])
    records = {1000 + p: RecordDict({"arrays": initial, "config": ConfigRecord({})}) for p in range(CLIENTS)}
    config = RoundConfig.create(protocol=ProtocolKind.SECAGG_PLUS, clients=range(CLIENTS), encoding=encoding)
    report = FlowerTransport(grid, stage_timeout=2.0, message_type="train").run_round(
        config, {c: 1000 + c for c in range(CLIENTS)},
        encoding_record(encoding) | {"dp-level": "local", "dp-noise-multiplier": 5.0}, start_records=records)
    assert report.result is None
    assert all("no local DP of its own" in str(error) for error in report.client_errors.values())


def test_the_task_digest_sees_the_order_of_records_and_of_their_keys() -> None:
    # A user's function may read records, or a config's values, by position: two tasks that differ only in order
    # are two tasks, and a server cannot give one to the victim and the other to everyone else.
    from flwr.app import ConfigRecord, RecordDict

    from fedsecure.runtime.flower._common import task_digest

    fast, still = ConfigRecord({"lr": 0.05}), ConfigRecord({"lr": 0.0})
    assert task_digest({}, RecordDict({"a": still, "z": fast})) != task_digest({}, RecordDict({"z": fast, "a": still}))
    assert task_digest({}, RecordDict({"c": ConfigRecord({"lr": 0.05, "mu": 0.0})})) != \
        task_digest({}, RecordDict({"c": ConfigRecord({"mu": 0.0, "lr": 0.05})}))
    assert task_digest({}, RecordDict({"c": ConfigRecord({"lr": 0.05})})) == \
        task_digest({}, RecordDict({"c": ConfigRecord({"lr": 0.05})}))
