"""Checks an auditor runs on a transcript: what the server could have learnt, with the messages as evidence.

Each check reads only the transcript's public fields. A failed check names the
messages (round and sequence number) that show the violation, so a reviewer can
find them in the file.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._errors import ConfigurationError, FedSecureError
from ..protocols import ThreatModel, graph_security_failure
from ..runtime import TRANSCRIPT_FORMAT, TRANSCRIPT_VERSION

__all__ = ["CHECKS", "CheckResult", "RoundTranscript", "TranscriptError", "parse_transcript", "read_transcript",
           "run_checks"]

_SECAGG_FAMILY = ("secagg", "secagg+")
#: The largest probability of a wrapped sum the auditor accepts from a distributed-DP plan.
MAX_WRAP_PROBABILITY = 1e-3


class TranscriptError(FedSecureError, ValueError):
    """A transcript file that is not a well-formed fedsecure transcript; the message names the line."""


@dataclass
class RoundTranscript:
    """One round of a transcript: its header, its messages in order, and its outcome."""

    header: dict[str, Any]
    messages: list[dict[str, Any]] = field(default_factory=list)
    outcome: dict[str, Any] | None = None

    @property
    def round_id(self) -> int:
        return int(self.header["round_id"])

    def of_type(self, name: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == name]


@dataclass(frozen=True)
class CheckResult:
    """A check's verdict. ``evidence`` lists the messages behind it as ``round R #SEQ``."""

    name: str
    passed: bool
    applicable: bool
    detail: str
    evidence: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "applicable": self.applicable, "detail": self.detail,
                "evidence": list(self.evidence)}


_HEADER_FIELDS = {"round_id": int, "protocol": str, "clients": list, "vector_length": int, "ring_bits": int,
                  "threshold": int, "degree": int, "encoding_clients": int}
_MESSAGE_FIELDS = {"round_id": int, "seq": int, "stage": str, "type": str, "size": int}


# The ranges a real round's integers lie in: a doctored size (a ring of 10^9 bits, a degree of 2^60) would
# otherwise make a check compute for hours.
_RANGES = {"round_id": (0, 2**64 - 1), "vector_length": (0, 2**40), "ring_bits": (1, 64), "threshold": (0, 2**20),
           "degree": (0, 2**20), "encoding_clients": (0, 2**32), "seq": (0, 2**40), "size": (0, 2**40)}


def _require(obj: dict[str, Any], fields: dict[str, type], where: str) -> None:
    for name, kind in fields.items():
        if not isinstance(obj.get(name), kind) or isinstance(obj.get(name), bool):
            raise TranscriptError(f"{where}: field {name!r} is missing or not a {kind.__name__}")
        if name in _RANGES and not _RANGES[name][0] <= obj[name] <= _RANGES[name][1]:
            raise TranscriptError(f"{where}: field {name!r} = {obj[name]} lies outside {list(_RANGES[name])}")


def read_transcript(path: str | Path, *, max_bytes: int = 1 << 31) -> list[RoundTranscript]:
    """Parse and validate a transcript file; raises :class:`TranscriptError` naming the offending line."""
    path = Path(path)
    if path.stat().st_size > max_bytes:
        raise TranscriptError(f"{path} is larger than {max_bytes} bytes")
    with open(path, "rb") as handle:
        return parse_transcript(handle, source=str(path))


