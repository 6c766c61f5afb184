"""Your own training loop on Flower's deployment engine: ``fedsecure flower --job mlp_digits:make``.

A job is a function ``make(*, clients, seed)`` that returns a :class:`fedsecure.fl.Experiment` (or a bare
``Federation``): your model, your ``train(model, data)`` function, one ``FederatedClient`` per data partition and,
optionally, an evaluation on held-out data. The server builds it once for the global model; each SuperNode builds
it for its own partition (``partition-id`` of ``num-partitions``) and trains there. Nothing is downloaded: the data
are scikit-learn's bundled digits.

    cd examples/flower-own-job
    ../../.venv/bin/fedsecure flower --job mlp_digits:make --supernodes 4 --rounds 5 --fraction 0.75
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedsecure.fl import Experiment, FederatedClient, Federation


def make(*, clients: int, seed: int) -> Experiment:
    """A two-layer MLP on 8x8 digits, the training images split evenly over ``clients`` partitions."""
    torch.manual_seed(seed)
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))  # noqa: csprng-ok (data split)
    train, test = order[:1500], order[1500:]
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def train_locally(local: Any, loader: Any, privatize: Any = None) -> None:
        optimizer = torch.optim.SGD(local.parameters(), lr=0.1)
        if privatize is not None:  # local DP (--dp local): Opacus wraps model, optimizer and loader
            local, optimizer, loader = privatize(local, optimizer, loader)
        local.train()
        for _ in range(2):
            for inputs, targets in loader:
                optimizer.zero_grad()
                nn.functional.cross_entropy(local(inputs), targets).backward()
                optimizer.step()

    parts = np.array_split(train, clients)
    federated = [FederatedClient(client_id=i, num_examples=len(part),
                                 data=DataLoader(TensorDataset(torch.from_numpy(x[part]), torch.from_numpy(y[part])),
                                                 batch_size=32, shuffle=True,
                                                 generator=torch.Generator().manual_seed(seed * 1000 + i)))
                 for i, part in enumerate(parts)]
    inputs, targets = torch.from_numpy(x[test]), torch.from_numpy(y[test])

    def evaluate(trained: Any) -> tuple[float, float]:
        with torch.no_grad():
            logits = trained(inputs)
            return (nn.functional.cross_entropy(logits, targets).item(),
                    (logits.argmax(dim=1) == targets).double().mean().item())

    return Experiment(Federation(model=model, train=train_locally, clients=federated, clip=10.0, seed=seed),
                      evaluate, local_epochs=2)
