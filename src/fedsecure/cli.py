"""The ``fedsecure`` command."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from ._errors import FedSecureError
from .protocols import ProtocolKind, ThreatModel

__all__ = ["main"]

_PROTOCOLS = {kind.value: kind for kind in ProtocolKind}


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a fraction in [0, 1], got {text}")
    return value


class _Progress:
    """A one-line progress display on stderr, shown only when stderr is a terminal."""

    def __init__(self, enabled: bool) -> None:
        self._enabled = enabled
        self._shown = False

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self._enabled:
            sys.stderr.write(f"\r  {stage:<14} {done:>6}/{total:<6}")
            sys.stderr.flush()
            self._shown = True

    def finish(self) -> None:
        if self._shown:
            sys.stderr.write("\r" + " " * 40 + "\r")
            sys.stderr.flush()


def _format_summary(summary: dict[str, Any]) -> str:
    lines = [
        f"protocol          {summary['protocol']}  (neighbourhood {summary['degree']}, threshold "
        f"{summary['threshold']}, {summary['ring_bits']}-bit ring)",
        f"clients           {summary['clients']}  survivors {summary['survivors']}",
        f"vector length     {summary['dim']}",
    ]
    if summary["aborted"]:
        lines.append(f"ABORTED           {summary['abort_reason']}")
    else:
        verdict = "yes" if summary["correct"] else "NO"
        lines += [
            f"exact sum         {verdict}  (secure ring sum == plaintext ring sum of the survivors)",
            f"max abs error     {summary['max_abs_error']:.3g}  (decoded float sum vs float sum)",
        ]
    lines += [
        f"bytes up/client   {summary['bytes_up_per_client']:.0f}  ({summary['bytes_per_param']:.3f} per parameter)",
        f"bytes down/client {summary['bytes_down_per_client']:.0f}",
        f"client seconds    {summary['client_seconds']:.4f}  (median, all stages)",
        f"server seconds    {summary['server_seconds']:.4f}",
    ]
    return "\n".join(lines)


def _simulate(args: argparse.Namespace) -> int:
    from .runtime import simulate

    threat = ThreatModel(dropout_fraction=args.tolerate_dropout, corrupt_fraction=args.tolerate_corrupt)
    progress = _Progress(sys.stderr.isatty() and not args.quiet)
    try:
        report = simulate(protocol=_PROTOCOLS[args.protocol], clients=args.clients, dimension=args.dim,
                          dropout=args.dropout, seed=args.seed, threat=threat, ring_bits=args.ring_bits,
                          progress=progress)
    finally:
        progress.finish()
    summary = report.to_json()
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    else:
        print(_format_summary(summary))
    if summary["aborted"]:
        return 3
    return 0 if summary["correct"] else 1


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedsecure", description="Secure aggregation for federated learning.")
    commands = parser.add_subparsers(dest="command", required=True)
    sim = commands.add_parser(
        "simulate",
        help="run one secure-aggregation round in process and check it against the plaintext sum",
        description="Run one round over simulated clients. Exit status: 0 exact sum, 1 wrong sum, "
        "2 invalid configuration, 3 round aborted.",
    )
    sim.add_argument("--protocol", choices=sorted(_PROTOCOLS), default="secagg+")
    sim.add_argument("--clients", type=_count, default=100, help="cohort size (default 100)")
    sim.add_argument("--dim", type=_count, default=10_000, help="update length (default 10000)")
    sim.add_argument("--dropout", type=_fraction, default=0.1,
                     help="fraction of clients that go silent, each from a random stage (default 0.1)")
    sim.add_argument("--tolerate-dropout", type=_fraction, default=0.1,
                     help="dropout fraction the threshold and graph are chosen for (default 0.1)")
    sim.add_argument("--tolerate-corrupt", type=_fraction, default=0.2,
                     help="fraction of clients that may collude with the server (default 0.2)")
    sim.add_argument("--ring-bits", type=int, default=32, help="ring size in bits (default 32)")
    sim.add_argument("--seed", type=int, default=0,
                     help="seed for the simulated data and dropout schedule only; keys always come from the OS")
    sim.add_argument("--json", action="store_true", help="print one JSON object")
    sim.add_argument("--quiet", action="store_true", help="no progress display")
    sim.set_defaults(handler=_simulate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedsecure`` console script."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except FedSecureError as error:
        if getattr(args, "json", False):
            print(json.dumps({"error": type(error).__name__, "message": str(error)}))
        else:
            print(f"fedsecure: {type(error).__name__}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