def parse_transcript(lines: Iterable[bytes], *, source: str = "<transcript>") -> list[RoundTranscript]:
    """Parse transcript lines (bytes, as read from a file); raises :class:`TranscriptError` naming the line."""
    rounds: list[RoundTranscript] = []
    for number, raw in enumerate(lines, 1):
        where = f"{source}:{number}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise TranscriptError(f"{where}: not UTF-8 text (a binary file?)") from None
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as error:
            raise TranscriptError(f"{where}: not JSON ({error.msg})") from None
        except ValueError as error:  # an integer beyond Python's digit limit, say
            raise TranscriptError(f"{where}: not acceptable JSON ({str(error)[:100]})") from None
        except RecursionError:
            raise TranscriptError(f"{where}: JSON nested too deeply") from None
        if not isinstance(obj, dict):
            raise TranscriptError(f"{where}: a line must be a JSON object")
        kind = obj.get("kind")
        if kind == "round":
            if obj.get("format") != TRANSCRIPT_FORMAT or obj.get("version") != TRANSCRIPT_VERSION:
                raise TranscriptError(f"{where}: not a {TRANSCRIPT_FORMAT} version {TRANSCRIPT_VERSION} header")
            _require(obj, _HEADER_FIELDS, where)
            if rounds and rounds[-1].outcome is None:
                raise TranscriptError(f"{where}: a new round starts before round {rounds[-1].round_id} ended")
            rounds.append(RoundTranscript(header=obj))
        elif kind in ("message", "outcome"):
            if not rounds or rounds[-1].outcome is not None:
                raise TranscriptError(f"{where}: a {kind} line outside a round")
            current = rounds[-1]
            if obj.get("round_id") != current.round_id:
                raise TranscriptError(f"{where}: round id {obj.get('round_id')!r} inside round {current.round_id}")
            if kind == "message":
                _require(obj, _MESSAGE_FIELDS, where)
                if obj["seq"] != len(current.messages):
                    raise TranscriptError(f"{where}: message {obj['seq']} out of order (expected "
                                          f"{len(current.messages)})")
                if not isinstance(obj.get("fields"), dict):
                    raise TranscriptError(f"{where}: message without public fields")
                current.messages.append(obj)
            else:
                current.outcome = obj
        else:
            raise TranscriptError(f"{where}: unknown line kind {kind!r}")
    if not rounds:
        raise TranscriptError(f"{source}: no rounds")
    if rounds[-1].outcome is None:
        raise TranscriptError(f"{source}: round {rounds[-1].round_id} has no outcome line (truncated?)")
    return rounds


def _ref(round_: RoundTranscript, message: dict[str, Any]) -> str:
    return f"round {round_.round_id} #{message['seq']} ({message['type']} from {message['sender']})"


def _threat(round_: RoundTranscript) -> ThreatModel | None:
    threat = round_.header.get("threat")
    return ThreatModel(**threat) if isinstance(threat, dict) else None


def check_inputs_hidden(rounds: list[RoundTranscript]) -> CheckResult:
    """Every round hid the clients' inputs from the server: none ran the plaintext baseline, in which the server
    receives each client's update as it is."""
    evidence = [f"round {r.round_id}: the plaintext baseline; the server saw each of its {len(r.header['clients'])} "
                "clients' updates" for r in rounds if r.header["protocol"] == "plaintext"]
    return CheckResult("inputs-hidden", not evidence, bool(rounds),
                       "every round masked or encrypted the clients' inputs" if not evidence
                       else "the server saw every update of a plaintext round", tuple(evidence))


def check_no_double_reveal(rounds: list[RoundTranscript]) -> CheckResult:
    """No client's self-mask seed and pairwise key both reached threshold-many shares at the server.

    Bonawitz et al. 2017, §4 (Unmasking): with shares of both, the server removes
    every mask of a client whose masked input it holds, and reads that input.
    """
    applicable = [r for r in rounds if r.header["protocol"] in _SECAGG_FAMILY]
    evidence: list[str] = []
    for round_ in applicable:
        threshold = round_.header["threshold"]
        self_mask: dict[int, list[str]] = defaultdict(list)
        keys: dict[int, list[str]] = defaultdict(list)
        for message in round_.of_type("UnmaskingShares"):
            for share in message["fields"].get("self_mask_shares", []):
                self_mask[share["owner"]].append(_ref(round_, message))
            for share in message["fields"].get("key_shares", []):
                keys[share["owner"]].append(_ref(round_, message))
        for client in sorted(set(self_mask) & set(keys)):
            if len(self_mask[client]) >= threshold and len(keys[client]) >= threshold:
                evidence.append(f"client {client}: {len(self_mask[client])} self-mask and {len(keys[client])} key "
                                f"shares (threshold {threshold}): {'; '.join(self_mask[client] + keys[client])}")
    return CheckResult("no-double-reveal", not evidence, bool(applicable),
                       "the server never held threshold-many shares of both secrets of any client"
                       if not evidence else "the server could unmask these clients' inputs", tuple(evidence))


