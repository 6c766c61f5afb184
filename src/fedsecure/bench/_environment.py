"""What every benchmark record carries about where and when it was measured."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["environment"]

_LIBRARIES = ("fedsecure", "numpy", "cryptography", "phe", "gmpy2", "flwr", "torch", "opacus")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _commit() -> str:
    # The commit of the checkout fedsecure runs from ("-dirty" if it has uncommitted changes), or "" when
    # fedsecure is installed from a wheel or sits inside some other repository.
    here = Path(__file__).resolve().parent
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, cwd=here,
                             timeout=10, check=False)
        if top.returncode != 0 or Path(top.stdout.strip(), "src", "fedsecure").resolve() != here.parent:
            return ""
        described = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=7"], capture_output=True,
                                   text=True, cwd=here, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return described.stdout.strip() if described.returncode == 0 else ""


def environment() -> dict[str, Any]:
    """The machine (CPU model, cores), the Python and library versions, the commit and the date (UTC).

    A library that is not installed is recorded as ``None``, so a record says
    which peers could have run.
    """
    versions: dict[str, str | None] = {}
    for name in _LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "commit": _commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
