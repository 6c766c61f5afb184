"""The seed examples, as functions the CLI, the scripts in ``examples/`` and the tests share.

Each builds an :class:`Experiment`: a :class:`Federation` over data generated or
shipped inside scikit-learn, and an evaluation function on held-out data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..pipeline import dp_config_for
from ..protocols import ProtocolKind, ThreatModel
from .._errors import ConfigurationError
from ._data import Partition, Writers, load_digits_28x28, make_digits_writers, make_logistic_data, partition
from ._federation import FederatedClient, Federation
from ..pipeline import ServerOptimizer, ServerOptimizerKind

__all__ = ["Experiment", "EXAMPLES", "linear784", "logistic", "cnn_digits", "digits_writers", "dp_config_for"]


@dataclass
class Experiment:
    """A federation, its evaluation on held-out data, an optional stopping rule and extra final metrics."""

    federation: Federation
    evaluate: Callable[[Any], tuple[float, float]]
    stop: Callable[[Any], bool] | None = None
    metrics: Callable[[Any], dict[str, float]] | None = None
    #: Epochs of local training per round, when the training function takes ``privatize`` (local DP).
    local_epochs: int | None = None


def _loaders(x: np.ndarray, y: np.ndarray, parts: list[np.ndarray], batch_size: int, seed: int) -> list[Any]:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    loaders = []
    for index, part in enumerate(parts):
        dataset = TensorDataset(torch.from_numpy(x[part]), torch.from_numpy(y[part]))
        generator = torch.Generator().manual_seed(seed * 1000 + index)
        loaders.append(DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator))
    return loaders


def _classifier_evaluation(x: np.ndarray, y: np.ndarray) -> Callable[[Any], tuple[float, float]]:
    import torch

    inputs, targets = torch.from_numpy(x), torch.from_numpy(y)

    def evaluate(model: Any) -> tuple[float, float]:
        model.eval()
        with torch.no_grad():
            logits = model(inputs)
            loss = torch.nn.functional.cross_entropy(logits, targets).item()
            accuracy = (logits.argmax(dim=1) == targets).double().mean().item()
        model.train()
        return loss, accuracy

    return evaluate


def _sgd_epochs(epochs: int, lr: float, momentum: float = 0.0) -> Callable[..., None]:
    import torch

    def train(model: Any, loader: Any, privatize: Any = None) -> None:
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
        if privatize is not None:  # local DP: Opacus wraps model, optimizer and loader (DP-SGD)
            model, optimizer, loader = privatize(model, optimizer, loader)
        model.train()
        for _ in range(epochs):
            for inputs, targets in loader:
                optimizer.zero_grad()
                torch.nn.functional.cross_entropy(model(inputs), targets).backward()  # type: ignore[no-untyped-call]
                optimizer.step()

    return train


def _full_batch_steps(steps: int, lr: float) -> Callable[..., None]:
    """``steps`` steps of plain SGD, each on all of a client's examples (its loader holds one batch of them all).

    Without local DP the examples are read straight from the loader's ``TensorDataset`` and each step is written
    out (``p -= lr * grad``): a full-batch gradient does not depend on the examples' order, and a ``DataLoader``'s
    shuffle and collation and an optimizer's set-up cost more than a step of a small model on ten examples. Under
    local DP, Opacus needs a torch optimizer and its own loader (Poisson-sampled batches): the same steps run
    through ``torch.optim.SGD`` on what that loader yields.
    """
    import torch

    through_optimizer = _sgd_epochs(epochs=steps, lr=lr)

    def train(model: Any, loader: Any, privatize: Any = None) -> None:
        if privatize is not None:
            through_optimizer(model, loader, privatize)
            return
        model.train()
        inputs, targets = loader.dataset.tensors
        parameters = list(model.parameters())
        for _ in range(steps):
            for parameter in parameters:
                parameter.grad = None
            torch.nn.functional.cross_entropy(model(inputs), targets).backward()  # type: ignore[no-untyped-call]
            with torch.no_grad():
                for parameter in parameters:
                    parameter.add_(parameter.grad, alpha=-lr)

    return train


def _clients(loaders: list[Any], parts: list[np.ndarray]) -> list[FederatedClient]:
    return [FederatedClient(client_id=i, data=loader, num_examples=len(part))
            for i, (loader, part) in enumerate(zip(loaders, parts))]


def linear784(*, protocol: ProtocolKind = ProtocolKind.SECAGG_PLUS, clients: int = 10, dropout: float = 0.0, seed: int = 0,
              threat: ThreatModel | None = None, key_bits: int = 2048,
              insecure_keys: bool = False) -> Experiment:
    """``nn.Linear(784, 10)``, cross-entropy, SGD (lr 0.01), MNIST-shaped digits split IID over the clients."""
    import torch

    torch.manual_seed(seed)
    data = load_digits_28x28(seed=seed)
    x_train = data.x_train.reshape(len(data.x_train), -1)
    parts = partition(data.y_train, clients, Partition.IID, seed=seed)
    model = torch.nn.Linear(784, 10)
    federation = Federation(model=model, train=_sgd_epochs(epochs=5, lr=0.01), protocol=protocol,
                            clients=_clients(_loaders(x_train, data.y_train, parts, 32, seed), parts),
                            clip=10.0, dropout=dropout, seed=seed, threat=threat, key_bits=key_bits,
                            insecure_keys=insecure_keys)
    return Experiment(federation, _classifier_evaluation(data.x_test.reshape(len(data.x_test), -1), data.y_test),
                      local_epochs=5)


class _SmallCNN:
    @staticmethod
    def build() -> Any:
        import torch.nn as nn

        return nn.Sequential(
            nn.Conv2d(1, 8, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(16 * 4 * 4, 10),
        )


def cnn_digits(*, protocol: ProtocolKind = ProtocolKind.SECAGG_PLUS, clients: int = 20, dropout: float = 0.2, seed: int = 0,
               alpha: float = 0.3, threat: ThreatModel | None = None, key_bits: int = 2048,
               insecure_keys: bool = False) -> Experiment:
    """A small CNN on 28x28 digits, Dirichlet(alpha) label skew over the clients."""
    import torch

    torch.manual_seed(seed)
    data = load_digits_28x28(seed=seed)
    parts = partition(data.y_train, clients, Partition.DIRICHLET, seed=seed, alpha=alpha)
    federation = Federation(model=_SmallCNN.build(), train=_sgd_epochs(epochs=2, lr=0.05, momentum=0.9),
                            protocol=protocol,
                            clients=_clients(_loaders(data.x_train, data.y_train, parts, 16, seed), parts),
                            clip=10.0, dropout=dropout, seed=seed,
                            threat=threat or ThreatModel(dropout_fraction=min(max(0.1, dropout), 0.45),
                                                         corrupt_fraction=0.2),
                            key_bits=key_bits, insecure_keys=insecure_keys)
    return Experiment(federation, _classifier_evaluation(data.x_test, data.y_test), local_epochs=2)


def logistic(*, protocol: ProtocolKind = ProtocolKind.SECAGG_PLUS, clients: int = 5, dropout: float = 0.0, seed: int = 0,
             learning_rate: float = 0.5, loss_threshold: float = 0.25,
             threat: ThreatModel | None = None, key_bits: int = 2048, insecure_keys: bool = False) -> Experiment:
    """Parties with ``make_classification`` data send logistic-regression gradients; only their secure
    aggregate steps the model (one full-batch gradient step per round), until the test loss falls below
    ``loss_threshold``."""
    import torch

    torch.manual_seed(seed)
    data = make_logistic_data(seed=seed)
    parts = partition(data.y_train, clients, Partition.IID, seed=seed)
    shards = [(torch.from_numpy(data.x_train[p]).float(), torch.from_numpy(data.y_train[p]).float())
              for p in parts]
    model = torch.nn.Linear(data.x_train.shape[1], 1)

    def gradient_step(local: Any, shard: Any) -> None:
        # The update this party contributes is -learning_rate * (its gradient): the server's weighted
        # mean of updates is one gradient-descent step on the pooled data.
        inputs, targets = shard
        local.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(local(inputs).squeeze(1), targets).backward()  # type: ignore[no-untyped-call]
        with torch.no_grad():
            for parameter in local.parameters():
                parameter -= learning_rate * parameter.grad

    x_test, y_test = torch.from_numpy(data.x_test).float(), torch.from_numpy(data.y_test).float()

    def evaluate(trained: Any) -> tuple[float, float]:
        with torch.no_grad():
            logits = trained(x_test).squeeze(1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y_test).item()
            accuracy = ((logits > 0).float() == y_test).double().mean().item()
        return loss, accuracy

    federation = Federation(model=model, train=gradient_step, protocol=protocol,
                            clients=[FederatedClient(i, shard, len(p)) for i, (shard, p) in enumerate(zip(shards, parts))],
                            server_optimizer=ServerOptimizer(), clip=10.0, dropout=dropout, seed=seed, threat=threat, key_bits=key_bits,
                            insecure_keys=insecure_keys)
    return Experiment(federation, evaluate,
                      stop=lambda record: record.loss is not None and record.loss < loss_threshold,
                      metrics=lambda trained: {"mae": mean_absolute_error(trained, data.x_test, data.y_test)})


def digits_writers(*, protocol: ProtocolKind = ProtocolKind.SECAGG_PLUS, clients: int = 5000, per_round: int = 100,
                   dropout: float = 0.0, seed: int = 0, threat: ThreatModel | None = None, key_bits: int = 2048,
                   insecure_keys: bool = False, local_epochs: int = 5, learning_rate: float = 0.5,
                   clip: float = 0.5, data: Writers | None = None) -> Experiment:
    """Softmax regression over thousands of writers with about ten digits each: a task where user-level DP learns.

    ``clients`` synthetic writers (:func:`~fedsecure.fl.make_digits_writers`: each with its own hand and a
    Dirichlet(0.5) label skew) hold 10 examples each; every round ``per_round`` of them train ``local_epochs``
    full-batch steps of SGD and send their update, clipped to L2 norm ``clip``. The server applies the mean with
    momentum (FedAvgM, learning rate 1, momentum 0.9). With ~100 updates per round and hundreds of rounds the DP
    noise averages out: the regime user-level DP is meant for.

    ``data`` is the writers to train on, as ``make_digits_writers(writers=clients, seed=seed)`` makes them (the
    default): a caller running many experiments on the same writers generates them once. Training never writes to it.
    """
    import torch

    torch.manual_seed(seed)
    if data is None:
        data = make_digits_writers(writers=clients, seed=seed)
    elif len(data.x) != clients:
        raise ConfigurationError(f"the writers given are {len(data.x)}, not {clients}", parameter="data")
    loaders = []
    for index, (x, y) in enumerate(zip(data.x, data.y)):
        dataset = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
        loaders.append(torch.utils.data.DataLoader(dataset, batch_size=len(y), shuffle=True,
                                                   generator=torch.Generator().manual_seed(seed * 100_003 + index)))
    federated = [FederatedClient(client_id=i, data=loader, num_examples=len(y))
                 for i, (loader, y) in enumerate(zip(loaders, data.y))]
    federation = Federation(model=torch.nn.Linear(64, 10), train=_full_batch_steps(local_epochs, learning_rate),
                            protocol=protocol, clients=federated, fraction=min(1.0, per_round / clients),
                            server_optimizer=ServerOptimizer(ServerOptimizerKind.FEDAVGM, learning_rate=1.0,
                                                             momentum=0.9),
                            clip=clip, dropout=dropout, seed=seed, threat=threat, key_bits=key_bits,
                            insecure_keys=insecure_keys, max_weight=64)
    return Experiment(federation, _classifier_evaluation(data.x_test, data.y_test), local_epochs=local_epochs)


def mean_absolute_error(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    """Mean |p - y| of a binary classifier's predicted probabilities on (x, y)."""
    import torch

    with torch.no_grad():
        probabilities = torch.sigmoid(model(torch.from_numpy(x).float()).squeeze(1)).numpy()
    return float(np.mean(np.abs(probabilities - y)))


EXAMPLES: dict[str, Callable[..., Experiment]] = {"linear784": linear784, "logistic": logistic,
                                                    "cnn-digits": cnn_digits, "digits-writers": digits_writers}