def check_graph_bound(rounds: list[RoundTranscript]) -> CheckResult:
    """The neighbourhood size and threshold meet the recorded threat model's security bound.

    The bound is :func:`~fedsecure.protocols.graph_security_failure` (Bell et al.
    2020, §3-§4): it must not exceed 2^-sigma. Every listed neighbourhood must also
    have the recorded size, or the bound does not describe the graph that ran.
    """
    applicable = [r for r in rounds if r.header["protocol"] in _SECAGG_FAMILY]
    evidence: list[str] = []
    for round_ in applicable:
        header = round_.header
        threat = _threat(round_)
        if threat is None:
            evidence.append(f"round {round_.round_id}: no threat model recorded, so no bound can be checked")
            continue
        n = len(header["clients"])
        failure = graph_security_failure(n, header["degree"], header["threshold"], threat,
                                         active=bool(header.get("active")))
        if failure > 2.0 ** -threat.security_bits:
            evidence.append(f"round {round_.round_id}: n={n}, k={header['degree']}, t={header['threshold']} gives "
                            f"a failure bound of {failure:.3g} > 2^-{threat.security_bits}")
        for client, peers in (header.get("neighbours") or {}).items():
            if len(peers) != min(header["degree"], n) - 1 or int(client) in peers:
                evidence.append(f"round {round_.round_id}: client {client} has {len(peers)} neighbours, not "
                                f"{min(header['degree'], n) - 1}")
    return CheckResult("graph-security-bound", not evidence, bool(applicable),
                       "every round's graph and threshold meet the bound of its threat model"
                       if not evidence else "a round's graph or threshold is weaker than its threat model allows",
                       tuple(evidence))


def check_fresh_keys(rounds: list[RoundTranscript]) -> CheckResult:
    """Every public key advertised in the transcript is new: no key repeats within a round or across rounds.

    Bonawitz et al. 2017, §4 (AdvertiseKeys) generate both key pairs per round;
    a reused key would let shares or masks from one round be replayed into another.
    """
    seen: dict[str, str] = {}
    evidence: list[str] = []
    applicable = False
    for round_ in rounds:
        for message in round_.of_type("AdvertiseKeys"):
            applicable = True
            for name in ("cipher_public_key", "mask_public_key"):
                key = str(message["fields"].get(name))
                if key in seen:
                    evidence.append(f"{name} of {_ref(round_, message)} was already advertised in {seen[key]}")
                else:
                    seen[key] = _ref(round_, message)
    return CheckResult("fresh-public-keys", not evidence, applicable,
                       "every advertised public key is fresh" if not evidence else "public keys were reused",
                       tuple(evidence))


def check_ring_headroom(rounds: list[RoundTranscript]) -> CheckResult:
    """The ring holds the sum of every client's largest coordinate without wrapping.

    n clients each within [-M, M] sum to within [-nM, nM], which must fit in the
    signed range of a 2^b ring: 2nM < 2^b. A wrap would silently corrupt the total.
    Under distributed DP the noise has no hard bound: the round's DP record must
    show a wrap probability within its target instead.
    """
    evidence: list[str] = []
    for round_ in rounds:
        header = round_.header
        n = len(header["clients"])
        bound = header.get("max_coordinate")
        if n > header["encoding_clients"]:
            evidence.append(f"round {round_.round_id}: {n} clients, but the encoding was sized for "
                            f"{header['encoding_clients']}")
            continue
        if bound is None:
            # Only distributed DP lacks a hard bound; its plan must keep the wrap probability within the target,
            # and the auditor accepts no target above MAX_WRAP_PROBABILITY.
            dp = header.get("dp") or {}
            wrap, target = dp.get("wrap_bound"), dp.get("wrap_probability")
            if dp.get("level") != "distributed" or not isinstance(wrap, (int, float)) \
                    or not isinstance(target, (int, float)) or wrap > min(target, MAX_WRAP_PROBABILITY):
                evidence.append(f"round {round_.round_id}: no coordinate bound, and no distributed-DP wrap "
                                f"probability within {MAX_WRAP_PROBABILITY:g} (wrap bound {wrap!r}, target {target!r})")
            continue
        if not isinstance(bound, int) or 2 * n * bound >= 2 ** header["ring_bits"]:
            evidence.append(f"round {round_.round_id}: {n} clients x max coordinate {bound} needs "
                            f"{math.log2(max(2 * n * int(bound), 1)):.1f} bits, ring has {header['ring_bits']}")
    return CheckResult("ring-headroom", not evidence, True,
                       "no sum can wrap the ring" if not evidence else "the sum can wrap the ring", tuple(evidence))


