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

__all__ = ["MESSAGE_TYPE", "RECORD", "STATE_RECORD", "JOINED_RECORD", "Kind", "MAX_TASK_BYTES",
           "key_holder_proof_payload"]

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
