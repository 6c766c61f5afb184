"""Federated logistic regression on 28x28 digits, through fedsecure's Python API.

    .venv/bin/python examples/linear_784.py                       # SecAgg+, 10 clients, 10 rounds
    .venv/bin/python examples/linear_784.py --protocol paillier --clients 5 --rounds 3

Your model and your training loop stay as they are: fedsecure takes the model, a function that trains a copy of it
on one client's data, and one ``FederatedClient`` per data partition. Each round every client trains locally; its
update (local minus global weights, clipped to an L2 norm of ``clip``) is masked (SecAgg+) or encrypted (Paillier)
before it leaves the client, and the server learns only the weighted sum. The data are scikit-learn's bundled
digits, scaled to 28x28; nothing is downloaded.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedsecure import ProtocolKind
from fedsecure.fl import FederatedClient, Federation, Partition, load_digits_28x28, partition, train_federated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", default="secagg+", choices=[p.value for p in ProtocolKind])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="data split and model initialisation (never keys)")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    data = load_digits_28x28(seed=args.seed)
    x_train = torch.from_numpy(data.x_train.reshape(len(data.x_train), -1))
    y_train = torch.from_numpy(data.y_train)
    x_test = torch.from_numpy(data.x_test.reshape(len(data.x_test), -1))
    y_test = torch.from_numpy(data.y_test)

    def train(model: nn.Module, loader: DataLoader) -> None:
        """The ordinary local loop: five epochs of SGD on this client's examples."""
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        for _ in range(5):
            for inputs, targets in loader:
                optimizer.zero_grad()
                nn.functional.cross_entropy(model(inputs), targets).backward()
                optimizer.step()

    clients = []
    for index, part in enumerate(partition(data.y_train, args.clients, Partition.IID, seed=args.seed)):
        loader = DataLoader(TensorDataset(x_train[part], y_train[part]), batch_size=32, shuffle=True,
                            generator=torch.Generator().manual_seed(args.seed * 1000 + index))
        clients.append(FederatedClient(client_id=index, data=loader, num_examples=len(part)))

    def evaluate(model: nn.Module) -> tuple[float, float]:
        with torch.no_grad():
            logits = model(x_test)
            return (nn.functional.cross_entropy(logits, y_test).item(),
                    (logits.argmax(dim=1) == y_test).double().mean().item())

    federation = Federation(model=nn.Linear(784, 10), train=train, clients=clients, protocol=args.protocol,
                            clip=10.0, seed=args.seed)

    def show(record) -> None:  # type: ignore[no-untyped-def]
        print(f"round {record.round + 1}/{args.rounds}  loss {record.loss:.4f}  accuracy "
              f"{100 * record.accuracy:.1f}%  survivors {record.survivors}/{record.cohort}")

    result = train_federated(federation, rounds=args.rounds, evaluate=evaluate, on_round=show)
    print(f"final accuracy {100 * result.final_accuracy:.1f}% after {len(result.history)} rounds "
          f"({args.protocol}), {result.seconds:.1f} s")


if __name__ == "__main__":
    main()
