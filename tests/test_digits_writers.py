"""digits-writers: the synthetic writers, and the example every DP output names its adjacency and accountant on."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("sklearn")

from fedsecure.fl import make_digits_writers  # noqa: E402


def test_writers_are_reproducible_skewed_and_tested_on_unseen_hands() -> None:
    first, again = make_digits_writers(writers=200, seed=3), make_digits_writers(writers=200, seed=3)
    assert len(first.x) == 200 and all(x.shape == (10, 64) for x in first.x)
    assert all(np.array_equal(a, b) for a, b in zip(first.x, again.x))
    assert not np.array_equal(first.x[0], make_digits_writers(writers=200, seed=4).x[0])
    # Dirichlet(0.5) label skew: a typical writer writes few distinct digits; the test set covers all ten.
    assert np.median([len(set(y.tolist())) for y in first.y]) <= 5
    assert set(first.y_test.tolist()) == set(range(10)) and first.x_test.shape[1] == 64


def test_train_digits_writers_under_central_dp_names_its_guarantee() -> None:
    pytest.importorskip("torch")
    finished = subprocess.run([sys.executable, "-m", "fedsecure.cli", "train", "--example", "digits-writers",
                               "--clients", "300", "--rounds", "3", "--dp", "central", "--epsilon", "8", "--json",
                               "--quiet"], capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr
    privacy = json.loads(finished.stdout)["privacy"]
    assert privacy["adjacency"] == "zero-out" and privacy["accountant"] == "rdp"
    assert 0 < privacy["epsilon"] <= 8.0


def test_the_examples_full_batch_steps_are_torch_sgd_on_every_example() -> None:
    torch = pytest.importorskip("torch")
    from fedsecure.fl.examples import digits_writers

    data = make_digits_writers(writers=40, seed=5)
    experiment = digits_writers(clients=40, per_round=10, seed=5, data=data)
    client = experiment.federation.clients[7]
    torch.manual_seed(0)
    model = torch.nn.Linear(64, 10)
    reference = torch.nn.Linear(64, 10)
    reference.load_state_dict(model.state_dict())
    initial = model.weight.detach().clone()
    experiment.federation.train(model, client.data)
    # The reference: five steps of torch.optim.SGD (lr 0.5), each on the writer's ten examples as one batch.
    inputs, targets = torch.from_numpy(data.x[7]), torch.from_numpy(data.y[7])
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.5)
    for _ in range(5):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(reference(inputs), targets).backward()
        optimizer.step()
    for trained, expected in zip(model.parameters(), reference.parameters()):
        assert torch.allclose(trained, expected, atol=1e-6)
    assert (model.weight - initial).abs().max() > 1e-3  # it trained
    # The writers given are the ones trained on, and they must be as many as the clients asked for.
    assert np.array_equal(client.data.dataset.tensors[0].numpy(), data.x[7])
    from fedsecure import ConfigurationError

    with pytest.raises(ConfigurationError, match="40, not 50"):
        digits_writers(clients=50, per_round=10, data=data)
