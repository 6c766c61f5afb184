"""Federated training around an existing PyTorch loop, with secure aggregation (needs the ``torch`` extra)."""

from ._data import Dataset, Partition, load_digits_28x28, make_logistic_data, partition
from ._federation import MODULE_PREFIX, FederatedClient, Federation, RoundRecord, TrainFunction
from ._optimizers import ServerOptimizer, ServerOptimizerKind
from ._training import TrainingResult, train_federated

__all__ = [
    "Dataset",
    "FederatedClient",
    "Federation",
    "MODULE_PREFIX",
    "Partition",
    "RoundRecord",
    "ServerOptimizer",
    "ServerOptimizerKind",
    "TrainFunction",
    "TrainingResult",
    "load_digits_28x28",
    "make_logistic_data",
    "partition",
    "train_federated",
]
