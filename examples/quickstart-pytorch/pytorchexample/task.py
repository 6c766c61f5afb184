"""The model and the data: a small CNN on scikit-learn's bundled 8x8 digits, split across the nodes (each example
is a self-contained Flower app, so this module is its own copy)."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits


class Net(torch.nn.Module):
    """Two convolutions and two dense layers (a few thousand parameters)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 16, 3, padding=1)
        self.fc1 = torch.nn.Linear(16 * 2 * 2, 32)
        self.fc2 = torch.nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def get_weights(net: torch.nn.Module) -> list[np.ndarray]:
    return [value.cpu().numpy() for value in net.state_dict().values()]


def set_weights(net: torch.nn.Module, weights: list[np.ndarray]) -> None:
    net.load_state_dict({key: torch.tensor(value) for key, value in zip(net.state_dict(), weights)})


def load_data(partition: int, partitions: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """This node's share of the training digits (IID), and the common test set."""
    digits = load_digits()
    x = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(digits.target)
    order = np.random.default_rng(0).permutation(len(y))  # noqa: csprng-ok (a fixed data split)
    train, test = order[:1500], order[1500:]
    mine = train[partition::partitions]
    return x[mine], y[mine], x[test], y[test]


def train(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, learning_rate: float) -> float:
    optimizer = torch.optim.SGD(net.parameters(), lr=learning_rate, momentum=0.9)
    net.train()
    loss = torch.tensor(0.0)
    for _ in range(epochs):
        for start in range(0, len(y), 32):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(x[start:start + 32]), y[start:start + 32])
            loss.backward()
            optimizer.step()
    return float(loss.detach())


def evaluate(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    net.eval()
    with torch.no_grad():
        logits = net(x)
    return float(torch.nn.functional.cross_entropy(logits, y)), float((logits.argmax(1) == y).float().mean())
