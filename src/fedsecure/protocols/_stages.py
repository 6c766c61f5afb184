"""Theory of operation: the stages of every protocol, as data.

SecAgg (Bonawitz et al., CCS 2017, §4, Figure 4, honest-but-curious variant)
and SecAgg+ (Bell et al., CCS 2020, §3, the same rounds restricted to a sparse
neighbour graph) run four client stages:

0. **AdvertiseKeys**: each client sends two fresh X25519 public keys, c_u^PK for
   encrypting shares and s_u^PK for pairwise masks. The server forwards each
   client its neighbours' keys (U1).
1. **ShareKeys**: each client draws a self-mask seed b_u, Shamir-shares b_u and
   s_u^SK t-of-k among its neighbourhood, and sends each neighbour its shares
   in an AES-GCM envelope through the server, which forwards them (U2).
2. **MaskedInputCollection**: each client sends y_u = x_u + PRG(b_u) +
   sum_{v in U2} (+/-) PRG(s_uv); the server adds it to a running sum (U3).
3. **Unmasking**: the server tells each client which neighbours survived;
   the client returns shares of b_v for survivors and of s_v^SK for the
   dropped, never both for one v. The server reconstructs, removes the
   self-masks of survivors and the pairwise masks of the dropped, and is left
   with sum_{u in U3} x_u.

The active-adversary variant (§4, the malicious-server additions) signs the
advertised keys with each client's long-term Ed25519 identity key and adds a
stage between 2 and 3:

2½. **ConsistencyCheck**: the server shows every client in U3 the whole set U3;
   each signs it and returns the signature (U4). In Unmasking the server
   forwards those signatures, and a client unmasks only if more than two
   thirds of the cohort signed the very set it signed, so the server cannot
   tell some clients that v dropped and others that v survived.

Those tables are :data:`ACTIVE_CLIENT_TRANSITIONS` and
:data:`ACTIVE_SERVER_STAGES`. The plaintext baseline has one stage.

Paillier runs four stages in both arrangements. Clients commit to their
packed ciphertexts with a signed SHA-256 (**Commitment**); the server shows
every committer the set of commitments and each reveals its ciphertexts with a
proof of plaintext knowledge bound to the round and itself, signed together
with that set (**CiphertextInput**); the server shows every contributor all
contributions and their product, and each checks every signature and proof,
recomputes the product, and signs the contributor set and the aggregate's
digest (**AggregateApproval**). With a separate decryptor (like FATE's
arbiter) the server then sends the key holder the aggregate, the contributor
set and a quorum of approvals, never a single contribution, and it returns the
total with the aggregate's randomness so the server can check it
(**Decryption**; the decryptor answers, not the clients). Threshold Paillier
(Damgård–Jurik, PKC 2001) replaces the last stage with **PartialDecryption**:
each approving key-share holder checks that t holders approved the very set it
approved, and returns its partial decryption with Shoup's proof of correctness.

A client's state only changes through :data:`CLIENT_TRANSITIONS`; a server
stage only through :data:`SERVER_STAGES`. A message missing from the table is
out of stage, which is one clear error.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from ._config import ProtocolKind
from ._messages import (
    AdvertiseKeys,
    AggregateApproval,
    AggregateRequest,
    CiphertextCommitment,
    RevealRequest,
    DecryptedAggregate,
    DecryptionRequest,
    EncryptedInput,
    PartialDecryption,
    KeysBroadcast,
    MaskedInput,
    PlaintextInput,
    RoundStart,
    ShareKeys,
    SharesDelivery,
    UnmaskingShares,
    UnmaskRequest,
    ConsistencyRequest,
    ConsistencySignature,
)

__all__ = ["Stage", "ClientState", "StageRule", "CLIENT_TRANSITIONS", "SERVER_STAGES", "FIRST_STAGE",
           "ACTIVE_CLIENT_TRANSITIONS", "ACTIVE_SERVER_STAGES", "server_stages", "client_transitions"]


class Stage(enum.IntEnum):
    """Server stages; the value is bound into envelope associated data and the transcript."""

    ADVERTISE_KEYS = 0
    SHARE_KEYS = 1
    MASKED_INPUT = 2
    CONSISTENCY_CHECK = 3
    UNMASKING = 4
    PLAINTEXT_INPUT = 10
    # Paillier stages, in protocol order (DropoutSchedule compares stages by value).
    COMMITMENT = 11
    CIPHERTEXT_INPUT = 12
    AGGREGATE_APPROVAL = 13
    DECRYPTION = 14
    PARTIAL_DECRYPTION = 15
    DONE = 20
    ABORTED = 21

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


class ClientState(enum.Enum):
    """Where a client session is: waiting for which server message."""

    AWAIT_START = "await-start"
    AWAIT_KEYS = "await-keys"
    AWAIT_SHARES = "await-shares"
    AWAIT_CONSISTENCY = "await-consistency"
    AWAIT_UNMASK = "await-unmask"
    AWAIT_DECRYPTION = "await-decryption"
    AWAIT_REVEAL = "await-reveal"
    AWAIT_AGGREGATE = "await-aggregate"
    DONE = "done"
    ABORTED = "aborted"


@dataclass(frozen=True, slots=True)
class StageRule:
    """What the server accepts from clients in a stage, and where ``close_stage`` goes next."""

    accepts: type
    next_stage: Stage


# (protocol, client state) -> {server message type accepted: (next state, stage the reply belongs to)}
CLIENT_TRANSITIONS: Mapping[ProtocolKind, Mapping[ClientState, Mapping[type, tuple[ClientState, Stage]]]] = {
    ProtocolKind.SECAGG: {
        ClientState.AWAIT_START: {RoundStart: (ClientState.AWAIT_KEYS, Stage.ADVERTISE_KEYS)},
        ClientState.AWAIT_KEYS: {KeysBroadcast: (ClientState.AWAIT_SHARES, Stage.SHARE_KEYS)},
        ClientState.AWAIT_SHARES: {SharesDelivery: (ClientState.AWAIT_UNMASK, Stage.MASKED_INPUT)},
        ClientState.AWAIT_UNMASK: {UnmaskRequest: (ClientState.DONE, Stage.UNMASKING)},
    },
    ProtocolKind.PLAINTEXT: {
        ClientState.AWAIT_START: {RoundStart: (ClientState.DONE, Stage.PLAINTEXT_INPUT)},
    },
    ProtocolKind.PAILLIER: {
        ClientState.AWAIT_START: {RoundStart: (ClientState.AWAIT_REVEAL, Stage.COMMITMENT)},
        ClientState.AWAIT_REVEAL: {RevealRequest: (ClientState.AWAIT_AGGREGATE, Stage.CIPHERTEXT_INPUT)},
        ClientState.AWAIT_AGGREGATE: {AggregateRequest: (ClientState.DONE, Stage.AGGREGATE_APPROVAL)},
    },
    ProtocolKind.PAILLIER_THRESHOLD: {
        ClientState.AWAIT_START: {RoundStart: (ClientState.AWAIT_REVEAL, Stage.COMMITMENT)},
        ClientState.AWAIT_REVEAL: {RevealRequest: (ClientState.AWAIT_AGGREGATE, Stage.CIPHERTEXT_INPUT)},
        ClientState.AWAIT_AGGREGATE: {AggregateRequest: (ClientState.AWAIT_DECRYPTION, Stage.AGGREGATE_APPROVAL)},
        ClientState.AWAIT_DECRYPTION: {DecryptionRequest: (ClientState.DONE, Stage.PARTIAL_DECRYPTION)},
    },
}
CLIENT_TRANSITIONS = {**CLIENT_TRANSITIONS, ProtocolKind.SECAGG_PLUS: CLIENT_TRANSITIONS[ProtocolKind.SECAGG]}

# (protocol, stage) -> rule
SERVER_STAGES: Mapping[ProtocolKind, Mapping[Stage, StageRule]] = {
    ProtocolKind.SECAGG: {
        Stage.ADVERTISE_KEYS: StageRule(accepts=AdvertiseKeys, next_stage=Stage.SHARE_KEYS),
        Stage.SHARE_KEYS: StageRule(accepts=ShareKeys, next_stage=Stage.MASKED_INPUT),
        Stage.MASKED_INPUT: StageRule(accepts=MaskedInput, next_stage=Stage.UNMASKING),
        Stage.UNMASKING: StageRule(accepts=UnmaskingShares, next_stage=Stage.DONE),
    },
    ProtocolKind.PLAINTEXT: {
        Stage.PLAINTEXT_INPUT: StageRule(accepts=PlaintextInput, next_stage=Stage.DONE),
    },
    ProtocolKind.PAILLIER: {
        Stage.COMMITMENT: StageRule(accepts=CiphertextCommitment, next_stage=Stage.CIPHERTEXT_INPUT),
        Stage.CIPHERTEXT_INPUT: StageRule(accepts=EncryptedInput, next_stage=Stage.AGGREGATE_APPROVAL),
        Stage.AGGREGATE_APPROVAL: StageRule(accepts=AggregateApproval, next_stage=Stage.DECRYPTION),
        Stage.DECRYPTION: StageRule(accepts=DecryptedAggregate, next_stage=Stage.DONE),
    },
    ProtocolKind.PAILLIER_THRESHOLD: {
        Stage.COMMITMENT: StageRule(accepts=CiphertextCommitment, next_stage=Stage.CIPHERTEXT_INPUT),
        Stage.CIPHERTEXT_INPUT: StageRule(accepts=EncryptedInput, next_stage=Stage.AGGREGATE_APPROVAL),
        Stage.AGGREGATE_APPROVAL: StageRule(accepts=AggregateApproval, next_stage=Stage.PARTIAL_DECRYPTION),
        Stage.PARTIAL_DECRYPTION: StageRule(accepts=PartialDecryption, next_stage=Stage.DONE),
    },
}
SERVER_STAGES = {**SERVER_STAGES, ProtocolKind.SECAGG_PLUS: SERVER_STAGES[ProtocolKind.SECAGG]}

FIRST_STAGE: Mapping[ProtocolKind, Stage] = {
    ProtocolKind.SECAGG: Stage.ADVERTISE_KEYS,
    ProtocolKind.SECAGG_PLUS: Stage.ADVERTISE_KEYS,
    ProtocolKind.PLAINTEXT: Stage.PLAINTEXT_INPUT,
    ProtocolKind.PAILLIER: Stage.COMMITMENT,
    ProtocolKind.PAILLIER_THRESHOLD: Stage.COMMITMENT,
}

# The active-adversary variant of SecAgg and SecAgg+ (Bonawitz et al. 2017, §4, with consistency checks).
ACTIVE_CLIENT_TRANSITIONS: Mapping[ClientState, Mapping[type, tuple[ClientState, Stage]]] = {
    ClientState.AWAIT_START: {RoundStart: (ClientState.AWAIT_KEYS, Stage.ADVERTISE_KEYS)},
    ClientState.AWAIT_KEYS: {KeysBroadcast: (ClientState.AWAIT_SHARES, Stage.SHARE_KEYS)},
    ClientState.AWAIT_SHARES: {SharesDelivery: (ClientState.AWAIT_CONSISTENCY, Stage.MASKED_INPUT)},
    ClientState.AWAIT_CONSISTENCY: {ConsistencyRequest: (ClientState.AWAIT_UNMASK, Stage.CONSISTENCY_CHECK)},
    ClientState.AWAIT_UNMASK: {UnmaskRequest: (ClientState.DONE, Stage.UNMASKING)},
}
ACTIVE_SERVER_STAGES: Mapping[Stage, StageRule] = {
    Stage.ADVERTISE_KEYS: StageRule(accepts=AdvertiseKeys, next_stage=Stage.SHARE_KEYS),
    Stage.SHARE_KEYS: StageRule(accepts=ShareKeys, next_stage=Stage.MASKED_INPUT),
    Stage.MASKED_INPUT: StageRule(accepts=MaskedInput, next_stage=Stage.CONSISTENCY_CHECK),
    Stage.CONSISTENCY_CHECK: StageRule(accepts=ConsistencySignature, next_stage=Stage.UNMASKING),
    Stage.UNMASKING: StageRule(accepts=UnmaskingShares, next_stage=Stage.DONE),
}


def server_stages(protocol: ProtocolKind, *, active: bool = False) -> Mapping[Stage, StageRule]:
    """The server's stage table for ``protocol`` (the active-adversary table for SecAgg/SecAgg+ if ``active``)."""
    return ACTIVE_SERVER_STAGES if active else SERVER_STAGES[protocol]


def client_transitions(protocol: ProtocolKind, *,
                       active: bool = False) -> Mapping[ClientState, Mapping[type, tuple[ClientState, Stage]]]:
    """A client's transition table for ``protocol`` (the active-adversary one if ``active``)."""
    return ACTIVE_CLIENT_TRANSITIONS if active else CLIENT_TRANSITIONS[protocol]
