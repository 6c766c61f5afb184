"""Identity files for SecAgg's active-adversary variant on Flower: one per client device, and the public registry.

Each client's file holds its Ed25519 signing key, the digests of every round
configuration it has joined and the registry it trusts (mode 0600, on its own
device); the registry (every client's verification key) goes to the server and
to every client, out of band. A client refuses a round whose registry gives any
cohort member another key. A client must persist ``joined``: a client that forgot it could be
made to join one configuration twice and sign two survivor sets
(:class:`~fedsecure.protocols.ClientIdentity`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from ..._errors import ConfigurationError
from ..._io import atomic_write_private, atomic_write_text
from ...crypto import SigningKey
from ...protocols import ClientIdentity, IdentityKeys

__all__ = ["write_identities", "load_registry", "load_identity", "save_identity"]

_FORMAT = "fedsecure/identity/v1"
_REGISTRY_FORMAT = "fedsecure/identity-registry/v1"


def write_identities(directory: str | os.PathLike[str], clients: Iterable[int]) -> Path:
    """Create ``client-<id>.identity.json`` for each client and ``registry.json``; returns the registry's path.

    In a real deployment each client creates its own file on its device and only sends its verification key to
    whoever assembles the registry; this helper does both on one machine, for loopback runs and tests.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    keys = {int(client): SigningKey.generate() for client in clients}
    registry = IdentityKeys({client: key.public_bytes for client, key in keys.items()})
    for client, key in keys.items():
        # Each client keeps the registry it trusts beside its key: a round's registry must agree with it.
        save_identity(directory / f"client-{client}.identity.json", client, ClientIdentity(key, registry=registry))
    path = directory / "registry.json"
    atomic_write_text(path, json.dumps({"format": _REGISTRY_FORMAT, "verify_keys": _registry_json(registry)},
                                       indent=1) + "\n")
    return path


def _registry_json(registry: IdentityKeys) -> dict[str, str]:
    return {str(c): key.hex() for c, key in sorted(registry.verify_keys.items())}


def load_registry(path: str | os.PathLike[str]) -> IdentityKeys:
    """Every client's verification key, from ``registry.json``."""
    try:
        data = json.loads(Path(path).read_text())
        if data.get("format") != _REGISTRY_FORMAT:
            raise ValueError("wrong format")
        return IdentityKeys({int(c): bytes.fromhex(k) for c, k in data["verify_keys"].items()})
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ConfigurationError(f"cannot read the identity registry {path}: {error}", parameter="identities") from None


def load_identity(path: str | os.PathLike[str]) -> tuple[int, ClientIdentity]:
    """This client's id and identity (with every configuration it joined, and the registry it trusts)."""
    try:
        data = json.loads(Path(path).read_text())
        if data.get("format") != _FORMAT:
            raise ValueError("wrong format")
        key = SigningKey.from_private_bytes(bytes.fromhex(data["signing_key"]))
        registry = IdentityKeys({int(c): bytes.fromhex(k) for c, k in data["registry"].items()})
        return int(data["client"]), ClientIdentity(key, (bytes.fromhex(d) for d in data["joined"]), registry=registry)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ConfigurationError(f"cannot read the identity file {path} ({type(error).__name__}: {error}); "
                                 "regenerate it with fedsecure.runtime.flower.write_identities",
                                 parameter="fedsecure-identity") from None


def save_identity(path: str | os.PathLike[str], client: int, identity: ClientIdentity) -> None:
    """Write the identity file atomically, readable by its owner only, with the registry the identity trusts."""
    data = {"format": _FORMAT, "client": client, "signing_key": identity.private_bytes().hex(),
            "joined": sorted(d.hex() for d in identity.joined), "registry": _registry_json(identity.registry)}
    atomic_write_private(Path(path), json.dumps(data))
