"""``fedsecure bench``: sweeps over protocols, clients, vector length and dropout, with the peers in the same run."""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..crypto import generate_paillier_keypair
from ..protocols import PaillierDeployment, ProtocolKind, RoundConfig, ThreatModel
from ._environment import environment
from ._fedsecure import DropPlan, FedsecureRound, drop_plans, run_fedsecure_rounds, stage_index, vectors
from ._flower import FLOWER_STAGES, FlowerRound, flower_available, run_flower_secaggplus
from ._phe import PerValuePhe, measure_packed_encryption, measure_per_value_phe
from ._profiles import Profile

__all__ = ["ALL_PROTOCOLS", "BenchResult", "run_benchmark"]

# "phe" is per-value python-paillier, extrapolated from a timed sample: the reference, not a protocol.
ALL_PROTOCOLS = tuple(kind.value for kind in ProtocolKind) + ("phe",)
THREAT = ThreatModel()

Log = Callable[[str], None]


@dataclass
class BenchResult:
    """Every record of a run, the fedsecure-to-peer ratios, and what was skipped and why."""

    environment: dict[str, Any]
    profile: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"format": "fedsecure-bench/1", "environment": self.environment, "profile": self.profile,
                "records": self.records, "comparisons": self.comparisons, "skipped": self.skipped}


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


