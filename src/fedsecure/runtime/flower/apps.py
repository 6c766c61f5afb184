"""The built-in Flower apps: ``server_app`` and ``client`` (the ``[tool.flwr.app.components]`` of
``examples/flower/pyproject.toml``).

The ServerApp runs :func:`~fedsecure.runtime.flower._jobs.run_server_job` with
the run config; the ClientApp answers with :func:`auto_job` (generated vectors
or local training on the node's ``partition-id`` of ``num-partitions``) under
the policy its node config sets, with the credentials its node config names
(``fedsecure-identity``, ``fedsecure-paillier``, ``fedsecure-key-holder``: see ``_credentials``).
"""

from __future__ import annotations

from typing import Any

from flwr.serverapp import ServerApp

from ._answers import AnswerLedger, answer_ledger_path
from ._client import client_app
from ._credentials import (
    credentials_from_node_config,
    key_holder_from_node_config,
    key_holder_signer_from_node_config,
    lock_node_files,
    save_credentials_to_node_config,
    save_key_holder_to_node_config,
)
from ._jobs import auto_job, run_server_job

__all__ = ["server_app", "client", "auto_job"]

server_app = ServerApp()


@server_app.main()
def _main(grid: Any, context: Any) -> None:
    run_server_job(grid, context.run_config)


client = client_app(job=auto_job, credentials=credentials_from_node_config,
                    save_credentials=save_credentials_to_node_config, key_holder=key_holder_from_node_config,
                    save_key_holder=save_key_holder_to_node_config,
                    key_holder_signer=key_holder_signer_from_node_config, lock=lock_node_files,
                    answers=lambda context: AnswerLedger(answer_ledger_path(context)))
