"""Every decoder fedsecure exposes to bytes or fields from elsewhere, with real inputs to seed mutations from.

Each target takes bytes and either returns or raises its declared error; anything else is a bug. The short runs
in ``test_fuzz.py`` (hypothesis) and the long campaign (``python tests/fuzz_campaign.py TARGET``, atheris,
coverage-guided) drive the same targets.
"""

from __future__ import annotations

import functools
import io
import atexit
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedsecure import DecodeError, LocalProtocolError
from fedsecure.encoding import ClipMode, EncodingConfig, Quantizer
from fedsecure.protocols import (
    DECRYPTOR,
    PaillierDeployment,
    ProtocolKind,
    RoundConfig,
    create_client_session,
    create_identities,
    create_server_session,
    decode_message,
    decode_round_config,
    encode_message,
    encode_round_config,
    restore_client_session,
)

DIMENSION = 24
CLIENTS = 5


@dataclass(frozen=True)
class Target:
    """A decoder under fuzzing: the function that must only raise ``declared``, and real inputs to start from."""

    name: str
    run: Callable[[bytes], object]
    declared: tuple[type[BaseException], ...]
    seeds: tuple[bytes, ...]


@functools.cache
def _rounds() -> list[tuple[RoundConfig, dict[int, Any], dict[int, Any], Any]]:
    """Small real rounds of every protocol: (config, updates, credentials, the separate key holder if any)."""
    encoding = EncodingConfig.fit_scale(dimension=DIMENSION, clients=CLIENTS, clip=1.0,
                                        clip_mode=ClipMode.PER_COORDINATE)
    quantizer = Quantizer(encoding)
    rng = np.random.default_rng(0)  # noqa: csprng-ok (fuzz seeds)
    updates = {c: quantizer.encode(rng.uniform(-1, 1, DIMENSION)) for c in range(CLIENTS)}
    registry, identities = create_identities(range(CLIENTS))
    rounds = []
    for protocol in (ProtocolKind.SECAGG, ProtocolKind.SECAGG_PLUS, ProtocolKind.PLAINTEXT):
        config = RoundConfig.create(protocol=protocol, clients=range(CLIENTS), encoding=encoding, round_id=3)
        rounds.append((config, updates, {}, None))
    active = RoundConfig.create(protocol=ProtocolKind.SECAGG, clients=range(CLIENTS), encoding=encoding, round_id=4,
                                identities=registry)
    rounds.append((active, updates, dict(identities), None))
    for protocol in (ProtocolKind.PAILLIER, ProtocolKind.PAILLIER_THRESHOLD):
        deployment = PaillierDeployment.create(protocol, range(CLIENTS), key_bits=512, insecure=True)
        config = RoundConfig.create(protocol=protocol, clients=range(CLIENTS), encoding=encoding, round_id=5,
                                    paillier=deployment.keys)
        rounds.append((config, updates, dict(deployment.credentials), deployment.key_holder))
    return rounds


@functools.cache
def _transcripts() -> tuple[list[bytes], list[bytes], list[tuple[RoundConfig, bytes, Any]]]:
    """Every message of each round (both ways, encoded), the session states after each client stage, and
    for the key holder the decryption request."""
    messages: list[bytes] = []
    states: list[tuple[RoundConfig, bytes, Any]] = []
    for config, updates, credentials, key_holder in _rounds():
        server = create_server_session(config)
        sessions = {c: create_client_session(config, c, updates[c], credentials.get(c)) for c in config.clients}
        outbox = server.start()
        while outbox:
            replies = []
            for message in outbox:
                messages.append(encode_message(message))
                if message.recipient == DECRYPTOR:
                    replies.append(key_holder.receive(config, message))
                    continue
                replies += sessions[message.recipient].receive(message)
                states.append((config, sessions[message.recipient].export_state(), credentials.get(message.recipient)))
            for reply in replies:
                messages.append(encode_message(reply))
                server.receive(reply)
            outbox = server.close_stage()
    return messages, [s for _, s, _ in states], states


def _message_target() -> Target:
    messages, _, _ = _transcripts()
    return Target("wire-message", lambda data: decode_message(data, max_bytes=1 << 20), (DecodeError,),
                  tuple(messages))


def _config_target() -> Target:
    configs = tuple(encode_round_config(config) for config, _, _, _ in _rounds())
    return Target("round-config", lambda data: decode_round_config(data, allow_insecure_keys=True), (DecodeError,),
                  configs)


def _state_target() -> Target:
    _, _, states = _transcripts()
    # One state per (config, session kind): the decoder checks the blob against the config it is restored under.
    chosen = {}
    for config, blob, credentials in states:
        chosen.setdefault((config.digest, blob[:64]), (config, blob, credentials))
    seeds = list(chosen.values())

    def run(data: bytes) -> object:
        # The first byte picks which real round the blob is restored under.
        if not data:
            raise LocalProtocolError("empty")
        config, _, credentials = seeds[data[0] % len(seeds)]
        return restore_client_session(config, data[1:], credentials)

    return Target("session-state", run, (LocalProtocolError,),
                  tuple(bytes([i]) + blob for i, (_, blob, _) in enumerate(seeds)))


