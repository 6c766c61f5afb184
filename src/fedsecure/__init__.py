"""fedsecure: secure aggregation and privacy for federated learning.

The recipes most users need are re-exported here; the layers live in
:mod:`fedsecure.crypto` (primitives), :mod:`fedsecure.encoding`,
:mod:`fedsecure.protocols` and :mod:`fedsecure.runtime`.
"""

from ._errors import (
    ConfigurationError,
    CryptoError,
    DecodeError,
    FedSecureError,
    InvalidUpdateError,
    LocalProtocolError,
    PeerFault,
    PeerProtocolError,
    ProtocolError,
    RoundAborted,
)
from .encoding import ClipMode, EncodingConfig, Quantizer, VectorSpec
from .protocols import ProtocolKind, RoundConfig, ThreatModel

__version__ = "0.1.0"

__all__ = [
    "ClipMode",
    "ConfigurationError",
    "CryptoError",
    "DecodeError",
    "EncodingConfig",
    "FedSecureError",
    "InvalidUpdateError",
    "LocalProtocolError",
    "PeerFault",
    "PeerProtocolError",
    "ProtocolError",
    "ProtocolKind",
    "Quantizer",
    "RoundAborted",
    "RoundConfig",
    "ThreatModel",
    "VectorSpec",
    "__version__",
]
