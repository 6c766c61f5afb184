"""Local (record-level) DP: DP-SGD inside each client's own training loop, through Opacus.

The user's loop stays as it is, with the one line Opacus itself asks for: the
training function takes a ``privatize`` argument and passes its model,
optimizer and data loader through it::

    def train(model, loader, privatize):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        model, optimizer, loader = privatize(model, optimizer, loader)
        for x, y in loader: ...

Each client keeps one Opacus ``PrivacyEngine`` for the whole run, so its
accountant composes every step it ever took; a client that sat out a round took
no step and spent nothing.

Noise source: Opacus' cryptographically secure mode needs ``torchcsprng``,
which no registry offers for current torch. DP-SGD noise therefore comes from a
torch generator seeded with 64 bits from the OS for every ``privatize`` call:
unpredictable, but not a CSPRNG (SECURITY.md).
"""

from __future__ import annotations

import contextlib
import secrets
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ._accounting import Accountant

__all__ = ["LocalPrivacy", "local_noise_multiplier", "opacus_training_warnings_silenced"]

# What Opacus and torch say on every client although nothing is wrong. Opacus warns that its secure mode is off on
# every engine (SECURITY.md says so, and why). Its per-sample gradient hooks are full backward hooks, and torch warns
# when one fires on a module whose inputs do not require gradients (a model's first layer, always): Opacus reads
# only the gradients of the module's outputs, so nothing is lost.
_TRAINING_NOISE = ("Secure RNG turned off",
                   "Full backward hook is firing when gradients are computed with respect to module outputs")


@contextlib.contextmanager
def opacus_training_warnings_silenced() -> Iterator[None]:
    """Silence, around local DP-SGD training, the two warnings above, and nothing else."""
    with warnings.catch_warnings():
        for message in _TRAINING_NOISE:
            warnings.filterwarnings("ignore", message=message)
        yield


@contextlib.contextmanager
def _prv_warnings_silenced() -> Iterator[None]:
    # Opacus' PRV accountant takes the log of a zero it then discards, and sizes its domain with an RDP bound
    # whose best order is the largest it tries when the search probes a tiny noise; neither touches the result.
    with warnings.catch_warnings(), np.errstate(divide="ignore"):
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        yield

Privatize = Callable[[Any, Any, Any], tuple[Any, Any, Any]]


def local_noise_multiplier(*, target_epsilon: float, delta: float, sample_rate: float, steps: int,
                           accountant: Accountant = Accountant.PRV) -> float:
    """The DP-SGD noise multiplier for ``steps`` steps at ``sample_rate`` (Opacus' calibration)."""
    from opacus.accountants.utils import get_noise_multiplier

    with _prv_warnings_silenced():
        return float(get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta, sample_rate=sample_rate,
                                          steps=steps, accountant=accountant.value))


class LocalPrivacy:
    """One Opacus ``PrivacyEngine`` per client, kept across rounds."""

    def __init__(self, *, noise_multiplier: float, max_grad_norm: float, accountant: Accountant = Accountant.PRV) -> None:
        self.noise_multiplier = noise_multiplier
        self.max_grad_norm = max_grad_norm
        self._accountant = accountant
        self._engines: dict[int, Any] = {}

    def privatizer(self, client_id: int) -> Privatize:
        """The ``privatize(model, optimizer, data_loader)`` function to hand to ``client_id``'s training."""
        from opacus import PrivacyEngine

        import torch

        engine = self._engines.get(client_id)
        if engine is None:
            with opacus_training_warnings_silenced():
                engine = self._engines[client_id] = PrivacyEngine(accountant=self._accountant.value)

        def privatize(model: Any, optimizer: Any, data_loader: Any) -> tuple[Any, Any, Any]:
            generator = torch.Generator().manual_seed(secrets.randbits(63))
            return engine.make_private(module=model, optimizer=optimizer, data_loader=data_loader,  # type: ignore[no-any-return]
                                       noise_multiplier=self.noise_multiplier, max_grad_norm=self.max_grad_norm,
                                       poisson_sampling=True, noise_generator=generator)

        return privatize

    def state(self) -> dict[int, list[list[float]]]:
        """Each client's accountant history, for checkpoints."""
        return {c: [list(map(float, step)) for step in e.accountant.history] for c, e in self._engines.items()}

    def load_state(self, state: dict[int, list[list[float]]]) -> None:
        """Restore what :meth:`state` saved, so a resumed run keeps composing every client's privacy loss."""
        for client, history in state.items():
            self.privatizer(int(client))
            self._engines[int(client)].accountant.history = [(s[0], s[1], int(s[2])) for s in history]

    def epsilon(self, client_id: int, delta: float) -> float:
        """``client_id``'s record-level epsilon so far, from its Opacus accountant."""
        engine = self._engines.get(client_id)
        if engine is None or not engine.accountant.history:
            return 0.0
        with _prv_warnings_silenced():
            return float(engine.get_epsilon(delta))
