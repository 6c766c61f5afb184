"""What the Flower server and client agree on: the message type, the record layout and its limits.

fedsecure's own wire codec carries every protocol message; Flower only moves
the bytes. Each Flower message holds one ``ConfigRecord`` named
:data:`RECORD`, whose ``kind`` says what it is:

``hello``
    The server asks a node for its fedsecure client id (``partition-id`` in
    its node config, or ``fedsecure-client-id``). The reply carries ``client``,
    the node's ``wire`` version and its ``role`` (``client``, or ``decryptor``
    for a Paillier key holder, which also signs the server's fresh ``nonce``
    with its registered key: a ``proof``, never a decryption).
``round-start``
    The first message of a round: the round configuration's canonical bytes
    (``config``), the recipient's ``client`` id, the public encoding
    parameters (``encoding-*``), the job's public inputs (``task-*``, say the
    global model) and fedsecure's ``RoundStart`` (``message``).
    Everything a round start carries besides the per-message fields (``kind``, ``round``, ``stage``, ``client``,
    ``config``, ``message``), and every other record beside it (the drop-in sends a strategy's instructions this
    way), is the round's task: :func:`task_digest` hashes it, the configuration binds that digest, and a client
    refuses a round start whose task differs from the one bound.
``step``
    Any later protocol message (``message``).
``abort``
    The round is over for this client: it forgets its secrets. No reply is
    awaited.
``decrypt``
    To the separate Paillier key holder: the round configuration
    (``config``) and fedsecure's ``DecryptionRequest`` (``message``).

Every reply holds ``message`` (fedsecure bytes), or ``error`` when the
client refused, naming why.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from typing import Any

__all__ = ["MESSAGE_TYPE", "RECORD", "STATE_RECORD", "JOINED_RECORD", "Kind", "MAX_TASK_BYTES",
           "key_holder_proof_payload", "task_digest"]

MESSAGE_TYPE = "query.fedsecure"
RECORD = "fedsecure"
#: The ``context.state`` record in which a client keeps its session between messages (on its own device).
STATE_RECORD = "fedsecure-session"
#: The ``context.state`` record of the configurations this node joined in the run: each is joined once.
JOINED_RECORD = "fedsecure-joined"
#: The largest public task a client accepts with a round (a model of 64M float64 parameters).
MAX_TASK_BYTES = 512 << 20


class Kind:
    """The values of a record's ``kind``."""

    HELLO = "hello"
    ROUND_START = "round-start"
    STEP = "step"
    ABORT = "abort"
    DECRYPT = "decrypt"


def key_holder_proof_payload(nonce: bytes) -> bytes:
    """What the Paillier key holder signs to show it is the registered one (a signature, not a decryption oracle)."""
    return b"fedsecure/v1/key-holder-hello" + nonce


#: A round start's fields that belong to the message, not to the round's task.
_PER_MESSAGE = frozenset({"kind", "round", "stage", "client", "config", "message", "nonce"})


def task_digest(fields: Mapping[str, Any], records: Any = None) -> bytes:
    """SHA-256 of a round's task, in a canonical form: the round start's public fields (``encoding-*``,
    ``task-*``, ``dp-*``) and every record of ``records`` (a Flower ``RecordDict``) other than fedsecure's own.

    Threat model: a server that hands one client the real model and the others a model or instructions that make
    their updates vanish would read that client's update in the sum (a model-inconsistency attack). Bound into the
    configuration's digest, which salts every key of the round, different tasks give masks that never cancel,
    and each client checks the task it was given against the digest before it trains.
    """
    digest = hashlib.sha256(b"fedsecure/v1/round-task")

    def put(data: bytes) -> None:
        digest.update(struct.pack("<Q", len(data)))
        digest.update(data)

    def value(item: Any) -> None:
        if isinstance(item, bool):
            put(b"?" + bytes([item]))
        elif isinstance(item, int):
            put(b"i" + str(item).encode())
        elif isinstance(item, float):
            put(b"f" + struct.pack("<d", item))
        elif isinstance(item, str):
            put(b"s" + item.encode())
        elif isinstance(item, (bytes, bytearray)):
            put(b"b" + bytes(item))
        elif isinstance(item, list):
            put(b"l" + struct.pack("<Q", len(item)))
            for element in item:
                value(element)
        else:
            raise TypeError(f"a task value of type {type(item).__name__}")

    names = sorted(key for key in fields if key not in _PER_MESSAGE)
    put(b"fields" + struct.pack("<Q", len(names)))
    for name in names:
        put(name.encode())
        value(fields[name])
    views: tuple[Any, Any, Any] = ((records.array_records, records.config_records, records.metric_records)
                                   if records is not None else ({}, {}, {}))
    for kind, view in zip(("arrays", "configs", "metrics"), views):
        # In the order they arrive: a user's function may read records, and their keys, by position.
        names = [name for name in view if not (kind == "configs" and name == RECORD)]
        put(kind.encode() + struct.pack("<Q", len(names)))
        for name in names:
            put(name.encode())
            record = view[name]
            if kind == "arrays":
                keys = list(record.keys())  # An ArrayRecord's order is the model's layout: kept as it is.
                put(struct.pack("<Q", len(keys)))
                for key in keys:
                    array = record[key]
                    put(key.encode())
                    put(str(array.dtype).encode())
                    put(str(list(array.shape)).encode())
                    put(str(array.stype).encode())
                    put(bytes(array.data))
            else:
                keys = list(record.keys())
                put(struct.pack("<Q", len(keys)))
                for key in keys:
                    put(key.encode())
                    value(record[key])
    return digest.digest()
