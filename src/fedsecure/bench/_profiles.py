"""The benchmark profiles: which sweeps ``fedsecure bench`` runs, and how big they are."""

from __future__ import annotations

from dataclasses import dataclass

from ..crypto import MIN_SECURE_KEY_BITS

__all__ = ["PeerCase", "Profile", "PROFILES"]


@dataclass(frozen=True)
class PeerCase:
    """One fedsecure-against-Flower comparison: a cohort, a vector length and a number of rounds.

    ``num_shares``/``threshold`` fix Flower's parameters; ``None`` gives Flower
    the neighbourhood and threshold fedsecure chose for the same cohort.
    ``dropout`` is each client's independent probability of dropping in a round.
    """

    name: str
    clients: int
    dim: int
    rounds: int
    dropout: float = 0.0
    num_shares: int | None = None
    threshold: int | None = None
    complete_graph: bool = False




@dataclass(frozen=True)
class Profile:
    """A benchmark profile. Every sweep varies one thing and holds the others at the named values."""

    name: str
    clients_sweep: tuple[int, ...]
    clients_sweep_dim: int
    dim_sweep: tuple[int, ...]
    dim_sweep_clients: int
    dropout_sweep: tuple[float, ...]
    dropout_sweep_clients: int
    dropout_sweep_dim: int
    dropout_rounds: int
    repeats: int
    # Timed rounds per sweep point, for fedsecure and Flower alike; Paillier rounds cost seconds to minutes
    # each, so they are timed fewer times.
    paillier_repeats: int
    peer_cases: tuple[PeerCase, ...]
    phe_dim: int
    phe_sample: int
    key_bits: int = MIN_SECURE_KEY_BITS
    # Paillier rounds are skipped where clients * dim exceeds this (each client encrypts every value).
    paillier_max_work: int = 2_000_000
    # Threshold Paillier needs a majority of holders to partially decrypt: it is skipped above these.
    threshold_max_clients: int = 50
    threshold_max_dim: int = 10_000
    # Flower's SecAgg+ costs grow with clients x neighbours (pure-Python Shamir sharing); skipped above these.
    flower_max_clients: int = 100
    flower_max_dim: int = 1_000_000
    # SecAgg's complete graph costs clients^2 * dim keystream words; skipped above this.
    complete_graph_max_words: float = 1e10
    # --utility: digits-writers over this many writers, this many a round, for this many rounds, at these epsilons
    # and seeds.
    utility_clients: int = 5000
    utility_per_round: int = 100
    utility_rounds: int = 100
    utility_epsilons: tuple[float, ...] = (1.0, 3.0, 8.0)
    utility_seeds: tuple[int, ...] = (0, 1, 2)


QUICK = Profile(
    name="quick",
    clients_sweep=(5, 10, 20), clients_sweep_dim=1_000,
    dim_sweep=(1_000, 10_000), dim_sweep_clients=10,
    dropout_sweep=(0.1, 0.3), dropout_sweep_clients=10, dropout_sweep_dim=1_000, dropout_rounds=3,
    repeats=1, paillier_repeats=1,
    # Flower's own SecAgg+ example (examples/flower-secure-aggregation) runs 5 SuperNodes with num-shares 3,
    # reconstruction-threshold 2 and the quickstart CIFAR-10 CNN of 62,006 parameters.
    peer_cases=(
        PeerCase("complete graph", clients=10, dim=10_000, rounds=1, complete_graph=True),
        PeerCase("Flower's example configuration", clients=5, dim=62_006, rounds=3, dropout=0.1, num_shares=3,
                 threshold=2),
        PeerCase("fedsecure's parameters", clients=20, dim=1_000, rounds=3, dropout=0.1),
    ),
    phe_dim=10_000, phe_sample=5,
    threshold_max_clients=5, threshold_max_dim=1_000, flower_max_clients=20,
    utility_clients=500, utility_per_round=50, utility_rounds=20, utility_epsilons=(3.0,), utility_seeds=(0,),
)

FULL = Profile(
    name="full",
    clients_sweep=(10, 25, 50, 100, 200), clients_sweep_dim=10_000,
    dim_sweep=(1_000, 10_000, 100_000, 1_000_000), dim_sweep_clients=20,
    dropout_sweep=(0.1, 0.2, 0.3), dropout_sweep_clients=20, dropout_sweep_dim=1_000, dropout_rounds=30,
    repeats=2, paillier_repeats=1,
    peer_cases=(
        PeerCase("complete graph", clients=50, dim=100_000, rounds=2, complete_graph=True),
        PeerCase("Flower's example configuration", clients=5, dim=62_006, rounds=30, dropout=0.1, num_shares=3,
                 threshold=2),
        PeerCase("fedsecure's parameters", clients=50, dim=10_000, rounds=30, dropout=0.1),
    ),
    phe_dim=100_000, phe_sample=30,
    threshold_max_clients=25,
)

PROFILES = {profile.name: profile for profile in (QUICK, FULL)}
