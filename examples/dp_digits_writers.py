"""User-level differential privacy that learns: thousands of writers, a hundred a round, through the Python API.

    .venv/bin/python examples/dp_digits_writers.py                           # central DP, epsilon 3
    .venv/bin/python examples/dp_digits_writers.py --dp distributed --bits 16 # noise shares under SecAgg+
    .venv/bin/python examples/dp_digits_writers.py --dp none

5,000 synthetic writers (scikit-learn's bundled digits in each writer's own hand, ten digits each) train softmax
regression. Every round 100 writers take 5 full-batch SGD steps; their updates are clipped to L2 norm 0.5, which
bounds each writer's influence (the sensitivity DP needs), and aggregated. Under central DP the server adds exact
discrete Gaussian noise to the aggregate; under distributed DP each writer adds a share of discrete Gaussian noise
inside the SecAgg ring, so even the server sees only the noised total. The privacy ledger prints the epsilon spent,
with its delta, adjacency and accountant: against whoever sees only the released model (with amplification by
sampling, as the target is calibrated) and, under distributed DP, against the server, which knows the cohorts.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedsecure import ProtocolKind
from fedsecure.dp import Adjacency, DPConfig, PrivacyLevel
from fedsecure.fl import (FederatedClient, Federation, ServerOptimizer, ServerOptimizerKind, make_digits_writers,
                          train_federated)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dp", choices=["none", "central", "distributed"], default="central")
    parser.add_argument("--epsilon", type=float, default=3.0, help="the budget over --rounds (delta 1e-5)")
    parser.add_argument("--bits", type=int, default=16, help="ring bits of distributed DP")
    parser.add_argument("--writers", type=int, default=5000)
    parser.add_argument("--per-round", type=int, default=100, help="writers sampled each round")
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0, help="data and model initialisation (never keys or noise)")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    data = make_digits_writers(writers=args.writers, seed=args.seed)
    clients = [FederatedClient(client_id=i, num_examples=len(y),
                               data=DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
                                               batch_size=len(y)))
               for i, (x, y) in enumerate(zip(data.x, data.y))]

    def train(model: nn.Module, loader: DataLoader) -> None:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        for _ in range(5):
            for inputs, targets in loader:
                optimizer.zero_grad()
                nn.functional.cross_entropy(model(inputs), targets).backward()
                optimizer.step()

    x_test, y_test = torch.from_numpy(data.x_test), torch.from_numpy(data.y_test)

    def evaluate(model: nn.Module) -> tuple[float, float]:
        with torch.no_grad():
            logits = model(x_test)
        return (nn.functional.cross_entropy(logits, y_test).item(),
                (logits.argmax(dim=1) == y_test).double().mean().item())

    dp = None
    if args.dp != "none":
        dp = DPConfig(level=PrivacyLevel(args.dp), delta=1e-5, target_epsilon=args.epsilon, rounds=args.rounds,
                      bits=args.bits, adjacency=Adjacency.ZERO_OUT)
    federation = Federation(
        model=nn.Linear(64, 10), train=train, clients=clients, clip=0.5, fraction=args.per_round / args.writers, dp=dp,
        # Distributed DP's noise lives in the SecAgg ring; central DP's is the server's, after secure aggregation.
        protocol=ProtocolKind.SECAGG_PLUS,
        server_optimizer=ServerOptimizer(ServerOptimizerKind.FEDAVGM, learning_rate=1.0, momentum=0.9),
        max_weight=64, seed=args.seed)

    def show(record) -> None:  # type: ignore[no-untyped-def]
        if (record.round + 1) % 10 == 0:
            print(f"round {record.round + 1}/{args.rounds}  accuracy {100 * record.accuracy:.1f}%" +
                  (f"  epsilon {record.epsilon:.2f}" if record.epsilon is not None else ""), flush=True)

    result = train_federated(federation, rounds=args.rounds, evaluate=evaluate, on_round=show)
    print(f"final accuracy {100 * result.final_accuracy:.1f}% after {len(result.history)} rounds")
    ledger = federation.ledger
    if ledger is not None:
        print(f"privacy: epsilon {ledger.epsilon:.3f} at delta {ledger.config.delta:g}, {args.dp} DP, "
              f"{ledger.config.adjacency_name} adjacency, {ledger.accountant_name} accountant")
        if args.dp == "distributed":
            print(f"against the server, which knows the cohorts: epsilon {ledger.epsilon_without_amplification:.3f} "
                  "(each writer over the rounds it was drawn in; the largest)")
    else:
        print("no differential privacy: the total of each round's updates is released exactly")


if __name__ == "__main__":
    main()
