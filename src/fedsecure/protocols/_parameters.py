"""Choosing SecAgg+ neighbourhood size and threshold from the threat model.

Bell et al. (CCS 2020, §3-§4) replace SecAgg's complete graph with a random
sparse graph of degree O(log n). fedsecure uses a *random Harary graph*, as
Google's reference implementation of that paper does: clients are placed on a
ring in an order drawn from public randomness and each is joined to the
``h = (k-1)/2`` clients on either side, so every closed neighbourhood (a client
and its neighbours, who hold its shares) has exactly ``k`` members.

For ``n`` clients, of which at most ``gamma*n`` are corrupt (colluding with the
server) and at most ``delta*n`` drop out, :func:`choose_parameters` returns the
smallest odd ``k`` and then the smallest threshold ``t`` such that, with the
union bound over all clients and hypergeometric tails (corrupt and dropped
clients are placed uniformly at random by the graph's random order):

* **secrecy of each client's secrets** (failure <= 2^-sigma): fewer than ``t``
  of a client's ``k-1`` neighbours are corrupt,
  ``n * P[Hyp(n-1, gamma*n, k-1) >= t]``;
* **no partial sums** (failure <= 2^-sigma): the graph left after removing
  corrupt and dropped clients stays connected. Disconnecting a Harary ring
  needs two runs of ``h`` consecutive removed clients, so
  ``n^2/2 * C(B, 2h) / C(n, 2h)`` with ``B = (gamma+delta)*n`` bounds it;
* **correctness** (failure <= 2^-eta): every client keeps at least ``t``
  surviving neighbours to reconstruct from, both when exactly ``delta*n``
  clients drop (``n * P[Hyp(n-1, delta*n, k-1) > k-1-t]``) and when each
  client drops independently with probability ``delta``
  (``n * P[Bin(k-1, delta) > k-1-t]``), which is how real dropouts behave;
* ``t >= k/2``: against an honest-but-curious server the proof of Bonawitz
  et al. (2017, Theorem 6.3) only needs ``t`` above the number of colluding
  clients; the half-neighbourhood floor is a safety margin. The
  active-adversary variant will need ``t > 2k/3`` (ibid., §6.3).

When no ``k < n`` satisfies these, the complete graph (SecAgg) is used, where
the counts are exact rather than random: ``gamma*n < t <= n-delta*n``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .._errors import ConfigurationError

__all__ = ["ThreatModel", "GraphParameters", "choose_parameters", "complete_graph_parameters"]


@dataclass(frozen=True, slots=True)
class ThreatModel:
    """What the protocol must withstand.

    ``dropout_fraction``: the most clients that may vanish during a round;
    ``corrupt_fraction``: the most clients that may collude with the server;
    ``security_bits`` (sigma) and ``correctness_bits`` (eta): the log2 of the
    tolerated probabilities of a privacy failure and of an aborted round.
    """

    dropout_fraction: float = 0.1
    corrupt_fraction: float = 0.2
    security_bits: int = 40
    correctness_bits: int = 30

    def __post_init__(self) -> None:
        if not 0 <= self.dropout_fraction < 0.5:
            raise ConfigurationError("dropout_fraction must be in [0, 0.5)", parameter="dropout_fraction")
        if not 0 <= self.corrupt_fraction < 0.5:
            raise ConfigurationError("corrupt_fraction must be in [0, 0.5)", parameter="corrupt_fraction")
        if self.dropout_fraction + self.corrupt_fraction >= 0.9:
            raise ConfigurationError(
                "dropout_fraction + corrupt_fraction must stay below 0.9", parameter="corrupt_fraction"
            )
        if self.security_bits < 1 or self.correctness_bits < 1:
            raise ConfigurationError("security_bits and correctness_bits must be positive", parameter="security_bits")


@dataclass(frozen=True, slots=True)
class GraphParameters:
    """A neighbourhood size ``degree`` (closed, so it counts the client itself) and threshold.

    ``security_failure`` and ``correctness_failure`` are the union bounds the
    choice satisfies (0 when the counts are exact, as in the complete graph).
    """

    clients: int
    degree: int
    threshold: int
    security_failure: float
    correctness_failure: float

    @property
    def complete(self) -> bool:
        return self.degree >= self.clients


def _log_comb(n: int, k: int) -> float:
    """log C(n, k), -inf outside 0 <= k <= n (math.comb overflows a float for cohorts above about a thousand)."""
    if k < 0 or k > n:
        return -math.inf
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def _hypergeometric_pmf(population: int, marked: int, draws: int) -> list[float]:
    total = _log_comb(population, draws)
    return [
        math.exp(_log_comb(marked, i) + _log_comb(population - marked, draws - i) - total)
        for i in range(draws + 1)
    ]


def _binomial_pmf(draws: int, probability: float) -> list[float]:
    # In log space: math.comb(draws, i) overflows a float beyond about a thousand draws.
    if probability <= 0.0 or probability >= 1.0:
        certain = 0 if probability <= 0.0 else draws
        return [1.0 if i == certain else 0.0 for i in range(draws + 1)]
    log_p, log_q = math.log(probability), math.log1p(-probability)
    log_n = math.lgamma(draws + 1)
    return [math.exp(log_n - math.lgamma(i + 1) - math.lgamma(draws - i + 1) + i * log_p + (draws - i) * log_q)
            for i in range(draws + 1)]


def _upper_tails(pmf: list[float]) -> list[float]:
    # tails[i] = P[X >= i], accumulated from the top so small tails keep their precision.
    tails = [0.0] * (len(pmf) + 1)
    for i in range(len(pmf) - 1, -1, -1):
        tails[i] = tails[i + 1] + pmf[i]
    return tails


def complete_graph_parameters(clients: int, threat: ThreatModel) -> GraphParameters:
    """SecAgg's complete graph: ``t`` at least half the cohort and above the corrupt count."""
    corrupt = math.floor(threat.corrupt_fraction * clients)
    dropped = math.ceil(threat.dropout_fraction * clients)
    if clients < 2:
        raise ConfigurationError("secure aggregation needs at least 2 clients", parameter="clients")
    threshold = min(max((clients + 1) // 2, corrupt + 1, 2), clients)
    if threshold > clients - dropped:
        raise ConfigurationError(
            f"with {clients} clients, a threshold of {threshold} cannot survive {dropped} dropouts: lower "
            "`dropout_fraction` or add clients",
            parameter="dropout_fraction",
        )
    # Exactly ceil(delta*n) dropouts always leave t survivors; independent dropouts may not.
    independent = _upper_tails(_binomial_pmf(clients, threat.dropout_fraction))[clients - threshold + 1]
    return GraphParameters(clients=clients, degree=clients, threshold=threshold,
                           security_failure=0.0, correctness_failure=independent)


def _disconnect_bound(n: int, removed: int, degree: int) -> float:
    # Disconnecting a Harary ring needs two runs of (k-1)/2 consecutive removed clients (module docstring).
    half = (degree - 1) // 2
    return (n * n / 2) * math.exp(_log_comb(removed, 2 * half) - _log_comb(n, 2 * half))


def _secrecy_failure(n: int, corrupt_tails: list[float], disconnect: float, degree: int, threshold: int,
                     active: bool) -> float:
    # Some client has too many corrupt neighbours: t of them, or 2t - k against an active server.
    need = max(0, 2 * threshold - degree) if active else threshold
    return n * corrupt_tails[min(need, degree)] + disconnect


def graph_security_failure(clients: int, degree: int, threshold: int, threat: ThreatModel, *,
                           active: bool = False) -> float:
    """An upper bound on the probability that the server and the corrupt clients learn an honest input.

    This is the bound :func:`choose_parameters` selects against (Bell et al. 2020, §3-§4; module docstring): the
    random graph falls apart once the corrupt and dropped clients are removed, or some client has
    ``threshold`` corrupt neighbours. For the complete graph it is 0 when ``threshold`` is a majority above
    the corrupt count, else 1. A threshold of at most half the neighbourhood is always 1: then the
    server can collect both kinds of share of one client (Bonawitz et al. 2017, §4).

    ``active`` bounds the active-adversary variant instead: a malicious server can show a victim a ShareKeys
    view without some honest neighbours and later drop the others from U3, which succeeds once the victim has
    ``2t - k`` corrupt neighbours; the bound is on that event (and it needs fewer than a third corrupt).
    """
    n = clients
    corrupt = math.floor(threat.corrupt_fraction * n)
    if active and 3 * corrupt >= n:
        return 1.0
    if degree >= n:
        need = max((n + 1) // 2, corrupt + 1, 2)
        if active:
            need = max(need, 2 * n // 3 + 1)
            # The split needs 2t - n corrupt clients, impossible with t > 2n/3 and fewer than n/3 corrupt.
        return 0.0 if threshold >= need and (not active or corrupt < 2 * threshold - n) else 1.0
    if threshold < (degree + 1) // 2 or threshold > degree:
        return 1.0
    if active and threshold < 2 * degree // 3 + 1:
        return 1.0
    removed = min(n, corrupt + math.ceil(threat.dropout_fraction * n))
    corrupt_tails = _upper_tails(_hypergeometric_pmf(n - 1, corrupt, degree - 1))
    return min(1.0, _secrecy_failure(n, corrupt_tails, _disconnect_bound(n, removed, degree), degree, threshold,
                                     active))


def choose_parameters(clients: int, threat: ThreatModel, *, active: bool = False) -> GraphParameters:
    """The smallest SecAgg+ neighbourhood and threshold meeting ``threat`` (see the module docstring).

    ``active`` chooses for the active-adversary variant: ``t > 2k/3``, fewer
    than a third of the clients corrupt, and secrecy bounded against a victim
    having ``2t - k`` corrupt neighbours (:func:`graph_security_failure`).
    """
    if clients < 1:
        raise ConfigurationError("a round needs at least one client", parameter="clients")
    n = clients
    corrupt = math.floor(threat.corrupt_fraction * n)
    if active and threat.corrupt_fraction >= 1 / 3:
        raise ConfigurationError("the active-adversary variant needs fewer than a third of the clients corrupt",
                                 parameter="corrupt_fraction")
    dropped = math.ceil(threat.dropout_fraction * n)
    removed = min(n, corrupt + dropped)
    security_target = 2.0 ** -threat.security_bits
    correctness_target = 2.0 ** -threat.correctness_bits
    for degree in range(3, n, 2):
        others = degree - 1
        disconnect = _disconnect_bound(n, removed, degree)
        if disconnect > security_target:
            continue
        corrupt_tails = _upper_tails(_hypergeometric_pmf(n - 1, corrupt, others))
        exact_tails = _upper_tails(_hypergeometric_pmf(n - 1, dropped, others))
        independent_tails = _upper_tails(_binomial_pmf(others, threat.dropout_fraction))
        dropped_tails = [max(a, b) for a, b in zip(exact_tails, independent_tails)]
        lowest = max((degree + 1) // 2, 2 * degree // 3 + 1) if active else (degree + 1) // 2
        for threshold in range(lowest, degree + 1):
            security = _secrecy_failure(n, corrupt_tails, disconnect, degree, threshold, active)
            if security > security_target:
                continue
            # Correctness fails when more than others - threshold neighbours drop.
            survivors_short = others - threshold + 1
            correctness = n * dropped_tails[survivors_short] if survivors_short <= others else 1.0
            if correctness <= correctness_target:
                return GraphParameters(clients=n, degree=degree, threshold=threshold,
                                       security_failure=security, correctness_failure=correctness)
            break  # A larger threshold only makes correctness worse.
    complete = complete_graph_parameters(n, threat)
    if not active:
        return complete
    # The complete graph of the active variant: t > 2n/3 (Bonawitz et al. 2017, §6.3).
    threshold = min(max(complete.threshold, 2 * n // 3 + 1), n)
    if threshold > n - dropped:
        raise ConfigurationError(f"with {n} clients, the active variant's threshold of {threshold} cannot survive "
                                 f"{dropped} dropouts: lower `dropout_fraction` or add clients",
                                 parameter="dropout_fraction")
    independent = _upper_tails(_binomial_pmf(n, threat.dropout_fraction))[n - threshold + 1]
    return GraphParameters(clients=n, degree=n, threshold=threshold, security_failure=0.0,
                           correctness_failure=independent)
