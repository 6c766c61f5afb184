"""Paillier deployments on Flower: the files each party keeps, written once, read at every message.

- ``paillier-public.json`` (the server, and anyone): the public key, every client's verification key, the number
  of colluding clients tolerated, and for threshold decryption the key holders, the threshold and the holders'
  verification keys.
- ``client-<id>.paillier.json`` (each client's own device, mode 0600): its signing key, its key share if any,
  the rounds it has partially decrypted, and the deployment's public keys as it received them at setup (it refuses
  a round under any other key, registry, colluder bound or holder arrangement).
- ``key-holder.json`` (the separate decryptor's device, mode 0600): the private key, the registry, the colluder
  bound, the rounds it has decrypted, and an Ed25519 key whose public half is in ``paillier-public.json``: with it
  the key holder shows the server, at registration, that it is the registered one.

The rounds already decrypted must persist: each party refuses a second decryption of a round, which is what stops a
server from getting two different sums of one round decrypted. Flower runs every message in a fresh process, so
they are written back after every decryption.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import phe

from ..._errors import ConfigurationError, CryptoError
from ..._io import atomic_write_private
from ...crypto import PaillierDecryptor, PaillierKeyShare, SigningKey
from ...protocols import PaillierCredentials, PaillierDeployment, PaillierKeyHolder, PaillierKeys

__all__ = ["write_paillier_deployment", "load_paillier_keys", "load_paillier_credentials", "save_paillier_credentials",
           "load_key_holder", "save_key_holder", "load_key_holder_signer", "load_key_holder_verify_key"]

_PUBLIC = "fedsecure/paillier-public/v2"
_CLIENT = "fedsecure/paillier-client/v2"
_HOLDER = "fedsecure/paillier-key-holder/v2"


def _write_private(path: Path, data: dict[str, Any]) -> None:
    atomic_write_private(path, json.dumps(data))


def _read(path: str | os.PathLike[str], kind: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ConfigurationError(f"cannot read {path}: {type(error).__name__}", parameter="paillier") from None
    if not isinstance(data, dict) or data.get("format") != kind:
        raise ConfigurationError(f"{path} is not a {kind} file", parameter="paillier")
    return data


def write_paillier_deployment(directory: str | os.PathLike[str], deployment: PaillierDeployment) -> Path:
    """Write every party's file of ``deployment`` under ``directory``; returns the public file's path.

    For a real deployment each file goes to its owner's device only (and a dealer for threshold keys is trusted
    to forget the shares, as SECURITY.md says); on one machine this is what loopback runs and tests use.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    public = {"format": _PUBLIC} | _keys_json(deployment.keys)
    signer = None
    if deployment.key_holder is not None:
        # The key holder's own Ed25519 key: it proves at registration that it is the registered key holder.
        signer = SigningKey.generate()
        public["key_holder_verify_key"] = signer.public_bytes.hex()
    path = directory / "paillier-public.json"
    path.write_text(json.dumps(public, indent=1) + "\n")
    for client, credentials in deployment.credentials.items():
        save_paillier_credentials(directory / f"client-{client}.paillier.json", client, credentials)
    if deployment.key_holder is not None and signer is not None:
        save_key_holder(directory / "key-holder.json", deployment.key_holder, signer)
    return path


def load_key_holder_verify_key(path: str | os.PathLike[str]) -> bytes | None:
    """The registered key holder's Ed25519 verification key, from ``paillier-public.json`` (None for threshold)."""
    value = _read(path, _PUBLIC).get("key_holder_verify_key")
    return bytes.fromhex(value) if isinstance(value, str) else None


def _keys_json(keys: PaillierKeys) -> dict[str, Any]:
    return {"n": hex(keys.public_key.n), "signing_keys": {str(c): k.hex() for c, k in keys.signing_keys.items()},
            "colluders": keys.colluders, "key_holders": list(keys.key_holders),
            "decryption_threshold": keys.decryption_threshold, "verification_base": hex(keys.verification_base),
            "verification_keys": [hex(v) for v in keys.verification_keys], "insecure": keys.insecure}


def _keys_from(data: dict[str, Any]) -> PaillierKeys:
    return PaillierKeys(public_key=phe.PaillierPublicKey(int(data["n"], 16)),
                        signing_keys={int(c): bytes.fromhex(k) for c, k in data["signing_keys"].items()},
                        key_holders=tuple(int(c) for c in data["key_holders"]),
                        decryption_threshold=int(data["decryption_threshold"]), insecure=bool(data["insecure"]),
                        colluders=int(data["colluders"]), verification_base=int(data["verification_base"], 16),
                        verification_keys=tuple(int(v, 16) for v in data["verification_keys"]))


