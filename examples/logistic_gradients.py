"""Parties that share only gradients: one secure gradient-descent step per round, until the loss is low enough.

    .venv/bin/python examples/logistic_gradients.py                      # SecAgg+, 5 parties
    .venv/bin/python examples/logistic_gradients.py --protocol paillier  # Paillier, with a separate key holder

Five parties hold rows of one logistic-regression problem (scikit-learn's ``make_classification``). Each round
every party computes the gradient of the loss on its own rows and contributes ``-learning_rate * gradient``; the
server learns only the weighted sum, which is one full-batch gradient step on the pooled data. The plain FedAvg
server optimizer applies it as it is. Training stops once the test loss falls below ``--loss-threshold``.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from fedsecure import ProtocolKind
from fedsecure.fl import FederatedClient, Federation, Partition, make_logistic_data, partition, train_federated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", default="secagg+", choices=[p.value for p in ProtocolKind])
    parser.add_argument("--parties", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--learning-rate", type=float, default=0.5)
    parser.add_argument("--loss-threshold", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0, help="data and model initialisation (never keys)")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    data = make_logistic_data(seed=args.seed)
    parts = partition(data.y_train, args.parties, Partition.IID, seed=args.seed)
    rows = [(torch.from_numpy(data.x_train[p]).float(), torch.from_numpy(data.y_train[p]).float()) for p in parts]

    def gradient_step(local: nn.Module, shard: tuple[torch.Tensor, torch.Tensor]) -> None:
        """The party's contribution: its local weights after one step, i.e. -learning_rate * its gradient."""
        inputs, targets = shard
        local.zero_grad()
        nn.functional.binary_cross_entropy_with_logits(local(inputs).squeeze(1), targets).backward()
        with torch.no_grad():
            for parameter in local.parameters():
                parameter -= args.learning_rate * parameter.grad

    x_test, y_test = torch.from_numpy(data.x_test).float(), torch.from_numpy(data.y_test).float()

    def evaluate(trained: nn.Module) -> tuple[float, float]:
        with torch.no_grad():
            logits = trained(x_test).squeeze(1)
        return (nn.functional.binary_cross_entropy_with_logits(logits, y_test).item(),
                ((logits > 0).float() == y_test).double().mean().item())

    federation = Federation(
        model=nn.Linear(data.x_train.shape[1], 1), train=gradient_step, protocol=args.protocol, clip=10.0,
        clients=[FederatedClient(client_id=i, data=shard, num_examples=len(p))
                 for i, (shard, p) in enumerate(zip(rows, parts))],
        seed=args.seed)

    def show(record) -> None:  # type: ignore[no-untyped-def]
        print(f"round {record.round + 1}/{args.rounds}  test loss {record.loss:.4f}  accuracy "
              f"{100 * record.accuracy:.1f}%")

    result = train_federated(federation, rounds=args.rounds, evaluate=evaluate, on_round=show,
                             stop=lambda record: record.loss < args.loss_threshold)
    if len(result.history) < args.rounds:
        print(f"stopped after round {len(result.history)}: the test loss fell below {args.loss_threshold}")
    print(f"final accuracy {100 * result.final_accuracy:.1f}%, loss {result.final_loss:.4f} ({args.protocol})")


if __name__ == "__main__":
    main()
