"""Data for experiments: generated, or shipped inside a registry package. Nothing downloads."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Dataset", "Writers", "load_digits_28x28", "make_digits_writers", "make_logistic_data", "Partition",
           "partition"]


@dataclass(frozen=True)
class Dataset:
    """Features and integer labels, split into a training and a test part."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _split(x: np.ndarray, y: np.ndarray, seed: int, test_fraction: float) -> Dataset:
    order = np.random.default_rng(seed).permutation(len(y))  # noqa: csprng-ok (data split)
    cut = int(round(len(y) * (1 - test_fraction)))
    train, test = order[:cut], order[cut:]
    return Dataset(x[train], y[train], x[test], y[test])


def load_digits_28x28(*, seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images), upsampled to MNIST's 28x28 shape.

    Each pixel becomes a 3x3 block (24x24) padded by 2 on every side; values are
    scaled to [0, 1]. Images have shape (1, 28, 28), float32.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    upsampled = np.kron(images, np.ones((1, 3, 3), dtype=np.float32))
    padded = np.pad(upsampled, ((0, 0), (2, 2), (2, 2)))[:, None, :, :]
    return _split(padded, digits.target.astype(np.int64), seed, test_fraction)


@dataclass(frozen=True)
class Writers:
    """Many small clients, each a writer with its own hand: ``x[i]``, ``y[i]`` are writer i's examples."""

    x: list[np.ndarray]
    y: list[np.ndarray]
    x_test: np.ndarray
    y_test: np.ndarray


def _warp(images: np.ndarray, matrices: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Each 8x8 image resampled (bilinear, zero outside) at ``matrix @ (pixel - centre) + centre + shift``."""
    size = images.shape[-1]
    grid = np.stack(np.meshgrid(np.arange(size), np.arange(size), indexing="ij"), axis=-1).reshape(-1, 2) - 3.5
    source = np.einsum("nij,pj->npi", matrices, grid) + 3.5 + shifts[:, None, :]
    row, col = source[..., 0], source[..., 1]
    r0, c0 = np.floor(row).astype(int), np.floor(col).astype(int)
    fr, fc = row - r0, col - c0
    padded = np.pad(images, ((0, 0), (1, 2), (1, 2)))
    index = np.arange(len(images))[:, None]

    def at(r: np.ndarray, c: np.ndarray) -> np.ndarray:
        picked: np.ndarray = padded[index, np.clip(r + 1, 0, size + 2), np.clip(c + 1, 0, size + 2)]
        return picked

    out = ((1 - fr) * (1 - fc) * at(r0, c0) + (1 - fr) * fc * at(r0, c0 + 1)
           + fr * (1 - fc) * at(r0 + 1, c0) + fr * fc * at(r0 + 1, c0 + 1))
    warped: np.ndarray = out.reshape(len(images), size, size)
    return warped


def _styled(base: np.ndarray, labels: np.ndarray, writers: int, per_writer: int, alpha: float,
            rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
    by_label = [np.flatnonzero(labels == digit) for digit in range(10)]
    xs, ys = [], []
    for _ in range(writers):
        # The writer's hand: a slant, a shear, a size, an offset and a pen pressure, all its own.
        angle, shear = rng.normal(0, 0.1), rng.normal(0, 0.1)
        size = rng.uniform(0.9, 1.1)
        hand = size * np.array([[np.cos(angle), -np.sin(angle) + shear], [np.sin(angle), np.cos(angle)]])
        offset, pressure = rng.normal(0, 0.3, 2), rng.uniform(0.8, 1.2)
        # The digits this writer writes: a Dirichlet(alpha) mix of labels.
        mix = rng.dirichlet(np.full(10, alpha))
        digits = rng.choice(10, size=per_writer, p=mix)
        chosen = np.array([rng.choice(by_label[d]) for d in digits])
        # Each example: the writer's hand plus a little jitter of its own, and pixel noise.
        jitter = rng.normal(0, 0.03, (per_writer, 2, 2))
        matrices = np.linalg.inv(hand)[None] + jitter
        shifts = -offset[None] + rng.normal(0, 0.15, (per_writer, 2))
        images = pressure * _warp(base[chosen], matrices, shifts) + rng.normal(0, 0.05, (per_writer, 8, 8))
        xs.append(np.clip(images, 0, 1.5).reshape(per_writer, 64).astype(np.float32))
        ys.append(digits.astype(np.int64))
    return xs, ys


def make_digits_writers(*, writers: int = 5000, per_writer: int = 10, alpha: float = 0.5, test_writers: int = 500,
                        seed: int = 0) -> Writers:
    """Thousands of synthetic writers from scikit-learn's bundled 8x8 digits.

    The 1797 images are split into base images for training (80%) and for testing (20%). Each writer gets its own
    affine hand (slant, shear, size, offset), pen pressure and a Dirichlet(``alpha``) skew over the labels, and
    writes ``per_writer`` examples of the training bases with a little jitter and pixel noise. The test set is
    ``test_writers`` fresh writers' renderings of the held-out bases, so a model is judged on hands and images it
    never saw. Features are the 64 pixels, roughly in [0, 1.5].
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float64) / 16.0
    rng = np.random.default_rng([seed, 8])  # noqa: csprng-ok (simulated data)
    order = rng.permutation(len(images))
    cut = int(0.8 * len(images))
    train, test = order[:cut], order[cut:]
    x, y = _styled(images[train], digits.target[train], writers, per_writer, alpha, rng)
    tx, ty = _styled(images[test], digits.target[test], test_writers, 10, 10.0, rng)
    return Writers(x, y, np.concatenate(tx), np.concatenate(ty))


