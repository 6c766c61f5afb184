"""The end-to-end test's ClientApp: fedsecure's, plus a record of each client's encoded input.

The record is written to the node's own ``record-dir`` before the input is
masked. It is the plaintext input: a test harness's view, never a deployment's.
"""

from pathlib import Path
from typing import Any

import numpy as np

from fedsecure.runtime.flower import client_app
from fedsecure.runtime.flower.apps import auto_job


def _record(context: Any, round_id: int, client_id: int, encoded: Any) -> None:
    directory = Path(str(context.node_config["record-dir"]))
    directory.mkdir(parents=True, exist_ok=True)
    np.save(directory / f"round-{round_id}-client-{client_id}.npy", np.asarray(encoded.values))


app = client_app(job=auto_job, observe=_record)