def check_share_binding(rounds: list[RoundTranscript]) -> CheckResult:
    """Every encrypted share went to the peer it was sealed for, once, in its own round, and none was withheld.

    The envelopes' associated data binds sender, recipient and round (Bonawitz et
    al. 2017, §4, ShareKeys), so a redirected envelope fails to open; this check
    shows whether the server tried, from the transcript alone.
    """
    applicable = [r for r in rounds if r.header["protocol"] in _SECAGG_FAMILY]
    evidence: list[str] = []
    for round_ in applicable:
        sealed: dict[tuple[int, int], tuple[str, str]] = {}
        for message in round_.of_type("ShareKeys"):
            sender = message["fields"]["sender"]
            for share in message["fields"]["shares"]:
                sealed[(sender, share["peer"])] = (json.dumps(share["envelope"], sort_keys=True), _ref(round_, message))
        delivered: dict[str, str] = {}
        for message in round_.of_type("SharesDelivery"):
            recipient = message["fields"]["recipient"]
            for share in message["fields"]["shares"]:
                envelope = json.dumps(share["envelope"], sort_keys=True)
                origin = sealed.get((share["peer"], recipient))
                where = f"round {round_.round_id} #{message['seq']} (SharesDelivery to {recipient})"
                if origin is None or origin[0] != envelope:
                    evidence.append(f"{where}: an envelope said to be from {share['peer']} that {share['peer']} never "
                                    f"sealed for {recipient} in this round")
                elif envelope in delivered:
                    evidence.append(f"{where}: an envelope already delivered in {delivered[envelope]}")
                else:
                    delivered[envelope] = where
        # Withholding: a sender's envelopes delivered to some recipients but not to others that received shares.
        # That gives clients different views of who shared keys (U2), the opening of the attack the active
        # variant's parameters bound (hide some of a victim's neighbours from it, then drop the rest from U3).
        # A sender the server dropped has none of its envelopes delivered, which is not flagged.
        receiving = {m["fields"]["recipient"] for m in round_.of_type("SharesDelivery")}
        delivered_by_sender: dict[Any, int] = defaultdict(int)
        for (sender, _), (sealed_envelope, _) in sealed.items():
            if sealed_envelope in delivered:
                delivered_by_sender[sender] += 1
        for (sender, recipient), (sealed_envelope, sealed_in) in sorted(sealed.items(), key=repr):
            if recipient in receiving and sealed_envelope not in delivered and delivered_by_sender[sender]:
                evidence.append(f"round {round_.round_id}: the envelope {sealed_in} sealed for {recipient} was "
                                f"withheld from it, while {delivered_by_sender[sender]} of {sender}'s others were "
                                "delivered")
    return CheckResult("share-binding", not evidence, bool(applicable),
                       "every share envelope reached its intended recipient, and only it"
                       if not evidence else "the server forwarded envelopes to the wrong party, twice, or withheld "
                       "some", tuple(evidence))


