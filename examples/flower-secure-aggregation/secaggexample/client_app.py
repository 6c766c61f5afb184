"""secaggexample: the ClientApp. The user's NumPyClient is unchanged; fedsecure's mod protects its update."""

from __future__ import annotations

from typing import Any

from flwr.client import ClientApp, NumPyClient

from fedsecure.flower import secure_aggregation_mod
from secaggexample.task import Net, evaluate, get_weights, load_data, set_weights, train


class DigitsClient(NumPyClient):
    def __init__(self, partition: int, partitions: int, epochs: int, learning_rate: float) -> None:
        self.net = Net()
        self.x, self.y, self.x_test, self.y_test = load_data(partition, partitions)
        self.epochs, self.learning_rate = epochs, learning_rate

    def fit(self, parameters: list[Any], config: dict[str, Any]) -> tuple[list[Any], int, dict[str, Any]]:
        set_weights(self.net, parameters)
        loss = train(self.net, self.x, self.y, self.epochs, self.learning_rate)
        return get_weights(self.net), len(self.y), {"train_loss": loss}

    def evaluate(self, parameters: list[Any], config: dict[str, Any]) -> tuple[float, int, dict[str, Any]]:
        set_weights(self.net, parameters)
        loss, accuracy = evaluate(self.net, self.x_test, self.y_test)
        return loss, len(self.y_test), {"accuracy": accuracy}


def client_fn(context: Any) -> Any:
    return DigitsClient(int(context.node_config["partition-id"]), int(context.node_config["num-partitions"]),
                        int(context.run_config.get("local-epochs", 3)),
                        float(context.run_config.get("learning-rate", 0.1))).to_client()


# Flower's SecAgg+ would be `mods=[secaggplus_mod]`.
app = ClientApp(client_fn=client_fn, mods=[secure_aggregation_mod])
