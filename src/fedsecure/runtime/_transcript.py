"""Transcripts for auditors: a versioned JSON-lines record of every message of a round, public fields only.

Each round is three kinds of line. A ``round`` line carries the public
configuration: cohort, graph, threshold, ring, and the encoding's bound on one
client's coordinates, with the threat model the parameters were chosen for.
One ``message`` line per message on the wire gives its stage, sender,
receiver, type, size and public fields (see
:func:`~fedsecure.protocols.public_view`: keys, digests, signatures and ids
in full, envelopes and vectors as length and SHA-256, share values never). An
``outcome`` line says whether the round completed and who was in the sum.
Several rounds may follow one another in one file.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .._errors import ConfigurationError
from ..encoding import EncodingConfig
from ..protocols import ProtocolKind, ThreatModel
from ..protocols._config import RoundEncoding
from ._simulator import RoundReport

__all__ = ["TRANSCRIPT_FORMAT", "TRANSCRIPT_VERSION", "transcript_lines", "write_transcript"]

TRANSCRIPT_FORMAT = "fedsecure-transcript"
TRANSCRIPT_VERSION = 1


def transcript_lines(report: RoundReport, *, encoding: RoundEncoding, threat: ThreatModel | None,
                     dp: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """The transcript of one simulated round as JSON-ready objects, header first, outcome last.

    ``report`` must come from a :class:`~fedsecure.runtime.Simulator` run with
    ``record_fields=True``; ``threat`` is what the round's parameters were chosen for.
    ``dp`` is the round's privacy record when the round ran under differential
    privacy (level, mechanism, noise, the ledger's epsilon after it, the target).
    """
    config = report.config
    if report.transcript and report.transcript[0].fields is None:
        raise ValueError("this round was simulated without record_fields=True: its transcript has no fields")
    header: dict[str, Any] = {
        "kind": "round", "format": TRANSCRIPT_FORMAT, "version": TRANSCRIPT_VERSION,
        "round_id": config.round_id, "protocol": config.protocol.value, "clients": list(config.clients),
        "vector_length": config.vector_length, "ring_bits": config.ring_bits, "threshold": config.threshold,
        "degree": config.degree, "active": config.active, "graph_seed": config.graph_seed.hex(), "config_digest": config.digest.hex(),
        "encoding_digest": config.encoding_digest.hex(), "encoding_clients": encoding.clients,
        "max_coordinate": _max_coordinate(encoding), "dp": dp,
        # Distributed DP's rotation seed is public; with it an auditor recomputes the encoding digest from the plan.
        "rotation_seed": rotation.hex() if isinstance(rotation := getattr(encoding, "rotation_seed", None), bytes)
        else None,
        # A quantised encoding's public parameters, from which an auditor recomputes the encoding digest.
        "encoding": _quantized_parameters(encoding),
        "threat": dataclasses.asdict(threat) if threat is not None else None,
    }
    if config.protocol in (ProtocolKind.SECAGG, ProtocolKind.SECAGG_PLUS):
        header["neighbours"] = {str(c): sorted(config.neighbours(c)) for c in config.clients}
    yield header
    for seq, record in enumerate(report.transcript):
        yield {"kind": "message", "round_id": config.round_id, "seq": seq, "stage": record.stage,
               "sender": record.sender, "receiver": record.receiver, "type": record.message_type,
               "size": record.size, "fields": dict(record.fields) if record.fields is not None else None}
    result = report.result
    yield {"kind": "outcome", "round_id": config.round_id, "aborted": report.aborted,
           "abort_reason": str(report.abort) if report.abort is not None else None,
           "survivors": sorted(result.survivors) if result is not None else [],
           "dropped": {str(c): record.stage.label for c, record in sorted(result.dropped.items())}
           if result is not None else {}}


def _quantized_parameters(encoding: RoundEncoding) -> dict[str, Any] | None:
    if not isinstance(encoding, EncodingConfig):
        return None
    return {"dimension": encoding.dimension, "clients": encoding.clients, "clip": encoding.clip,
            "scale": encoding.scale, "clip_mode": encoding.clip_mode.value, "max_weight": encoding.max_weight,
            "ring_bits": encoding.ring.bits}


def _max_coordinate(encoding: RoundEncoding) -> int | None:
    # Distributed DP's noised coordinates have no hard bound; its wrap probability is in the DP record instead.
    try:
        return encoding.max_coordinate
    except ConfigurationError:
        return None


def write_transcript(path: str | os.PathLike[str], rounds: Iterable[Iterable[dict[str, Any]]], *,
                     append: bool = False) -> None:
    """Write (or append) rounds of :func:`transcript_lines` to ``path``, one JSON object per line."""
    with open(Path(path), "a" if append else "w", encoding="utf-8") as handle:
        for lines in rounds:
            for line in lines:
                handle.write(json.dumps(line, separators=(",", ":"), allow_nan=False) + "\n")
