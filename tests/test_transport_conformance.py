"""One suite, every transport: the in-process simulator and the Flower runtime (over :class:`LocalGrid`).

Each test runs the same round through each transport and checks the same
outcome: the exact ring sum of exactly the right survivors, dropouts at every
client stage, a malformed message refused and blamed on its sender, an abort
below the threshold that releases nothing, and a next round that proceeds.
The Flower transport's loopback run with real processes is ``test_flower_e2e.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pytest

from fedsecure import PeerFault
from fedsecure.encoding import ClipMode, EncodedUpdate, EncodingConfig, Quantizer
from fedsecure.protocols import ProtocolKind, RoundConfig, Stage
from fedsecure.runtime import DropoutSchedule, RoundReport, Simulator, client_data, client_stages, plaintext_ring_sum

Tamper = Callable[[bytes], bytes]


@dataclass
class Outcome:
    report: RoundReport
    inputs: dict[int, EncodedUpdate]

    def assert_exact(self) -> None:
        result = self.report.result
        assert result is not None, self.report.abort
        expected = plaintext_ring_sum(self.inputs, sorted(result.survivors))
        assert np.array_equal(result.ring_sum, expected)


@dataclass
class SimulatorTransport:
    name: str = "simulator"

    def run(self, config: RoundConfig, encoding: EncodingConfig, *, silent: Mapping[int, Stage] = {},
            tamper: Mapping[int, tuple[Stage, Tamper]] = {}) -> Outcome:
        quantizer = Quantizer(encoding)
        inputs = {c: quantizer.encode(client_data(0, c, encoding.dimension)) for c in config.clients}

        def interceptor(client: int, stage: Stage, data: bytes) -> bytes | None:
            if client in tamper and tamper[client][0] is stage:
                return tamper[client][1](data)
            return data

        report = Simulator(config, inputs, schedule=DropoutSchedule(dict(silent)), interceptor=interceptor).run()
        return Outcome(report, inputs)


@dataclass
class FlowerTransportHarness:
    name: str = "flower"
    grids: list[object] = field(default_factory=list)

    def run(self, config: RoundConfig, encoding: EncodingConfig, *, silent: Mapping[int, Stage] = {},
            tamper: Mapping[int, tuple[Stage, Tamper]] = {}) -> Outcome:
        from fedsecure.runtime.flower import ClientPolicy, FlowerTransport, LocalGrid, client_app, encoding_record

        inputs: dict[int, EncodedUpdate] = {}
        policy = ClientPolicy(protocols=frozenset(ProtocolKind) - {ProtocolKind.PAILLIER,
                                                                   ProtocolKind.PAILLIER_THRESHOLD})
        app = client_app(policy=policy, observe=lambda context, round_id, client, encoded: inputs.__setitem__(
            client, encoded))
        grid = LocalGrid.create(app, [{"partition-id": c} for c in config.clients])
        self.grids.append(grid)
        nodes = {c: 1000 + i for i, c in enumerate(config.clients)}
        for client, stage in silent.items():
            grid.silence[nodes[client]] = stage
        for client, (stage, rewrite) in tamper.items():
            grid.tamper[nodes[client]] = (lambda stage, rewrite: lambda node, label, data:
                                          rewrite(data) if label == stage.label else data)(stage, rewrite)
        transport = FlowerTransport(grid, stage_timeout=0.01)
        report = transport.run_round(config, nodes, encoding_record(encoding) | {"task-job": "simulate",
                                                                                 "task-seed": 0})
        return Outcome(report, inputs)


@pytest.fixture(params=["simulator", "flower"])
def transport(request: pytest.FixtureRequest) -> SimulatorTransport | FlowerTransportHarness:
    if request.param == "flower":
        pytest.importorskip("flwr")
        return FlowerTransportHarness()
    return SimulatorTransport()


def _round(protocol: ProtocolKind, clients: int = 8, dimension: int = 300, round_id: int = 3
           ) -> tuple[RoundConfig, EncodingConfig]:
    encoding = EncodingConfig.fit_scale(dimension=dimension, clients=clients, clip=1.0, ring_bits=32,
                                        clip_mode=ClipMode.PER_COORDINATE)
    return RoundConfig.create(protocol=protocol, clients=range(clients), encoding=encoding,
                              round_id=round_id), encoding


@pytest.mark.parametrize("protocol", [ProtocolKind.SECAGG, ProtocolKind.SECAGG_PLUS, ProtocolKind.PLAINTEXT])
def test_exact_sum_with_everyone(transport: SimulatorTransport, protocol: ProtocolKind) -> None:
    config, encoding = _round(protocol)
    outcome = transport.run(config, encoding)
    outcome.assert_exact()
    assert outcome.report.result is not None and outcome.report.result.survivors == frozenset(config.clients)


@pytest.mark.parametrize("protocol", [ProtocolKind.SECAGG, ProtocolKind.SECAGG_PLUS])
@pytest.mark.parametrize("stage", client_stages(ProtocolKind.SECAGG))
def test_dropouts_at_each_stage(transport: SimulatorTransport, protocol: ProtocolKind, stage: Stage) -> None:
    config, encoding = _round(protocol, clients=10)
    outcome = transport.run(config, encoding, silent={2: stage, 7: stage})
    outcome.assert_exact()
    survivors = outcome.report.result.survivors  # type: ignore[union-attr]
    # A client silent only in unmasking had its masked input counted; earlier, it is not in the sum.
    counted = stage > Stage.MASKED_INPUT
    assert (2 in survivors) is counted and (7 in survivors) is counted
    assert len(survivors) == 10 - (0 if counted else 2)


@pytest.mark.parametrize("stage", [Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT])
def test_malformed_message_is_refused_and_blamed(transport: SimulatorTransport, stage: Stage) -> None:
    config, encoding = _round(ProtocolKind.SECAGG_PLUS, clients=9)
    outcome = transport.run(config, encoding, tamper={4: (stage, lambda data: data[:-3])})
    outcome.assert_exact()
    assert 4 not in outcome.report.result.survivors  # type: ignore[union-attr]
    (error,) = outcome.report.rejected
    assert error.peer == 4 and error.fault in (PeerFault.MALFORMED, PeerFault.WRONG_SIZE)


def test_replayed_round_message_is_refused(transport: SimulatorTransport) -> None:
    config, encoding = _round(ProtocolKind.SECAGG, clients=6, round_id=5)

    def other_round(data: bytes) -> bytes:
        # The header's round id (bytes 2..10) of another round: a replayed or stale message.
        return data[:2] + (4).to_bytes(8, "little") + data[10:]

    outcome = transport.run(config, encoding, tamper={1: (Stage.MASKED_INPUT, other_round)})
    outcome.assert_exact()
    (error,) = outcome.report.rejected
    assert error.peer == 1 and error.fault is PeerFault.WRONG_ROUND


def test_abort_below_threshold_releases_nothing_and_next_round_proceeds(transport: SimulatorTransport) -> None:
    config, encoding = _round(ProtocolKind.SECAGG_PLUS, clients=8)
    too_many = len(config.clients) - config.threshold + 1
    outcome = transport.run(config, encoding, silent={c: Stage.SHARE_KEYS for c in range(too_many)})
    assert outcome.report.result is None and outcome.report.abort is not None
    assert outcome.report.abort.have < outcome.report.abort.need
    # Nothing was unmasked: no message after the stage that aborted.
    assert {r.stage for r in outcome.report.transcript} <= {"advertise-keys", "share-keys"}
    config, encoding = _round(ProtocolKind.SECAGG_PLUS, clients=8, round_id=4)
    transport.run(config, encoding).assert_exact()