class _Reaccountant:
    """Composes the privacy loss of the rounds a transcript records, from their DP records alone."""

    _MECHANISMS = {"central": {"gaussian"}, "distributed": {"ddgauss", "skellam"},
                   "local": {"gaussian (DP-SGD, per client)"}}

    def __init__(self) -> None:
        self._rdp: Any = None
        self._server_rdp: Any = None
        self._server_orders: tuple[float, ...] = ()
        self._orders: tuple[float, ...] = ()
        self._level: str | None = None
        self._constants: tuple[Any, Any, Any, Any] | None = None
        #: Under central DP, the smallest noise multiplier any round of the run released: what a refused round's
        #: budget is judged by (the smallest gives the server the benefit of the doubt).
        self.run_noise: float | None = None

    def add(self, dp: dict[str, Any], round_: RoundTranscript) -> float | None:
        """The epsilon after this round, or None where nothing is recomputed (local DP, no noise released).

        Raises ValueError naming what is inconsistent: a level other than central, distributed or local, or one
        that changes mid-run; a mechanism, adjacency or plan that does not belong to the level; a delta outside
        (0, 1), a sampling rate outside (0, 1], a non-finite epsilon; survivors repeated or not in the round.
        """
        level: Any = dp.get("level")
        noise: Any = dp.get("noise_multiplier")
        if level not in self._MECHANISMS:
            raise ValueError(f"level {level!r} is not central, distributed or local")
        if self._level is not None and level != self._level:
            raise ValueError(f"the level changes from {self._level} to {level} mid-run")
        self._level = level
        if dp.get("mechanism") not in self._MECHANISMS[level]:
            raise ValueError(f"mechanism {dp.get('mechanism')!r} is not one of {level} DP's")
        delta: Any = dp.get("delta")
        epsilon: Any = dp.get("epsilon")
        if type(delta) is not float or not 0 < delta < 1:
            raise ValueError("delta must lie in (0, 1)")
        if type(epsilon) not in (int, float) or not math.isfinite(epsilon) or epsilon < 0:
            raise ValueError("the recorded epsilon is not a finite non-negative number")
        target: Any = dp.get("target_epsilon")
        if target is not None and (type(target) not in (int, float) or not math.isfinite(target) or target <= 0):
            raise ValueError("the target epsilon is neither absent nor a finite positive number")
        if level == "local":
            from ..dp import LOCAL_ADJACENCY

            if dp.get("adjacency") != LOCAL_ADJACENCY or "plan" in dp:
                raise ValueError("a local-DP record names user-level adjacency or carries a distributed plan")
            self._check_quantized_bound(round_)
            return None
        if "plan" in dp and level != "distributed":
            raise ValueError("a central-DP record carries a distributed plan")
        if level == "central":
            self._check_quantized_bound(round_)
        rate: Any = dp.get("sample_rate")
        if type(rate) not in (int, float) or not 0 < rate <= 1:
            raise ValueError("the sampling rate must lie in (0, 1]")
        # One run has one population, one cohort size, one delta and one adjacency: one that moves is not a run's.
        constants = (rate, delta, dp.get("adjacency"), target)
        if self._constants is not None and self._constants != constants:
            raise ValueError(f"the sampling rate, delta, adjacency or target changes mid-run (from {self._constants} "
                             f"to {constants})")
        self._constants = constants
        if noise is None:
            if self._released(round_):
                if level == "distributed":
                    raise ValueError("the round records no noise, but enough clients sent unmasking shares for the "
                                     "server to recover its sum")
                self._check_refusal(dp, round_)
            return None if self._rdp is None else self._epsilon(delta)
        if type(noise) not in (int, float) or not math.isfinite(noise) or noise <= 0:
            raise ValueError("the noise multiplier is not a finite positive number")
        try:
            from ..dp import Adjacency, DistributedPlan
            from ..dp._ledger import central_rdp  # noqa: F401 (the accountants need the torch extra, Opacus)
        except ImportError:  # pragma: no cover
            return None
        adjacency = Adjacency(dp["adjacency"])
        if level == "central":
            orders, rdp = self._central_round(float(noise), float(rate), adjacency)
        else:
            plan = DistributedPlan.from_json(dp["plan"], max_dimension=2**40)
            if plan.mechanism.value != dp["mechanism"]:
                raise ValueError(f"the record names {dp['mechanism']} but its plan is {plan.mechanism.value}")
            self._check_plan_bound(plan, round_)
            survivors = self._survivors(round_)
            orders, rdp = plan.orders_for(float(rate)), plan.rdp(len(survivors), adjacency=adjacency,
                                                               sample_rate=float(rate))
            alone = plan.rdp(len(survivors), adjacency=adjacency)
            self._server_rdp = alone if self._server_rdp is None else self._server_rdp + alone
            self._server_orders = plan.orders
        if self._rdp is not None and orders != self._orders:
            raise ValueError("the rounds' records change mechanism or sampling rate mid-run")
        self._orders = orders
        self._rdp = rdp if self._rdp is None else self._rdp + rdp
        return self._epsilon(delta)

    @staticmethod
    def _released(round_: RoundTranscript) -> bool:
        """Whether the server could recover the round's sum, whatever the outcome line says: the protocol
        completed; at least the threshold of clients sent unmasking shares (SecAgg) or plaintext inputs; or the
        key holder sent the decrypted aggregate (Paillier)."""
        if round_.outcome is not None and not round_.outcome.get("aborted"):
            return True
        if round_.of_type("DecryptedAggregate"):
            return True
        threshold = int(round_.header.get("threshold") or 1)
        return any(len({m["sender"] for m in round_.of_type(kind)}) >= threshold
                   for kind in ("UnmaskingShares", "PlaintextInput"))

    def _check_refusal(self, dp: dict[str, Any], round_: RoundTranscript) -> None:
        # Central DP refuses a round, after the server has the sum, only when releasing it at the run's noise
        # would take epsilon above the target. A round without noise whose release the budget allowed is a
        # release the transcript does not account for.
        from ..dp import Adjacency, rdp_to_epsilon

        target: Any = dp.get("target_epsilon")
        if self.run_noise is None or type(target) not in (int, float):
            raise ValueError("the round records no noise although the server recovered its sum, and the run shows "
                             "no target and noise multiplier a refusal could have been judged by")
        delta = float(dp["delta"])
        orders, rdp = self._central_round(self.run_noise, float(dp["sample_rate"]), Adjacency(dp["adjacency"]))
        with_round = rdp_to_epsilon(orders, rdp if self._rdp is None else self._rdp + rdp, delta)
        if with_round <= target:
            raise ValueError(f"the round records no noise although the server recovered its sum, and releasing it "
                             f"at the run's noise multiplier {self.run_noise:.4g} would have kept epsilon at "
                             f"{with_round:.4g}, within the target {target:.4g}: nothing justifies a refusal")

    @staticmethod
    def _central_round(noise: float, rate: float, adjacency: Any) -> tuple[tuple[float, ...], Any]:
        """The orders and RDP of one central round at ``noise``, ``rate`` and ``adjacency``, as the ledger counts it."""
        from ..dp._accounting import GAUSSIAN_ORDERS, INTEGER_ORDERS
        from ..dp._ledger import central_rdp

        orders = GAUSSIAN_ORDERS if rate >= 1 else tuple(float(a) for a in INTEGER_ORDERS)
        return orders, central_rdp(noise / adjacency.sensitivity_factor, rate, orders)

    @staticmethod
    def _check_quantized_bound(round_: RoundTranscript) -> None:
        # A central or local round's clients ran a quantised encoding; its recorded public parameters must give
        # the round's encoding digest. A distributed round relabelled as central cannot: its digest is over a
        # distributed plan and a rotation seed.
        from ..encoding import ClipMode, EncodingConfig

        if round_.header.get("rotation_seed") is not None:
            raise ValueError("the record's level is not distributed, but the round's encoding is distributed DP's "
                             "(it has a rotation seed)")
        described: Any = round_.header.get("encoding")
        if not isinstance(described, dict):
            raise ValueError("the round records no quantised encoding, so its DP record cannot be tied to what its "
                             "clients ran")
        # Integers within what a round can have (a digest packs them in 64 bits); numbers as JSON writes them (a
        # clip of 10 is written as an integer).
        integers = {"dimension": 2**40, "clients": 2**32, "ring_bits": 64}
        if set(described) != {*integers, "clip", "scale", "clip_mode", "max_weight"} \
                or any(type(described[k]) is not int or not 1 <= described[k] <= top for k, top in integers.items()) \
                or any(type(described[k]) not in (int, float) for k in ("clip", "scale")) \
                or type(described["clip_mode"]) is not str:
            raise ValueError("the round's encoding parameters are not a quantised encoding's")
        weight = described["max_weight"]
        if weight is not None and (type(weight) is not int or not 1 <= weight <= 2**32):
            raise ValueError("the round's encoding has a weight bound that is not an integer in [1, 2^32]")
        config = EncodingConfig(dimension=described["dimension"], clients=described["clients"],
                                clip=float(described["clip"]), scale=float(described["scale"]),
                                clip_mode=ClipMode(described["clip_mode"]), max_weight=weight,
                                ring_bits=described["ring_bits"])
        if config.digest().hex() != round_.header.get("encoding_digest"):
            raise ValueError("the recorded encoding is not the one the round's encoding digest binds")

    @staticmethod
    def _check_plan_bound(plan: Any, round_: RoundTranscript) -> None:
        # The round's encoding digest covers every field of the plan and the public rotation seed, and the round
        # configuration every client derives its keys from covers the digest: a plan rewritten alone no longer
        # matches. The digest is still the server's record; only the active variant's clients sign it.
        from ..dp._distributed import distributed_encoding_digest

        seed: Any = round_.header.get("rotation_seed")
        if not isinstance(seed, str) or len(seed) != 64:
            raise ValueError("the round records no 32-byte rotation seed, so its plan cannot be tied to its encoding")
        if plan.padded_dimension != round_.header.get("vector_length"):
            raise ValueError(f"the plan pads to {plan.padded_dimension} coordinates, but the round's vectors have "
                             f"{round_.header.get('vector_length')}")
        if distributed_encoding_digest(plan, bytes.fromhex(seed)).hex() != round_.header.get("encoding_digest"):
            raise ValueError("the recorded plan is not the one the round's encoding digest binds")

    @staticmethod
    def _survivors(round_: RoundTranscript) -> list[int]:
        # The noise shares summed are those of the clients whose masked inputs the server unmasked: the outcome's
        # survivors must be exactly the senders of masked inputs the server named in its unmask requests.
        survivors = list(round_.outcome.get("survivors", [])) if round_.outcome is not None else []
        if len(set(survivors)) != len(survivors):
            raise ValueError("a survivor is listed twice")
        if not set(survivors) <= set(round_.header["clients"]):
            raise ValueError("a survivor is not among the round's clients")
        senders = {m["sender"] for m in round_.of_type("MaskedInput")}
        if not set(survivors) <= senders:
            raise ValueError(f"survivors {sorted(set(survivors) - senders)} sent no masked input")
        for request in round_.of_type("UnmaskRequest"):
            named = request["fields"]["survivors"]
            named = json.loads(named) if isinstance(named, str) else named
            if sorted(named) != sorted(survivors):
                raise ValueError(f"the outcome's survivors are not the {len(named)} the server named in its unmask "
                                 f"request to {request['receiver']}")
        return survivors

    def _epsilon(self, delta: float) -> float:
        from ..dp import rdp_to_epsilon

        epsilon = rdp_to_epsilon(self._orders, self._rdp, delta)
        # As the ledger does: under distributed DP the same rounds without amplification bound the population too.
        server = self.server_epsilon()
        return epsilon if server is None else min(epsilon, server)

    def server_epsilon(self) -> float | None:
        """Under distributed DP, the epsilon without amplification: what holds against the server, which knows
        every cohort, and needs no trust in the population the recorded sampling rate implies. None where no
        amplification is claimed: the recomputed epsilon is then already the server's."""
        from ..dp import rdp_to_epsilon

        if self._server_rdp is None or self._constants is None or self._constants[0] >= 1:
            return None
        return rdp_to_epsilon(self._server_orders, self._server_rdp, self._constants[1])


