"""The plaintext baseline: clients send their encoded updates in the clear.

It offers no protection at all. It exists so that benchmarks and tests compare
the secure protocols against the cheapest possible aggregation over the same
interface, encoding and transport.
"""

from __future__ import annotations

import numpy as np

from .._errors import PeerFault, PeerProtocolError
from ._messages import ClientMessage, Message, PlaintextInput, ServerMessage
from ._session import ClientSession, ServerSession

__all__ = ["PlaintextClientSession", "PlaintextServerSession"]


class PlaintextClientSession(ClientSession):
    """Sends the encoded update unprotected. Threat model: the server sees every input."""

    def _handle(self, message: Message) -> list[ClientMessage]:
        return [PlaintextInput(round_id=self._config.round_id, sender=self._client_id, vector=self._encoded_values())]


class PlaintextServerSession(ServerSession):
    """Sums plaintext inputs as they arrive."""

    def __init__(self, config: object) -> None:
        super().__init__(config)  # type: ignore[arg-type]
        self._sum = np.zeros(self._config.vector_length, dtype=self._config.ring.dtype)
        self._in_sum: set[int] = set()

    def _handle(self, message: ClientMessage) -> None:
        ring = self._config.ring
        if not isinstance(message, PlaintextInput):  # pragma: no cover - the stage table prevents this
            raise PeerProtocolError(PeerFault.OUT_OF_STAGE, peer=getattr(message, "sender", None))
        vector = message.vector
        if vector.shape != (self._config.vector_length,) or vector.dtype != ring.dtype:
            raise PeerProtocolError(PeerFault.WRONG_SIZE, peer=message.sender)
        if not ring.contains(vector):
            raise PeerProtocolError(PeerFault.MALFORMED, peer=message.sender, detail="values outside the ring")
        np.add(self._sum, vector, out=self._sum)
        self._in_sum.add(message.sender)

    def _close(self, responders: frozenset[int]) -> list[ServerMessage]:
        self._require(len(self._in_sum), self._config.threshold, "no client sent an input")
        self._config.ring.reduce(self._sum)
        self._finish(self._sum, frozenset(self._in_sum))
        return []
