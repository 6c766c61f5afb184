"""The client side of every round, whoever drives it: update -> flatten -> clip -> encode, ready for a session.

``Federation`` runs it for each simulated client, the Flower ClientApp and the drop-in's mod on each node; the
protocol session (:func:`fedsecure.protocols.create_client_session`) then masks or encrypts what it returns.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .._errors import InvalidUpdateError
from ..dp import DistributedDPEncoding
from ..encoding import EncodedUpdate, Quantizer, VectorSpec
from ._privacy import RoundEncoding

__all__ = ["update_between", "encode_update"]

LOGGER = logging.getLogger("fedsecure.pipeline")


def update_between(before: Sequence[Any] | Mapping[str, Any], after: Sequence[Any] | Mapping[str, Any]
                   ) -> np.ndarray:
    """The model update as one float64 vector: ``after`` minus ``before``, flattened in ``before``'s layout.

    Raises :class:`InvalidUpdateError` when ``after`` holds other tensors or shapes than ``before``: training
    must return the layout it was given.
    """
    spec = VectorSpec.from_parameters(before)
    update: np.ndarray = spec.flatten(after) - spec.flatten(before)
    return update


def encode_update(encoding: RoundEncoding, update: np.ndarray, weight: int | None = None, *,
                  client: int | None = None) -> EncodedUpdate:
    """The client side of every round: clip, quantise (with the weight inside the vector when the encoding has
    room for one) or add distributed DP's noise share, into the ring.

    Raises :class:`InvalidUpdateError` for a NaN, infinite or wrongly sized update, before anything is masked.
    Under distributed DP an unusable update is sent as zero instead, with the client's full noise share: whether a
    client adds noise must not depend on its data, since the number of shares sets the noise in the sum.
    """
    if isinstance(encoding, DistributedDPEncoding):
        try:
            return encoding.encode(update)
        except InvalidUpdateError as error:
            LOGGER.warning("client %s sends a zero update with its noise share: %s", client, error)
            return encoding.encode(np.zeros(encoding.dimension))
    return Quantizer(encoding).encode(update, weight=weight if encoding.max_weight else None)


