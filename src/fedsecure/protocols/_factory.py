"""Build the sessions of whichever protocol a :class:`RoundConfig` names."""

from __future__ import annotations

from .._errors import LocalProtocolError
from ..crypto import SigningKey
from ..encoding import EncodedUpdate
from ._config import ProtocolKind, RoundConfig
from ._paillier import PaillierClientSession, PaillierCredentials, PaillierServerSession
from ._plaintext import PlaintextClientSession, PlaintextServerSession
from ._secagg import SecAggClientSession, SecAggServerSession
from ._session import ClientSession, ServerSession

__all__ = ["create_client_session", "create_server_session"]

_CLIENTS: dict[ProtocolKind, type[ClientSession]] = {
    ProtocolKind.PLAINTEXT: PlaintextClientSession,
    ProtocolKind.SECAGG: SecAggClientSession,
    ProtocolKind.SECAGG_PLUS: SecAggClientSession,
}
_PAILLIER = (ProtocolKind.PAILLIER, ProtocolKind.PAILLIER_THRESHOLD)
_SERVERS: dict[ProtocolKind, type[ServerSession]] = {
    ProtocolKind.PLAINTEXT: PlaintextServerSession,
    ProtocolKind.SECAGG: SecAggServerSession,
    ProtocolKind.SECAGG_PLUS: SecAggServerSession,
    ProtocolKind.PAILLIER: PaillierServerSession,
    ProtocolKind.PAILLIER_THRESHOLD: PaillierServerSession,
}


def create_client_session(config: RoundConfig, client_id: int, update: EncodedUpdate,
                          credentials: PaillierCredentials | SigningKey | None = None) -> ClientSession:
    """The client session of ``config.protocol`` for one client and its encoded update.

    Paillier clients also need their long-lived ``credentials`` (signing key, and key share if any);
    clients of SecAgg's active-adversary variant their long-term identity :class:`~fedsecure.crypto.SigningKey`.
    """
    if config.protocol in _PAILLIER:
        if credentials is not None and not isinstance(credentials, PaillierCredentials):
            raise LocalProtocolError("Paillier clients take PaillierCredentials")
        return PaillierClientSession(config, client_id, update, credentials)
    if config.active:
        if not isinstance(credentials, SigningKey):
            raise LocalProtocolError("the active-adversary variant needs the client's identity SigningKey")
        return SecAggClientSession(config, client_id, update, credentials)
    return _CLIENTS[config.protocol](config, client_id, update)


def create_server_session(config: RoundConfig) -> ServerSession:
    """The server session of ``config.protocol``."""
    return _SERVERS[config.protocol](config)