@functools.cache
def _transcript_seed() -> bytes:
    from fedsecure.runtime import simulate

    lines = []
    for protocol in (ProtocolKind.SECAGG_PLUS, ProtocolKind.SECAGG):
        report = simulate(protocol=protocol, clients=6, dimension=20, record_fields=True)
        lines += list(report.transcript())
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def _transcript_target() -> Target:
    from fedsecure.audit import TranscriptError, parse_transcript, run_checks

    def run(data: bytes) -> object:
        return run_checks(parse_transcript(io.BytesIO(data)))

    return Target("transcript", run, (TranscriptError,), (_transcript_seed(),))


@functools.cache
def _checkpoint_seed() -> bytes:
    import torch

    from fedsecure.fl import FederatedClient, Federation

    torch.manual_seed(0)
    data = [(torch.randn(4, 3), torch.randint(0, 2, (4,))) for _ in range(3)]

    def train(model: Any, batch: Any) -> None:
        return None

    federation = Federation(model=torch.nn.Linear(3, 2), train=train, protocol=ProtocolKind.PLAINTEXT,
                            clients=[FederatedClient(i, d, 4) for i, d in enumerate(data)])
    with tempfile.TemporaryDirectory() as directory:
        federation.save(directory, [])
        with open(os.path.join(directory, "checkpoint.npz"), "rb") as handle:
            return handle.read()


def _checkpoint_target() -> Target:
    from fedsecure import ConfigurationError
    from fedsecure.fl._federation import read_checkpoint

    directory = tempfile.mkdtemp(prefix="fedsecure-fuzz-")
    path = os.path.join(directory, "checkpoint.npz")
    # The fuzzer rewrites one file for every input; it and its directory go when the process ends.
    atexit.register(shutil.rmtree, directory, True)

    def run(data: bytes) -> object:
        with open(path, "wb") as handle:
            handle.write(data)
        return read_checkpoint(path)

    return Target("checkpoint", run, (ConfigurationError,), (_checkpoint_seed(),))


@functools.cache
def _flower_seed() -> tuple[Any, bytes]:
    """A real round-start record's fields, serialised as JSON (bytes become hex strings with a marker)."""
    from fedsecure.runtime.flower._server import encoding_record

    config, _, _, _ = _rounds()[0]
    encoding = EncodingConfig.fit_scale(dimension=DIMENSION, clients=CLIENTS, clip=1.0,
                                        clip_mode=ClipMode.PER_COORDINATE)
    from fedsecure.protocols import RoundStart

    fields = encoding_record(encoding) | {
        "task-job": "simulate", "task-seed": 0, "kind": "round-start", "round": config.round_id,
        "stage": "advertise-keys", "config": encode_round_config(config), "client": 1,
        "message": encode_message(RoundStart(round_id=config.round_id, recipient=1, config_digest=config.digest))}
    encoded = {k: ({"hex": v.hex()} if isinstance(v, bytes) else v) for k, v in fields.items()}
    return config, json.dumps(encoded).encode()


def _flower_target() -> Target:
    from flwr.app import ConfigRecord, Context, Message, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from fedsecure.runtime.flower import ClientUpdate, FedSecureClient

    if getattr(TaskIdentity, "_run_id", None) is None:
        # Flower's Message needs the identity of a running task, as in a ServerApp process.
        TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 1

    handler = FedSecureClient(lambda context, client, task: ClientUpdate(np.zeros(DIMENSION)))

    def run(data: bytes) -> object:
        # Bytes -> the fields of a Flower record; a record Flower itself would refuse to build is not an input.
        try:
            fields = json.loads(data)
        except (ValueError, RecursionError):
            return None
        if not isinstance(fields, dict):
            return None
        record: dict[str, Any] = {}
        for key, value in fields.items():
            if isinstance(value, dict) and isinstance(value.get("hex"), str):
                try:
                    value = bytes.fromhex(value["hex"])
                except ValueError:
                    return None
            record[str(key)] = value
        try:
            content = RecordDict({"fedsecure": ConfigRecord(record)})
        except (TypeError, ValueError):
            return None
        context = Context(run_id=1, node_id=1001, node_config={"partition-id": 1}, state=RecordDict(), run_config={})
        reply = handler.handle(Message(content, 1001, "query.fedsecure"), context)
        answer = reply.content.config_records["fedsecure"]
        if "error" not in answer and "message" not in answer:
            raise AssertionError(f"a reply with neither a message nor an error: {dict(answer)}")
        return reply

    return Target("flower-record", run, (), (_flower_seed()[1],))


TARGETS: dict[str, Callable[[], Target]] = {
    "wire-message": _message_target,
    "round-config": _config_target,
    "session-state": _state_target,
    "transcript": _transcript_target,
    "checkpoint": _checkpoint_target,
    "flower-record": _flower_target,
}
