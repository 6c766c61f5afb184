"""Build the sessions of whichever protocol a :class:`RoundConfig` names."""

from __future__ import annotations

from .._errors import LocalProtocolError
from ..encoding import EncodedUpdate
from ._config import ClientIdentity, ProtocolKind, RoundConfig
from ._paillier import PaillierClientSession, PaillierCredentials, PaillierServerSession
from ._plaintext import PlaintextClientSession, PlaintextServerSession
from ._secagg import SecAggClientSession, SecAggServerSession
from ._session import ClientSession, ServerSession

__all__ = ["create_client_session", "create_server_session", "restore_client_session"]

_CLIENTS: dict[ProtocolKind, type[ClientSession]] = {
    ProtocolKind.PLAINTEXT: PlaintextClientSession,
    ProtocolKind.SECAGG: SecAggClientSession,
    ProtocolKind.SECAGG_PLUS: SecAggClientSession,
}
_PAILLIER = (ProtocolKind.PAILLIER, ProtocolKind.PAILLIER_THRESHOLD)
_SECAGG = (ProtocolKind.SECAGG, ProtocolKind.SECAGG_PLUS)
_SERVERS: dict[ProtocolKind, type[ServerSession]] = {
    ProtocolKind.PLAINTEXT: PlaintextServerSession,
    ProtocolKind.SECAGG: SecAggServerSession,
    ProtocolKind.SECAGG_PLUS: SecAggServerSession,
    ProtocolKind.PAILLIER: PaillierServerSession,
    ProtocolKind.PAILLIER_THRESHOLD: PaillierServerSession,
}


def create_client_session(config: RoundConfig, client_id: int, update: EncodedUpdate,
                          credentials: PaillierCredentials | ClientIdentity | None = None) -> ClientSession:
    """The client session of ``config.protocol`` for one client and its encoded update.

    Paillier clients also need their long-lived ``credentials`` (signing key, and key share if any);
    clients of SecAgg's active-adversary variant their :class:`ClientIdentity`. A client given an identity
    refuses a configuration that is not the active variant (a downgrade).
    """
    if config.protocol in _PAILLIER:
        if credentials is not None and not isinstance(credentials, PaillierCredentials):
            raise LocalProtocolError("Paillier clients take PaillierCredentials")
        return PaillierClientSession(config, client_id, update, credentials)
    if isinstance(credentials, ClientIdentity) or config.active:
        if not isinstance(credentials, ClientIdentity) or config.protocol not in _SECAGG:
            raise LocalProtocolError("the active-adversary variant is SecAgg's and needs the client's ClientIdentity")
        return SecAggClientSession(config, client_id, update, credentials)
    if credentials is not None:
        raise LocalProtocolError(f"{config.protocol.value} clients take no credentials")
    return _CLIENTS[config.protocol](config, client_id, update)


def create_server_session(config: RoundConfig) -> ServerSession:
    """The server session of ``config.protocol``."""
    return _SERVERS[config.protocol](config)


def restore_client_session(config: RoundConfig, state: bytes,
                           credentials: PaillierCredentials | ClientIdentity | None = None) -> ClientSession:
    """The client session whose :meth:`~ClientSession.export_state` gave ``state``, for ``config``.

    ``credentials`` are the same long-lived ones the session was created with.
    A state saved for another configuration or protocol is refused.
    """
    session_class = PaillierClientSession if config.protocol in _PAILLIER else _CLIENTS[config.protocol]
    return session_class.restore_state(config, state, credentials)
