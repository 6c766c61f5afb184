"""The built-in Flower apps: ``server_app`` and ``client`` (the ``[tool.flwr.app.components]`` of
``examples/flower/pyproject.toml``).

The ServerApp runs :func:`~fedsecure.runtime.flower._jobs.run_server_job` with
the run config; the ClientApp answers with :func:`auto_job` (generated vectors
or local training on the node's ``partition-id`` of ``num-partitions``) under
the policy its node config sets, with the identity file its node config names
(``fedsecure-identity``, for the active-adversary variant).
"""

from __future__ import annotations

from typing import Any

from flwr.serverapp import ServerApp

from ._client import client_app
from ._identity import identity_from_node_config, save_identity_to_node_config
from ._jobs import auto_job, run_server_job

__all__ = ["server_app", "client", "auto_job"]

server_app = ServerApp()


@server_app.main()
def _main(grid: Any, context: Any) -> None:
    run_server_job(grid, context.run_config)


client = client_app(job=auto_job, identity=identity_from_node_config, save_identity=save_identity_to_node_config)
