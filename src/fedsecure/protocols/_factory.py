"""Build the sessions of whichever protocol a :class:`RoundConfig` names."""

from __future__ import annotations

from ..encoding import EncodedUpdate
from ._config import ProtocolKind, RoundConfig
from ._plaintext import PlaintextClientSession, PlaintextServerSession
from ._secagg import SecAggClientSession, SecAggServerSession
from ._session import ClientSession, ServerSession

__all__ = ["create_client_session", "create_server_session"]

_CLIENTS: dict[ProtocolKind, type[ClientSession]] = {
    ProtocolKind.PLAINTEXT: PlaintextClientSession,
    ProtocolKind.SECAGG: SecAggClientSession,
    ProtocolKind.SECAGG_PLUS: SecAggClientSession,
}
_SERVERS: dict[ProtocolKind, type[ServerSession]] = {
    ProtocolKind.PLAINTEXT: PlaintextServerSession,
    ProtocolKind.SECAGG: SecAggServerSession,
    ProtocolKind.SECAGG_PLUS: SecAggServerSession,
}


def create_client_session(config: RoundConfig, client_id: int, update: EncodedUpdate) -> ClientSession:
    """The client session of ``config.protocol`` for one client and its encoded update."""
    return _CLIENTS[config.protocol](config, client_id, update)


def create_server_session(config: RoundConfig) -> ServerSession:
    """The server session of ``config.protocol``."""
    return _SERVERS[config.protocol](config)
