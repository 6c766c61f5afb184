"""A small CNN over clients with skewed labels, some of whom drop out, through fedsecure's Python API.

    .venv/bin/python examples/cnn_digits_noniid.py                 # SecAgg+, 20 clients, 20% drop per round
    .venv/bin/python examples/cnn_digits_noniid.py --protocol secagg --dropout 0.3 --rounds 5

Each client holds the digits of a Dirichlet(0.3) draw of labels, so clients see very different classes. In every
round a fifth of the cohort vanishes at a random stage of the protocol; SecAgg+ recovers their masks from the
survivors' Shamir shares and the round completes with the rest. The server keeps momentum (FedAvgM).
"""

from __future__ import annotations

import argparse

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedsecure import ProtocolKind, ThreatModel
from fedsecure.fl import (FederatedClient, Federation, Partition, ServerOptimizer, ServerOptimizerKind,
                          load_digits_28x28, partition, train_federated)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", default="secagg+", choices=[p.value for p in ProtocolKind])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--dropout", type=float, default=0.2, help="fraction of each cohort that drops")
    parser.add_argument("--seed", type=int, default=0, help="data split, model and dropouts (never keys)")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    data = load_digits_28x28(seed=args.seed)
    x_train, y_train = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    x_test, y_test = torch.from_numpy(data.x_test), torch.from_numpy(data.y_test)
    model = nn.Sequential(nn.Conv2d(1, 8, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 5), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 4 * 4, 10))

    def train(local: nn.Module, loader: DataLoader) -> None:
        optimizer = torch.optim.SGD(local.parameters(), lr=0.05, momentum=0.9)
        for _ in range(2):
            for inputs, targets in loader:
                optimizer.zero_grad()
                nn.functional.cross_entropy(local(inputs), targets).backward()
                optimizer.step()

    parts = partition(data.y_train, args.clients, Partition.DIRICHLET, seed=args.seed, alpha=0.3)
    clients = [FederatedClient(client_id=i, num_examples=len(part),
                               data=DataLoader(TensorDataset(x_train[part], y_train[part]), batch_size=16,
                                               shuffle=True, generator=torch.Generator().manual_seed(i)))
               for i, part in enumerate(parts)]

    def evaluate(trained: nn.Module) -> tuple[float, float]:
        trained.eval()
        with torch.no_grad():
            logits = trained(x_test)
        trained.train()
        return (nn.functional.cross_entropy(logits, y_test).item(),
                (logits.argmax(dim=1) == y_test).double().mean().item())

    federation = Federation(
        model=model, train=train, clients=clients, protocol=args.protocol, clip=10.0, dropout=args.dropout,
        # The threshold tolerates the dropout we simulate, and a fifth of the clients colluding with the server.
        threat=ThreatModel(dropout_fraction=min(max(0.1, args.dropout), 0.45), corrupt_fraction=0.2),
        server_optimizer=ServerOptimizer(ServerOptimizerKind.FEDAVGM, learning_rate=1.0, momentum=0.5),
        seed=args.seed)

    def show(record) -> None:  # type: ignore[no-untyped-def]
        print(f"round {record.round + 1}/{args.rounds}  loss {record.loss:.4f}  accuracy "
              f"{100 * record.accuracy:.1f}%  survivors {record.survivors}/{record.cohort}")

    result = train_federated(federation, rounds=args.rounds, evaluate=evaluate, on_round=show)
    print(f"final accuracy {100 * result.final_accuracy:.1f}% after {len(result.history)} rounds, "
          f"{result.seconds:.1f} s")


if __name__ == "__main__":
    main()