class _Bench:
    def __init__(self, profile: Profile, protocols: Sequence[str], peers: bool, seed: int, log: Log) -> None:
        self.profile = profile
        self.protocols = [p for p in ALL_PROTOCOLS if p in protocols]
        self.flower = flower_available() if peers else None
        self.seed = seed
        self.log = log
        self.env = environment()
        self.result = BenchResult(self.env, dataclasses.asdict(profile) | {"protocols": self.protocols,
                                                                            "seed": seed, "peers": self.flower})
        self._deployments: dict[tuple[str, int], tuple[PaillierDeployment, float]] = {}
        self._phe: PerValuePhe | None = None
        # Round ids are never reused within a run: a Paillier deployment decrypts each id once.
        self._next_round_id = 0
        if peers and self.flower is None:
            self.result.skipped.append("Flower's SecAgg+: flwr 1.41 is not installed (pip install 'fedsecure[bench]')")

    # -------------------------------------------------------------- records
    def _record(self, suite: str, implementation: str, protocol: str, *, clients: int, dim: int, dropout: float,
                bernoulli: bool, **fields: Any) -> dict[str, Any]:
        env = self.env
        record: dict[str, Any] = {
            "suite": suite, "implementation": implementation, "protocol": protocol, "clients": clients, "dim": dim,
            "dropout": dropout, "dropout_model": "bernoulli" if bernoulli else "exact",
        } | fields | {
            "cpu": env["cpu"], "cores": env["cores"], "python": env["python"], "date": env["date"],
            "commit": env["commit"],
        } | {f"{name}_version": version for name, version in env["versions"].items()} | {
            "config": {"profile": self.profile.name, "seed": self.seed, "threat": dataclasses.asdict(THREAT),
                       "key_bits": self.profile.key_bits, "ring_bits": 32, "clip": 1.0},
        }
        self.result.records.append(record)
        return record

    def _fedsecure_record(self, suite: str, protocol: str, config: RoundConfig, rounds: Sequence[FedsecureRound],
                          *, dim: int, dropout: float, bernoulli: bool, setup_s: float = 0.0) -> dict[str, Any]:
        completed = [r for r in rounds if not r.aborted]
        timed = completed or list(rounds)
        peak = next((r.server_peak_bytes for r in rounds if r.server_peak_bytes is not None), None)
        record = self._record(
            suite, "fedsecure", protocol, clients=len(config.clients), dim=dim, dropout=dropout, bernoulli=bernoulli,
            degree=config.degree, threshold=config.threshold, rounds=len(rounds),
            aborted_rounds=len(rounds) - len(completed), wrong_rounds=sum(not r.correct for r in completed),
            round_s=_median([r.seconds for r in timed]), round_s_min=min(r.seconds for r in timed),
            client_s=_median([r.client_seconds for r in timed]), server_s=_median([r.server_seconds for r in timed]),
            bytes_up_per_param=_median([r.bytes_up for r in timed]) / dim,
            bytes_down_per_param=_median([r.bytes_down for r in timed]) / dim,
            server_peak_mib=None if peak is None else peak / 2**20, setup_s=setup_s, extrapolated=False,
            max_abs_error=None, per_round_s=[r.seconds for r in rounds],
            per_round_completed=[not r.aborted for r in rounds], per_round_bytes_up=[r.bytes_up for r in rounds],
            abort_reasons=sorted({r.abort_reason for r in rounds if r.abort_reason}))
        self._log_record(record)
        return record

    def _log_record(self, record: dict[str, Any]) -> None:
        name = f"{record['implementation']:<9} {record['protocol']:<18}"
        self.log(f"  {name} n={record['clients']:<4} d={record['dim']:<8} drop={record['dropout']:<4} "
                 f"round {record['round_s']:.3f} s  {record['bytes_up_per_param']:.2f} B/param  "
                 f"aborted {record['aborted_rounds']}/{record['rounds']}  wrong {record['wrong_rounds']}")

    def _flower_record(self, suite: str, rounds: Sequence[FlowerRound], *, clients: int, dim: int, dropout: float,
                       bernoulli: bool, num_shares: int, threshold: int) -> dict[str, Any]:
        completed = [r for r in rounds if r.completed]
        timed = completed or list(rounds)
        record = self._record(
            suite, "flower", "secagg+", clients=clients, dim=dim, dropout=dropout, bernoulli=bernoulli,
            degree=num_shares, threshold=threshold, rounds=len(rounds), aborted_rounds=len(rounds) - len(completed),
            wrong_rounds=sum(not (r.max_abs_error < 1e-3) for r in completed),
            round_s=_median([r.seconds for r in timed]), round_s_min=min(r.seconds for r in timed),
            client_s=None, server_s=None,
            bytes_up_per_param=_median([r.bytes_up for r in timed]) / dim,
            bytes_down_per_param=_median([r.bytes_down for r in timed]) / dim,
            server_peak_mib=None, setup_s=0.0, extrapolated=False,
            max_abs_error=max((r.max_abs_error for r in completed), default=None),
            per_round_s=[r.seconds for r in rounds], per_round_completed=[r.completed for r in rounds],
            per_round_bytes_up=[float(r.bytes_up) for r in rounds], abort_reasons=[])
        self._log_record(record)
        return record

    def _compare(self, suite: str, label: str, ours: dict[str, Any], peer: dict[str, Any]) -> None:
        """Ratios of peer over fedsecure (above 1: fedsecure is faster or smaller), on matching rounds only.

        Both sides ran the same drop plans, round by round; time and bytes are
        compared over the rounds both completed, so neither side is credited
        with the shorter time of an aborted round. Without such rounds the
        ratios are ``None`` and the aborted-round counts are the result.
        """
        matched = [i for i, (a, b) in enumerate(zip(ours["per_round_completed"], peer["per_round_completed"],
                                                     strict=True)) if a and b]

        def median_of(record: dict[str, Any], key: str) -> float | None:
            return _median([record[key][i] for i in matched]) if matched else None

        ours_s, peer_s = median_of(ours, "per_round_s"), median_of(peer, "per_round_s")
        ours_b, peer_b = median_of(ours, "per_round_bytes_up"), median_of(peer, "per_round_bytes_up")
        env = self.env
        self.result.comparisons.append({
            "suite": suite, "case": label, "protocol": ours["protocol"], "peer": peer["implementation"],
            "peer_protocol": peer["protocol"], "clients": ours["clients"], "dim": ours["dim"],
            "dropout": ours["dropout"], "rounds": ours["rounds"], "matched_rounds": len(matched),
            "fedsecure_degree": ours["degree"], "fedsecure_threshold": ours["threshold"],
            "peer_degree": peer["degree"], "peer_threshold": peer["threshold"],
            "fedsecure_round_s": ours_s, "peer_round_s": peer_s, "time_ratio": _ratio(peer_s, ours_s),
            "fedsecure_bytes_up_per_param": None if ours_b is None else ours_b / ours["dim"],
            "peer_bytes_up_per_param": None if peer_b is None else peer_b / peer["dim"],
            "bytes_ratio": _ratio(peer_b, ours_b),
            "fedsecure_aborted_rounds": ours["aborted_rounds"], "peer_aborted_rounds": peer["aborted_rounds"],
            "fedsecure_wrong_rounds": ours["wrong_rounds"], "peer_wrong_rounds": peer["wrong_rounds"],
            "cpu": env["cpu"], "cores": env["cores"], "date": env["date"], "commit": env["commit"],
        } | {f"{name}_version": version for name, version in env["versions"].items()})

    # ------------------------------------------------------------- runners
    def _deployment(self, protocol: ProtocolKind, clients: int) -> tuple[PaillierDeployment, float]:
        key = (protocol.value, clients)
        if key not in self._deployments:
            started = time.perf_counter()
            deployment = PaillierDeployment.create(protocol, range(clients), key_bits=self.profile.key_bits)
            self._deployments[key] = (deployment, time.perf_counter() - started)
        return self._deployments[key]

    def _skip(self, protocol: str, clients: int, dim: int) -> str | None:
        p = self.profile
        if protocol in ("paillier", "paillier-threshold") and clients * dim > p.paillier_max_work:
            return f"{clients} clients x {dim} values to encrypt exceeds the profile's {p.paillier_max_work}"
        if protocol == "paillier-threshold" and (clients > p.threshold_max_clients or dim > p.threshold_max_dim):
            return (f"a majority of {clients} holders each partially decrypting {dim} values exceeds the profile's "
                    f"limits ({p.threshold_max_clients} clients, {p.threshold_max_dim} values)")
        if protocol == "secagg" and clients * clients * dim > p.complete_graph_max_words:
            return f"the complete graph needs {clients * clients * dim:.1e} keystream words"
        return None

    def fedsecure(self, suite: str, protocol: str, clients: int, dim: int, plans: Sequence[DropPlan], *,
                  dropout: float, bernoulli: bool, memory: bool = False) -> dict[str, Any] | None:
        reason = self._skip(protocol, clients, dim)
        if reason is not None:
            self.result.skipped.append(f"{suite}: fedsecure {protocol} at n={clients}, d={dim}: {reason}")
            return None
        kind = ProtocolKind(protocol)
        deployment, setup_s = self._deployment(kind, clients) if kind.is_paillier else (None, 0.0)
        config, rounds = run_fedsecure_rounds(kind, vectors(clients, dim, self.seed), plans, threat=THREAT,
                                              paillier=deployment, measure_memory=memory,
                                              first_round_id=self._next_round_id)
        self._next_round_id += len(plans) + 1
        return self._fedsecure_record(suite, protocol, config, rounds, dim=dim, dropout=dropout, bernoulli=bernoulli,
                                      setup_s=setup_s)

    def flower_peer(self, suite: str, clients: int, dim: int, plans: Sequence[DropPlan], *, dropout: float,
                    bernoulli: bool, num_shares: int, threshold: int, limited: bool = True) -> dict[str, Any] | None:
        if self.flower is None:
            return None
        p = self.profile
        if limited and (clients > p.flower_max_clients or dim > p.flower_max_dim):
            self.result.skipped.append(f"{suite}: Flower SecAgg+ at n={clients}, d={dim}: beyond the profile's "
                                       f"limits ({p.flower_max_clients} clients, {p.flower_max_dim} values)")
            return None
        drops = [{c: stage_index(position, len(FLOWER_STAGES)) for c, position in plan.items()} for plan in plans]
        rounds = run_flower_secaggplus(vectors(clients, dim, self.seed), drops, num_shares=num_shares,
                                       threshold=threshold)
        return self._flower_record(suite, rounds, clients=clients, dim=dim, dropout=dropout, bernoulli=bernoulli,
                                   num_shares=num_shares, threshold=threshold)

    def phe_reference(self, suite: str, clients: int, dim: int, dropout: float, bernoulli: bool) -> None:
        if self._phe is None:
            public, private = generate_paillier_keypair(self.profile.key_bits)
            self._phe = measure_per_value_phe(public, private, self.profile.phe_sample)
        seconds = self._phe.round_seconds(clients, dim)
        self._record(suite, "phe", "phe", clients=clients, dim=dim, dropout=dropout, bernoulli=bernoulli,
                     degree=None, threshold=None, rounds=0, aborted_rounds=None, wrong_rounds=None,
                     round_s=seconds, round_s_min=seconds, client_s=dim * self._phe.encrypt_s, server_s=None,
                     bytes_up_per_param=float(self._phe.bytes_per_value), bytes_down_per_param=None,
                     server_peak_mib=None, setup_s=0.0, extrapolated=True, max_abs_error=None)
        self.log(f"  phe       per value{'':<9} n={clients:<4} d={dim:<8} round {seconds:.1f} s (extrapolated from "
                 f"{self._phe.sample} values)")

    def warm_up(self) -> None:
        """One small untimed round per implementation, so no timed round pays for first imports and caches."""
        plans: list[DropPlan] = [{}]
        for protocol in ("plaintext", "secagg", "secagg+"):
            if protocol in self.protocols:
                run_fedsecure_rounds(ProtocolKind(protocol), vectors(5, 100, self.seed), plans, threat=THREAT)
        if self.flower is not None:
            run_flower_secaggplus(vectors(5, 100, self.seed), [{}], num_shares=5, threshold=3)

    # --------------------------------------------------------------- suites
    def sweep(self, suite: str, points: Sequence[tuple[int, int]]) -> None:
        repeats = self.profile.repeats
        for clients, dim in points:
            self.log(f"{suite}: n={clients} d={dim}")
            ours: dict[str, dict[str, Any] | None] = {}
            for protocol in self.protocols:
                if protocol == "phe":
                    self.phe_reference(suite, clients, dim, 0.0, False)
                    continue
                count = self.profile.paillier_repeats if protocol.startswith("paillier") else repeats
                plans: list[DropPlan] = [{}] * count
                ours[protocol] = self.fedsecure(suite, protocol, clients, dim, plans, dropout=0.0, bernoulli=False,
                                                memory=True)
            ours_plus = ours.get("secagg+")
            if self.flower is not None and ours_plus is not None:
                # Flower runs the neighbourhood and threshold fedsecure chose, and the same number of rounds.
                peer = self.flower_peer(suite, clients, dim, [{}] * repeats, dropout=0.0, bernoulli=False,
                                        num_shares=ours_plus["degree"], threshold=ours_plus["threshold"])
                if peer is not None:
                    self._compare(suite, f"{suite} sweep: n={clients}, d={dim}", ours_plus, peer)

    def dropout_sweep(self) -> None:
        p = self.profile
        clients, dim = p.dropout_sweep_clients, p.dropout_sweep_dim
        for fraction in p.dropout_sweep:
            self.log(f"dropout: p={fraction} n={clients} d={dim}, {p.dropout_rounds} rounds")
            plans = drop_plans(clients, fraction, p.dropout_rounds, seed=self.seed, bernoulli=True)
            ours = {protocol: self.fedsecure("dropout", protocol, clients, dim, plans, dropout=fraction,
                                             bernoulli=True)
                    for protocol in self.protocols if protocol != "phe"}
            ours_plus = ours.get("secagg+")
            if self.flower is not None and ours_plus is not None:
                peer = self.flower_peer("dropout", clients, dim, plans, dropout=fraction, bernoulli=True,
                                        num_shares=ours_plus["degree"], threshold=ours_plus["threshold"])
                if peer is not None:
                    self._compare("dropout", f"dropout sweep: p={fraction}", ours_plus, peer)

    def peers(self) -> None:
        if self.flower is None:
            return
        for case in self.profile.peer_cases:
            protocol = "secagg" if case.complete_graph else "secagg+"
            if protocol not in self.protocols:
                continue
            self.log(f"peers: {case.name}: n={case.clients} d={case.dim}, {case.rounds} rounds, dropout {case.dropout}")
            plans: Sequence[DropPlan]
            if case.dropout:
                plans = drop_plans(case.clients, case.dropout, case.rounds, seed=self.seed, bernoulli=True)
            else:
                plans = [{}] * case.rounds
            ours = self.fedsecure("peers", protocol, case.clients, case.dim, plans, dropout=case.dropout,
                                  bernoulli=bool(case.dropout))
            if ours is None:
                continue
            if case.num_shares is not None and case.threshold is not None:
                shares, threshold = case.num_shares, case.threshold
            else:
                # The neighbourhood and threshold fedsecure ran (the complete graph for SecAgg).
                shares, threshold = ours["degree"], ours["threshold"]
            # The profile names these cases explicitly, so the sweep limits do not apply.
            peer = self.flower_peer("peers", case.clients, case.dim, plans, dropout=case.dropout,
                                    bernoulli=bool(case.dropout), num_shares=shares, threshold=threshold, limited=False)
            if peer is not None:
                self._compare("peers", case.name, ours, peer)

    def phe_suite(self) -> None:
        if "phe" not in self.protocols or "paillier" not in self.protocols:
            return
        p = self.profile
        self.log(f"phe: one update of {p.phe_dim} values, packed against per value ({p.phe_sample}-value sample)")
        public, private = generate_paillier_keypair(p.key_bits)
        packed = measure_packed_encryption(public, dim=p.phe_dim, clients=10)
        per_value = measure_per_value_phe(public, private, p.phe_sample)
        phe_s = per_value.encrypt_s * p.phe_dim
        ours = self._record("phe", "fedsecure", "paillier", clients=1, dim=p.phe_dim, dropout=0.0, bernoulli=False,
                            degree=None, threshold=None, rounds=1, aborted_rounds=0, wrong_rounds=0,
                            round_s=packed.seconds, round_s_min=packed.seconds, client_s=packed.seconds,
                            server_s=None, bytes_up_per_param=packed.bytes_per_param, bytes_down_per_param=None,
                            server_peak_mib=None, setup_s=0.0, extrapolated=False, max_abs_error=None,
                            per_round_s=[packed.seconds], per_round_completed=[True],
                            per_round_bytes_up=[packed.bytes_per_param * p.phe_dim], abort_reasons=[])
        peer = self._record("phe", "phe", "phe", clients=1, dim=p.phe_dim, dropout=0.0, bernoulli=False,
                            degree=None, threshold=None, rounds=1, aborted_rounds=None, wrong_rounds=None,
                            round_s=phe_s, round_s_min=phe_s, client_s=phe_s, server_s=None,
                            bytes_up_per_param=float(per_value.bytes_per_value), bytes_down_per_param=None,
                            server_peak_mib=None, setup_s=0.0, extrapolated=True, max_abs_error=None,
                            per_round_s=[phe_s], per_round_completed=[True],
                            per_round_bytes_up=[float(per_value.bytes_per_value * p.phe_dim)], abort_reasons=[])
        self._compare("phe", f"encrypt one update of {p.phe_dim} values", ours, peer)
        self.log(f"  packed {packed.seconds:.2f} s, per-value phe {peer['round_s']:.0f} s (extrapolated): "
                 f"x{peer['round_s'] / packed.seconds:.0f}; {packed.bytes_per_param:.2f} against "
                 f"{per_value.bytes_per_value} B/param")


