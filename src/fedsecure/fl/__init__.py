"""Federated training around an existing PyTorch loop, with secure aggregation (needs the ``torch`` extra)."""

from ..pipeline import RoundRecord, ServerOptimizer, ServerOptimizerKind
from ._data import Dataset, Partition, Writers, load_digits_28x28, make_digits_writers, make_logistic_data, partition
from ._federation import MODULE_PREFIX, FederatedClient, Federation, TrainFunction
from ._training import TrainingResult, train_federated
from .examples import Experiment

__all__ = [
    "Dataset",
    "Experiment",
    "FederatedClient",
    "Federation",
    "MODULE_PREFIX",
    "Partition",
    "RoundRecord",
    "ServerOptimizer",
    "ServerOptimizerKind",
    "TrainFunction",
    "TrainingResult",
    "Writers",
    "load_digits_28x28",
    "make_digits_writers",
    "make_logistic_data",
    "partition",
    "train_federated",
]
