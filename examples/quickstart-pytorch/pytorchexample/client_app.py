"""pytorchexample: the ClientApp, in the Message API. The train function is the user's own; the mod protects it."""

from __future__ import annotations

from typing import Any

from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedsecure.flower import secure_aggregation_mod
from pytorchexample.task import Net, evaluate, load_data, train

app = ClientApp(mods=[secure_aggregation_mod])


@app.train()
def train_fn(message: Any, context: Any) -> Any:
    net = Net()
    net.load_state_dict(message.content["arrays"].to_torch_state_dict())
    x, y, _, _ = load_data(int(context.node_config["partition-id"]), int(context.node_config["num-partitions"]))
    loss = train(net, x, y, int(context.run_config.get("local-epochs", 3)),
                 float(context.run_config.get("learning-rate", 0.1)))
    metrics = MetricRecord({"train_loss": loss, "num-examples": len(y)})
    return Message(RecordDict({"arrays": ArrayRecord(net.state_dict()), "metrics": metrics}), reply_to=message)


@app.evaluate()
def evaluate_fn(message: Any, context: Any) -> Any:
    net = Net()
    net.load_state_dict(message.content["arrays"].to_torch_state_dict())
    _, _, x_test, y_test = load_data(int(context.node_config["partition-id"]),
                                     int(context.node_config["num-partitions"]))
    loss, accuracy = evaluate(net, x_test, y_test)
    metrics = MetricRecord({"eval_loss": loss, "eval_acc": accuracy, "num-examples": len(y_test)})
    return Message(RecordDict({"metrics": metrics}), reply_to=message)
