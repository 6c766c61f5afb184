"""The exception hierarchy.

Every exception fedsecure raises on purpose derives from :class:`FedSecureError`.
Protocol errors split, as in h11, into "we broke the protocol"
(:class:`LocalProtocolError`) and "a peer broke it" (:class:`PeerProtocolError`,
which names the peer and carries a :class:`PeerFault`).
"""

from __future__ import annotations

import enum

__all__ = [
    "FedSecureError",
    "ConfigurationError",
    "InvalidUpdateError",
    "ProtocolError",
    "LocalProtocolError",
    "PeerProtocolError",
    "DecodeError",
    "PeerFault",
    "RoundAborted",
    "CryptoError",
]


class FedSecureError(Exception):
    """Base class of every error fedsecure raises on purpose."""


class ConfigurationError(FedSecureError, ValueError):
    """A configuration that cannot be used safely or correctly.

    ``parameter`` names the setting the caller should change.
    """

    def __init__(self, message: str, *, parameter: str) -> None:
        super().__init__(message)
        self.parameter = parameter


class InvalidUpdateError(FedSecureError, ValueError):
    """A client update refused before it is masked (NaN, Inf, wrong shape or dtype)."""


class CryptoError(FedSecureError):
    """A cryptographic operation failed.

    All decryption and verification failures raise this same error with the same
    message, so that a caller cannot tell a wrong key from a forged tag.
    """


class ProtocolError(FedSecureError):
    """Base class of protocol violations."""


class LocalProtocolError(ProtocolError):
    """Our own side used a session wrongly (for example, asked for a result too early)."""


class PeerFault(enum.Enum):
    """Why a peer's message was refused."""

    MALFORMED = "malformed message"
    OVERSIZED = "message larger than the configured limit"
    UNSUPPORTED_VERSION = "unsupported wire-format version"
    WRONG_ROUND = "message for another round (replayed or stale)"
    WRONG_SENDER = "sender field does not match the authenticated sender"
    NOT_IN_COHORT = "sender is not in this round's cohort"
    WRONG_RECIPIENT = "message addressed to someone else"
    OUT_OF_STAGE = "message not allowed in the current stage"
    DUPLICATE = "duplicate message in this stage"
    WRONG_SIZE = "vector or list of the wrong length"
    BAD_PUBLIC_KEY = "invalid or reused public key"
    BAD_SHARE = "share list inconsistent with the round"
    BAD_ENVELOPE = "encrypted share failed to decrypt or authenticate"
    BAD_SURVIVOR_SET = "survivor set invalid or below the threshold"
    CONFIG_MISMATCH = "round configuration digest does not match"
    REFUSED_BY_POLICY = "round parameters refused by this client's policy"
    BAD_SIGNATURE = "signature does not verify"
    BAD_CIPHERTEXT = "ciphertext malformed or not a unit of Z_(n^2)"
    BAD_AGGREGATE = "aggregate does not match the signed contributions"
    TOO_FEW_CONTRIBUTORS = "fewer distinct contributors than the configured minimum"
    ALREADY_DECRYPTED = "a second decryption for a round already decrypted"
    BAD_PROOF = "zero-knowledge proof or verifiable decryption does not verify"
    TOO_FEW_APPROVALS = "fewer approvals of the aggregate than the quorum"


class PeerProtocolError(ProtocolError):
    """A peer sent something the protocol does not allow.

    ``peer`` is the peer's client id (``None`` when the bytes were too broken to
    name one and the transport did not know either); ``fault`` says what was wrong.
    """

    def __init__(self, fault: PeerFault, *, peer: int | None, detail: str = "") -> None:
        who = "unknown sender" if peer is None else f"peer {peer}"
        text = f"{who}: {fault.value}"
        if detail:
            text += f" ({detail})"
        super().__init__(text)
        self.peer = peer
        self.fault = fault
        self.detail = detail


class DecodeError(PeerProtocolError):
    """Bytes that are not a valid message. The only error the wire decoder raises."""


class RoundAborted(FedSecureError):
    """A round that cannot complete; nothing the caller owns was modified.

    ``stage`` is the stage that could not be completed, ``have`` how many clients
    were usable there and ``need`` how many the threshold requires.
    """

    def __init__(self, reason: str, *, stage: str, have: int, need: int) -> None:
        super().__init__(f"round aborted at stage {stage!r}: {reason} ({have} available, {need} needed)")
        self.reason = reason
        self.stage = stage
        self.have = have
        self.need = need
