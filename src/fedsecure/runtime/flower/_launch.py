"""A Flower deployment on this machine, with real processes: one SuperLink and N SuperNodes on loopback.

This is what ``fedsecure flower`` and the end-to-end test start. Every process
runs in its own process group (``setsid``), so terminating a SuperNode also
ends the ClientApp and SuperExec processes it spawned, and :meth:`close`
stops everything within a bounded time (SIGTERM, then SIGKILL). Connections
are insecure (no TLS) and unauthenticated, which is fine on loopback only;
``docs/deploy-flower.md`` shows the flags for a deployment across machines.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["LocalDeployment", "APP_DIRECTORY", "toml_value"]

#: The Flower app shipped with fedsecure's examples (its components live in the installed package).
APP_DIRECTORY = Path(__file__).resolve().parents[4] / "examples" / "flower"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def toml_value(value: Any) -> str:
    """``value`` as a TOML literal, for ``--run-config`` and ``--node-config``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    # A TOML basic string: JSON's escapes are TOML's for every character a path or name holds.
    return json.dumps(str(value))


class LocalDeployment:
    """A SuperLink and SuperNodes under ``directory`` (logs, ``FLWR_HOME``). Use as a context manager.

    Every SuperNode gets ``partition-id``, ``num-partitions`` and ``node_config``; ``node_configs[partition]``
    adds to one node's (its credential files, say). Partitions beyond ``supernodes`` listed in ``node_configs``
    start as extra nodes (a Paillier key holder, say). ``python_path`` is prepended to every process's
    ``PYTHONPATH`` (where a user's job module lives).
    """

    def __init__(self, directory: str | os.PathLike[str], *, supernodes: int,
                 node_config: Mapping[str, Any] | None = None,
                 node_configs: Mapping[int, Mapping[str, Any]] | None = None, bin_dir: str | None = None,
                 python_path: Sequence[str] = ()) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.home = self.directory / "flwr-home"
        self.home.mkdir(exist_ok=True)
        self._supernodes = supernodes
        self._node_config = dict(node_config or {})
        self._node_configs = {int(k): dict(v) for k, v in (node_configs or {}).items()}
        self._bin = Path(bin_dir or Path(sys.executable).parent)
        self.port = _free_port()
        self._link: subprocess.Popen[bytes] | None = None
        self.nodes: dict[int, subprocess.Popen[bytes]] = {}
        self._runs: list[subprocess.Popen[bytes]] = []
        self._stopped: list[subprocess.Popen[bytes]] = []
        self._env = dict(os.environ, FLWR_HOME=str(self.home), FLWR_TELEMETRY_ENABLED="0",
                         FLWR_DISABLE_UPDATE_CHECK="1", PATH=f"{self._bin}{os.pathsep}{os.environ.get('PATH', '')}")
        if python_path:
            # Where a user's job module lives: every process of the run (ServerApp, ClientApps) imports it.
            self._env["PYTHONPATH"] = os.pathsep.join([*python_path, *filter(None, [os.environ.get("PYTHONPATH")])])
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "local-fedsecure"\n\n[superlink.local-fedsecure]\n'
            f'address = "127.0.0.1:{self.port}"\ninsecure = true\n')

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        executable = shutil.which(command[0], path=str(self._bin)) or command[0]
        log = open(self.directory / f"{name}.log", "ab")  # noqa: SIM115 (the child keeps it open)
        try:
            return subprocess.Popen([executable, *command[1:]], stdout=log, stderr=subprocess.STDOUT,
                                    env=self._env, cwd=self.directory, start_new_session=True)
        finally:
            log.close()

    def __enter__(self) -> LocalDeployment:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, *, timeout: float = 60.0) -> None:
        """Start the SuperLink, wait until it is healthy, then start the SuperNodes."""
        self._link = self._spawn("superlink", ["flower-superlink", "--insecure", "--host", "127.0.0.1", "--port",
                                               str(self.port), "--disable-runtime-dependency-installation"])
        deadline = time.monotonic() + timeout
        while True:
            if self._link.poll() is not None:
                raise RuntimeError(f"the SuperLink exited; see {self.directory / 'superlink.log'}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the SuperLink was not healthy within {timeout} s")
            time.sleep(0.2)
        for index in sorted(set(range(self._supernodes)) | self._node_configs.keys()):
            self.start_supernode(index)

    def start_supernode(self, partition: int, **node_config: Any) -> None:
        """Start (or restart) the SuperNode of ``partition``; a restarted one registers under a new node id."""
        config = (self._node_config | {"partition-id": partition, "num-partitions": self._supernodes}
                  | self._node_configs.get(partition, {}) | node_config)
        rendered = " ".join(f"{key}={toml_value(value)}" for key, value in config.items())
        self.nodes[partition] = self._spawn(
            f"supernode-{partition}",
            ["flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{self.port}", "--port",
             str(_free_port()), "--node-config", rendered])

    def stop_supernode(self, partition: int, *, kill: bool = False) -> None:
        """Terminate (SIGTERM) or kill (SIGKILL) a SuperNode and everything it started."""
        process = self.nodes.pop(partition)
        self._signal(process, signal.SIGKILL if kill else signal.SIGTERM)
        # Its group (the SuperExec and any ClientApp) is killed for good, and the process reaped, at close().
        self._stopped.append(process)

    def run(self, run_config: Mapping[str, Any], *, app: str | os.PathLike[str] = APP_DIRECTORY,
            log_name: str = "run") -> subprocess.Popen[bytes]:
        """Submit the app with ``flwr run`` (streaming its logs to ``<log_name>.log``); returns the process."""
        overrides = " ".join(f"{key}={toml_value(value)}" for key, value in run_config.items())
        process = self._spawn(log_name, ["flwr", "run", str(app), "local-fedsecure", "--stream",
                                         "--run-config", overrides])
        self._runs.append(process)
        return process

    def _own_processes(self) -> list[int]:
        """Processes (other than this one) whose environment names this deployment's ``FLWR_HOME``. Linux only."""
        marker = f"FLWR_HOME={self.home}".encode()
        found: list[int] = []
        proc = Path("/proc")
        if not proc.is_dir():
            return found
        for entry in proc.iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
        return found

    @staticmethod
    def _signal(process: subprocess.Popen[bytes], sig: int) -> None:
        try:
            os.killpg(process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def close(self, *, grace: float = 5.0) -> None:
        """Stop every process this deployment started: SIGTERM to each group, SIGKILL after ``grace`` seconds."""
        processes = [*self._runs, *self.nodes.values(), *self._stopped,
                     *([self._link] if self._link is not None else [])]
        for process in processes:
            self._signal(process, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in processes:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for process in processes:
            # The group may outlive its leader (a ServerApp or ClientApp child): kill whatever is left.
            self._signal(process, signal.SIGKILL)
            try:
                process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
        # The SuperLink starts its SuperExec (and through it the ServerApp) in sessions of their own, outside
        # every group above: they are found by this deployment's FLWR_HOME in their environment.
        for pid in self._own_processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self._runs, self.nodes, self._stopped, self._link = [], {}, [], None
