"""Aggregation protocols as sans-IO state machines: SecAgg, SecAgg+ and the plaintext baseline."""

from ._codec import WIRE_VERSION, decode_message, encode_message
from ._config import ProtocolKind, RoundConfig
from ._factory import create_client_session, create_server_session
from ._messages import (
    AdvertiseKeys,
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
from ._plaintext import PlaintextClientSession, PlaintextServerSession
from ._session import SERVER, AggregationResult, ClientSession, DropRecord, ServerSession
from ._stages import CLIENT_TRANSITIONS, SERVER_STAGES, ClientState, Stage

__all__ = [
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
