"""fedsecure on Flower's deployment engine (``pip install 'fedsecure[flower]'``).

:class:`FlowerTransport` drives fedsecure's server sessions over a Flower
``Grid``; :func:`client_app` is the matching ``ClientApp``. The apps in
:mod:`fedsecure.runtime.flower.apps` run ``fedsecure simulate``'s job and
federated training on a SuperLink and SuperNodes or in Flower's simulation
engine; :class:`LocalGrid` runs them in one process for tests and benchmarks.
See ``docs/deploy-flower.md``.
"""

from ._client import (
    SECURE_PROTOCOLS,
    ClientJob,
    ClientPolicy,
    ClientUpdate,
    FedSecureClient,
    client_app,
    client_id_of,
    synthetic_job,
)
from ._common import MESSAGE_TYPE, RECORD, STATE_RECORD
from ._identity import (
    identity_from_node_config,
    load_identity,
    load_registry,
    save_identity,
    save_identity_to_node_config,
    write_identities,
)
from ._local import LocalGrid
from ._server import ClientError, FlowerTransport, encoding_record

__all__ = [
    "MESSAGE_TYPE",
    "RECORD",
    "SECURE_PROTOCOLS",
    "STATE_RECORD",
    "ClientError",
    "ClientJob",
    "ClientPolicy",
    "ClientUpdate",
    "FedSecureClient",
    "FlowerTransport",
    "LocalGrid",
    "client_app",
    "client_id_of",
    "encoding_record",
    "identity_from_node_config",
    "load_identity",
    "load_registry",
    "save_identity",
    "save_identity_to_node_config",
    "write_identities",
    "synthetic_job",
]