def check_dp_accounted(rounds: list[RoundTranscript]) -> CheckResult:
    """Every round that ran under differential privacy says which noise it added and what the ledger counted.

    Each such round's record must name the mechanism and the noise multiplier
    of the noise actually added, and the ledger's epsilon after it; that epsilon
    never decreases from round to round (privacy loss only accumulates) and
    never exceeds the target. Under distributed DP the round's ring must be the
    one the plan sized for its noise. If any round has a DP record, every round
    must. The epsilon is also recomputed from what the records say ran: each
    central round's noise multiplier, sampling rate and adjacency (its
    quantised encoding's recorded parameters must give the round's encoding
    digest), each distributed round's plan (bound to the round's encoding digest
    by the recorded public rotation seed), sampling rate, adjacency and the
    survivors whose noise shares were summed (each once, each a client of the
    round that sent a masked input, exactly those the server's unmask requests
    name). A recorded epsilon below the recomputed one fails the check, and so
    does a record that cannot be re-accounted: a level other than central,
    distributed or local or one that changes mid-run, a sampling rate, delta,
    adjacency or target that changes mid-run, a mechanism or plan foreign to the level, a
    delta outside (0, 1), a sampling rate outside (0, 1], a non-finite epsilon,
    a round without noise whose sum the server recovered (under central DP,
    unless the budget justified refusing it). Local DP's epsilons come from each
    client's own accountant and are not recomputed.
    """
    recorded = [r for r in rounds if r.header.get("dp")]
    evidence: list[str] = [f"round {r.round_id}: no DP record in a run whose other rounds have one"
                           for r in rounds if recorded and not r.header.get("dp")]
    previous: tuple[float, int] | None = None
    accountant = _Reaccountant()
    released = [r.header["dp"].get("noise_multiplier") for r in recorded if r.header["dp"].get("level") == "central"]
    released = [n for n in released if type(n) in (int, float) and math.isfinite(n) and n > 0]
    accountant.run_noise = float(min(released)) if released else None
    for round_ in recorded:
        dp = round_.header["dp"]
        completed = round_.outcome is not None and not round_.outcome.get("aborted")
        epsilon, target = dp.get("epsilon"), dp.get("target_epsilon")
        # A central round may complete and still release nothing (refused over budget); the re-accounting below
        # checks that its budget justified the refusal.
        refused = dp.get("level") == "central" and dp.get("noise_multiplier") is None
        if not dp.get("level") or (completed and not refused
                                   and (not dp.get("mechanism") or not dp.get("noise_multiplier"))):
            evidence.append(f"round {round_.round_id}: completed without a recorded mechanism or noise multiplier")
        if not isinstance(epsilon, (int, float)) or not math.isfinite(epsilon):
            evidence.append(f"round {round_.round_id}: no finite epsilon recorded")
            continue
        if isinstance(target, (int, float)) and epsilon > target * (1 + 1e-9):
            evidence.append(f"round {round_.round_id}: epsilon {epsilon:.4g} exceeds the target {target:.4g}")
        if previous is not None and epsilon < previous[0] - 1e-12:
            evidence.append(f"round {round_.round_id}: epsilon {epsilon:.4g} fell below round {previous[1]}'s "
                            f"{previous[0]:.4g}")
        if dp.get("level") == "distributed" and dp.get("bits") != round_.header["ring_bits"]:
            evidence.append(f"round {round_.round_id}: the plan's {dp.get('bits')}-bit ring is not the round's "
                            f"{round_.header['ring_bits']}-bit one")
        try:
            recomputed = accountant.add(dp, round_)
        except (KeyError, TypeError, ValueError, ArithmeticError, ConfigurationError) as error:
            evidence.append(f"round {round_.round_id}: its DP record cannot be re-accounted ({error})")
            recomputed = None
        if recomputed is not None and epsilon < recomputed * (1 - 1e-6) - 1e-9:
            evidence.append(f"round {round_.round_id}: recorded epsilon {epsilon:.6g} is below the {recomputed:.6g} "
                            "that its recorded noise and contributors give")
        previous = (float(epsilon), round_.round_id)
    server = accountant.server_epsilon()
    against_server = ("" if server is None else
                      f"; against the server, which knows every cohort: epsilon {server:.4g} for a client drawn in "
                      "every round (a transcript cannot show the population the recorded sampling rate implies; "
                      "this figure does not depend on it)")
    return CheckResult("dp-accounted", not evidence, bool(recorded),
                       "no round ran under DP" if not recorded else
                       ("every DP round recorded its noise and an epsilon within the target"
                        if not evidence else "a DP round is unrecorded, over budget or inconsistent") + against_server,
                       tuple(evidence))


CHECKS: tuple[Callable[[list[RoundTranscript]], CheckResult], ...] = (
    check_inputs_hidden, check_no_double_reveal, check_graph_bound, check_fresh_keys, check_ring_headroom, check_share_binding,
    check_dp_accounted,
)


def run_checks(rounds: list[RoundTranscript],
               checks: Iterable[Callable[[list[RoundTranscript]], CheckResult]] = CHECKS) -> list[CheckResult]:
    """Every check's verdict on ``rounds``.

    A transcript that parsed but whose fields do not have the shape a check
    reads (a field of the wrong type, a list where a number belongs, an
    unknown id) raises :class:`TranscriptError` naming the check, never an
    undeclared exception.
    """
    results = []
    for check in checks:
        try:
            results.append(check(rounds))
        except TranscriptError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, ArithmeticError, RecursionError,
                FedSecureError) as error:
            name = getattr(check, "__name__", "a check").removeprefix("check_").replace("_", "-")
            raise TranscriptError(f"{name}: the transcript has a malformed field ({type(error).__name__}: "
                                  f"{str(error)[:200]})") from None
    return results
