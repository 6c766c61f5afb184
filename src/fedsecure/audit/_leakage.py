"""Gradient leakage on ``linear784``: what the server reads from one client's update, with and without SecAgg.

For a linear layer trained on one example ``x`` with cross-entropy, the
gradient of row i of the weights is ``(p_i - y_i) x`` and that of bias i is
``p_i - y_i``. A server that sees the update divides one by the other and has
``x`` exactly (Phong et al. 2018, "Privacy-Preserving Deep Learning via
Additively Homomorphic Encryption", §3.2). Under secure aggregation the server
sees the client's masked vector instead, uniform over the ring: the same
division yields noise. This module runs both through the real protocols (the
attack reads the victim's bytes off the wire) and reports the reconstruction
error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..encoding import ClipMode, EncodingConfig, Quantizer
from ..protocols import MaskedInput, PlaintextInput, ProtocolKind, RoundConfig, Stage, ThreatModel, decode_message
from ..runtime import Simulator, plaintext_ring_sum

__all__ = ["LeakageResult", "gradient_leakage", "plot_leakage"]

_FEATURES, _CLASSES = 784, 10


@dataclass(frozen=True)
class LeakageResult:
    """The victim's input, what the attack recovered from what the server saw, and the relative L2 error."""

    protocol: str
    victim_input: np.ndarray = field(repr=False)
    reconstruction: np.ndarray = field(repr=False)
    relative_error: float
    sum_correct: bool

    def to_json(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "relative_error": self.relative_error, "sum_correct": self.sum_correct}


def _single_example_gradients(clients: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    import torch

    from ..fl._data import load_digits_28x28

    data = load_digits_28x28(seed=seed)
    images = data.x_train.reshape(len(data.x_train), -1)
    generator = torch.Generator().manual_seed(seed)  # noqa: csprng-ok (model initialisation, not a secret)
    model = torch.nn.Linear(_FEATURES, _CLASSES)
    with torch.no_grad():
        bound = 1 / np.sqrt(_FEATURES)
        model.weight.uniform_(-bound, bound, generator=generator)
        model.bias.uniform_(-bound, bound, generator=generator)
    gradients = []
    for client in range(clients):
        # Each client's update is the gradient of one training example: the setting of the attack.
        x = torch.from_numpy(images[client : client + 1])
        y = torch.from_numpy(data.y_train[client : client + 1])
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()  # type: ignore[no-untyped-call]
        gradients.append(np.concatenate([model.weight.grad.numpy().ravel(),  # type: ignore[union-attr]
                                         model.bias.grad.numpy()]).astype(np.float64))  # type: ignore[union-attr]
    return gradients, images[0].astype(np.float64)


def _reconstruct(update: np.ndarray) -> np.ndarray:
    # The row whose bias gradient is largest in magnitude divides most cleanly.
    weights = update[: _FEATURES * _CLASSES].reshape(_CLASSES, _FEATURES)
    bias = update[_FEATURES * _CLASSES :]
    row = int(np.argmax(np.abs(bias)))
    if bias[row] == 0:
        return np.zeros(_FEATURES)
    reconstructed: np.ndarray = weights[row] / bias[row]
    return reconstructed


def gradient_leakage(protocol: ProtocolKind, *, clients: int = 10, seed: int = 0) -> LeakageResult:
    """Run one round of ``protocol`` over ``clients`` single-example gradients of ``linear784``; client 0 is the
    victim. The attack decodes the victim's input message as the server receives it and divides its weight
    gradient row by its bias gradient. Needs the torch and examples extras.
    """
    gradients, victim_input = _single_example_gradients(clients, seed)
    dimension = gradients[0].size
    encoding = EncodingConfig.fit_scale(dimension=dimension, clients=clients, clip=1.0, ring_bits=32,
                                        clip_mode=ClipMode.PER_COORDINATE)
    quantizer = Quantizer(encoding)
    updates = {c: quantizer.encode(gradients[c]) for c in range(clients)}
    config = RoundConfig.create(protocol=protocol, clients=range(clients), encoding=encoding,
                                threat=ThreatModel(), round_id=seed)
    seen: dict[str, np.ndarray] = {}

    def wiretap(sender: int, stage: Stage, data: bytes) -> bytes:
        # The server's own view: the victim's input message exactly as it arrives.
        if sender == 0:
            message = decode_message(data)
            if isinstance(message, (MaskedInput, PlaintextInput)):
                seen["vector"] = np.array(message.vector)
        return data

    report = Simulator(config, updates, interceptor=wiretap).run()
    result = report.result
    sum_correct = result is not None and bool(
        np.array_equal(plaintext_ring_sum(updates, result.survivors), result.ring_sum))
    # Decode what the server saw as if it were an honest plaintext update, then run the attack.
    observed = encoding.ring.to_signed(seen["vector"]).astype(np.float64) / encoding.scale
    reconstruction = _reconstruct(observed)
    error = float(np.linalg.norm(reconstruction - victim_input) / np.linalg.norm(victim_input))
    return LeakageResult(protocol.value, victim_input, reconstruction, error, sum_correct)


def plot_leakage(results: list[LeakageResult], path: Path) -> Path:
    """The victim's image beside each protocol's reconstruction, as a PNG."""
    from .._plotting import pyplot, save

    figure, axes = pyplot().subplots(1, len(results) + 1, figsize=(2.6 * (len(results) + 1), 3.0))
    axes[0].imshow(results[0].victim_input.reshape(28, 28), cmap="gray")
    axes[0].set_title("victim's input", fontsize=9)
    for axis, result in zip(axes[1:], results, strict=True):
        axis.imshow(np.clip(result.reconstruction, -1, 2).reshape(28, 28), cmap="gray")
        axis.set_title(f"{result.protocol}: error {result.relative_error:.2g}", fontsize=9)
    for axis in axes:
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle("Gradient leakage on linear784: weight-gradient row / bias gradient", fontsize=10)
    return save(figure, path)
