"""Aggregation protocols as sans-IO state machines: SecAgg, SecAgg+, Paillier (two trust arrangements) and the plaintext baseline."""

from ._codec import WIRE_VERSION, decode_message, encode_message
from ._config import PaillierKeys, PaillierParameters, ProtocolKind, RoundConfig
from ._factory import create_client_session, create_server_session
from ._messages import (
    DECRYPTOR,
    AdvertiseKeys,
    DecryptedAggregate,
    DecryptionRequest,
    EncryptedInput,
    PartialDecryption,
    EncryptedShare,
    KeysBroadcast,
    MaskedInput,
    PlaintextInput,
    PublicKeys,
    RoundStart,
    ShareKeys,
    SharesDelivery,
    ShareValue,
    UnmaskingShares,
    UnmaskRequest,
)
from ._parameters import GraphParameters, ThreatModel, choose_parameters, complete_graph_parameters
from ._secagg import SecAggClientSession, SecAggServerSession
from ._paillier import (
    PaillierClientSession,
    PaillierCredentials,
    PaillierDeployment,
    PaillierKeyHolder,
    PaillierServerSession,
    contribution_payload,
)
from ._plaintext import PlaintextClientSession, PlaintextServerSession
from ._session import SERVER, AggregationResult, ClientSession, DropRecord, ServerSession
from ._stages import CLIENT_TRANSITIONS, SERVER_STAGES, ClientState, Stage

__all__ = [
    "DECRYPTOR",
    "DecryptedAggregate",
    "DecryptionRequest",
    "EncryptedInput",
    "PaillierClientSession",
    "PaillierCredentials",
    "PaillierDeployment",
    "PaillierKeyHolder",
    "PaillierKeys",
    "PaillierParameters",
    "PaillierServerSession",
    "PartialDecryption",
    "contribution_payload",
    "AdvertiseKeys",
    "AggregationResult",
    "CLIENT_TRANSITIONS",
    "ClientSession",
    "ClientState",
    "DropRecord",
    "EncryptedShare",
    "GraphParameters",
    "KeysBroadcast",
    "MaskedInput",
    "PlaintextClientSession",
    "PlaintextInput",
    "PlaintextServerSession",
    "ProtocolKind",
    "PublicKeys",
    "RoundConfig",
    "RoundStart",
    "SERVER",
    "SERVER_STAGES",
    "SecAggClientSession",
    "SecAggServerSession",
    "ServerSession",
    "ShareKeys",
    "ShareValue",
    "SharesDelivery",
    "Stage",
    "ThreatModel",
    "UnmaskRequest",
    "UnmaskingShares",
    "WIRE_VERSION",
    "choose_parameters",
    "complete_graph_parameters",
    "create_client_session",
    "create_server_session",
    "decode_message",
    "encode_message",
]
