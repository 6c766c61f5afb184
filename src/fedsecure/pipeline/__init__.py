"""One aggregation pipeline, whoever drives the round (``Federation``, the built-in Flower jobs, the drop-in).

* client side: :func:`update_between` (local minus global, flattened) and :func:`encode_update` (clip, quantise
  or add distributed DP's noise share), before a protocol session masks or encrypts;
* server side: :class:`ServerPipeline`, from a ring sum to the next global vector, through one DP level
  (:class:`NoPrivacy`, :class:`LocalDP`, :class:`CentralDP`, :class:`DistributedDP`, made by
  :func:`round_privacy`) and a :class:`ServerOptimizer`.
"""

from ._client import encode_update, update_between
from ._optimizers import ServerOptimizer, ServerOptimizerKind
from ._privacy import (
    CentralDP,
    DistributedDP,
    LocalDP,
    NoPrivacy,
    Release,
    RoundEncoding,
    RoundPrivacy,
    dp_config_for,
    round_privacy,
)
from ._server import RoundRecord, RoundStep, ServerPipeline

__all__ = [
    "CentralDP",
    "DistributedDP",
    "LocalDP",
    "NoPrivacy",
    "Release",
    "RoundEncoding",
    "RoundPrivacy",
    "RoundRecord",
    "RoundStep",
    "ServerOptimizer",
    "ServerOptimizerKind",
    "ServerPipeline",
    "dp_config_for",
    "encode_update",
    "round_privacy",
    "update_between",
]