def load_paillier_keys(path: str | os.PathLike[str]) -> PaillierKeys:
    """The deployment's public keys, from ``paillier-public.json``."""
    data = _read(path, _PUBLIC)
    try:
        return _keys_from(data)
    except (KeyError, ValueError, TypeError, CryptoError) as error:
        raise ConfigurationError(f"{path}: {type(error).__name__}: {error}", parameter="paillier") from None


def save_paillier_credentials(path: str | os.PathLike[str], client: int, credentials: PaillierCredentials) -> None:
    share = credentials.key_share
    data = {"format": _CLIENT, "client": client, "deployment": _keys_json(credentials.trusted_keys),
            "signing_key": credentials.signing_key.private_bytes().hex(),
            "decrypted_rounds": sorted(credentials.decrypted_rounds),
            "key_share": None if share is None else {"holder": share.holder, "secret": hex(share.secret_exponent())}}
    _write_private(Path(path), data)


def load_paillier_credentials(path: str | os.PathLike[str]) -> tuple[int, PaillierCredentials]:
    """A client's id and Paillier credentials from its ``client-<id>.paillier.json``."""
    data = _read(path, _CLIENT)
    try:
        trusted = _keys_from(data["deployment"])
        share = None
        if data["key_share"] is not None:
            entry = data["key_share"]
            share = PaillierKeyShare(trusted.threshold_key(), int(entry["holder"]), int(entry["secret"], 16))
        credentials = PaillierCredentials(SigningKey.from_private_bytes(bytes.fromhex(data["signing_key"])), trusted,
                                          share, decrypted_rounds=(int(r) for r in data["decrypted_rounds"]))
        return int(data["client"]), credentials
    except (KeyError, ValueError, TypeError, CryptoError) as error:
        raise ConfigurationError(f"{path}: {type(error).__name__}: {error}; regenerate it with "
                                 "write_paillier_deployment", parameter="fedsecure-paillier") from None


def save_key_holder(path: str | os.PathLike[str], holder: PaillierKeyHolder, signer: SigningKey | None = None) -> None:
    """Write the key holder's file; ``signer`` is its registration key (kept from the file if not given)."""
    if signer is None:
        signer = load_key_holder_signer(path)
    private = holder.decryptor.private_key
    data = {"format": _HOLDER, "signing_key": signer.private_bytes().hex(), "n": hex(private.public_key.n), "p": hex(private.p), "q": hex(private.q),
            "signing_keys": {str(c): k.hex() for c, k in holder.signing_keys.items()},
            "colluders": holder.colluders, "decrypted_rounds": sorted(holder.decrypted_rounds)}
    _write_private(Path(path), data)


def load_key_holder(path: str | os.PathLike[str]) -> PaillierKeyHolder:
    """The separate decryptor from its ``key-holder.json``."""
    data = _read(path, _HOLDER)
    try:
        public = phe.PaillierPublicKey(int(data["n"], 16))
        private = phe.PaillierPrivateKey(public, int(data["p"], 16), int(data["q"], 16))
        return PaillierKeyHolder(PaillierDecryptor(private),
                                 signing_keys={int(c): bytes.fromhex(k) for c, k in data["signing_keys"].items()},
                                 colluders=int(data["colluders"]),
                                 decrypted_rounds=(int(r) for r in data["decrypted_rounds"]))
    except (KeyError, ValueError, TypeError) as error:
        raise ConfigurationError(f"{path}: {type(error).__name__}: {error}; regenerate it with "
                                 "write_paillier_deployment", parameter="fedsecure-key-holder") from None


def load_key_holder_signer(path: str | os.PathLike[str]) -> SigningKey:
    """The key holder's registration key, from its ``key-holder.json``."""
    data = _read(path, _HOLDER)
    try:
        return SigningKey.from_private_bytes(bytes.fromhex(data["signing_key"]))
    except (KeyError, ValueError, TypeError) as error:
        raise ConfigurationError(f"{path}: {type(error).__name__}: {error}; regenerate it with "
                                 "write_paillier_deployment", parameter="fedsecure-key-holder") from None