def run_benchmark(profile: Profile, *, protocols: Sequence[str] = ALL_PROTOCOLS, peers: bool = True,
                  seed: int = 0, log: Log | None = None) -> BenchResult:
    """Run every suite of ``profile`` over ``protocols``; Flower's SecAgg+ joins when installed and ``peers``.

    The suites: round time, bytes and server memory against the number of
    clients and against the vector length (no dropout); aborted rounds against
    the dropout rate (each client drops independently, at a random stage); the
    pairwise comparisons with Flower's SecAgg+; packed Paillier against
    per-value phe. Keys and masks come from the OS; ``seed`` fixes only the
    simulated updates and dropouts, which every implementation shares.
    """
    unknown = set(protocols) - set(ALL_PROTOCOLS)
    if unknown:
        raise ValueError(f"unknown protocols {sorted(unknown)}; choose from {', '.join(ALL_PROTOCOLS)}")
    bench = _Bench(profile, protocols, peers, seed, log or (lambda _: None))
    started = time.perf_counter()
    bench.warm_up()
    bench.sweep("clients", [(n, profile.clients_sweep_dim) for n in profile.clients_sweep])
    bench.sweep("dim", [(profile.dim_sweep_clients, d) for d in profile.dim_sweep])
    bench.dropout_sweep()
    bench.peers()
    bench.phe_suite()
    bench.result.profile["seconds"] = time.perf_counter() - started
    return bench.result