def make_logistic_data(*, samples: int = 2000, features: int = 20, seed: int = 0,
                       test_fraction: float = 0.2) -> Dataset:
    """A binary classification problem from scikit-learn's ``make_classification``."""
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=samples, n_features=features, n_informative=features // 2,
                               class_sep=2.0, random_state=seed)
    return _split(x.astype(np.float64), y.astype(np.int64), seed, test_fraction)


class Partition(enum.Enum):
    """How examples are spread over clients."""

    IID = "iid"
    DIRICHLET = "dirichlet"
    SHARDS = "shards"


def partition(
    labels: np.ndarray,
    clients: int,
    scheme: Partition,
    *,
    seed: int,
    alpha: float = 0.5,
    shards_per_client: int = 2,
) -> list[np.ndarray]:
    """Indices of each client's examples.

    IID: a uniform random split. DIRICHLET(alpha): for every label, client
    proportions drawn from Dirichlet(alpha) (Hsu et al. 2019; small alpha means
    strong label skew). SHARDS: examples sorted by label, cut into
    ``clients * shards_per_client`` shards, each client gets that many (McMahan
    et al. 2017). Every example goes to exactly one client; every client gets at
    least one example.
    """
    if clients < 1 or clients > len(labels):
        raise ValueError(f"cannot split {len(labels)} examples over {clients} clients")
    rng = np.random.default_rng(seed)  # noqa: csprng-ok (experiment partition)
    if scheme is Partition.IID:
        parts = np.array_split(rng.permutation(len(labels)), clients)
    elif scheme is Partition.SHARDS:
        order = np.argsort(labels, kind="stable")
        shards = np.array_split(order, clients * shards_per_client)
        picks = rng.permutation(len(shards))
        parts = [np.concatenate([shards[s] for s in picks[c::clients]]).astype(np.int64) for c in range(clients)]
        parts = _rebalance_empty(parts, rng)
    else:
        if not alpha > 0:
            raise ValueError("alpha must be positive")
        buckets: list[list[int]] = [[] for _ in range(clients)]
        for label in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == label))
            proportions = rng.dirichlet(np.full(clients, alpha))
            cuts = (np.cumsum(proportions)[:-1] * len(members)).astype(int)
            for c, chunk in enumerate(np.split(members, cuts)):
                buckets[c].extend(chunk.tolist())
        parts = _rebalance_empty([np.array(b, dtype=np.int64) for b in buckets], rng)
    return [np.sort(p).astype(np.int64) for p in parts]


def _rebalance_empty(parts: Sequence[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    # A client left empty by a very skewed draw (or by more shards than examples) takes one
    # example from the largest client.
    lists = list(parts)
    for index, part in enumerate(lists):
        if part.size == 0:
            donor = int(np.argmax([p.size for p in lists]))
            take = int(rng.integers(lists[donor].size))
            lists[index] = lists[donor][take : take + 1]
            lists[donor] = np.delete(lists[donor], take)
    return lists
