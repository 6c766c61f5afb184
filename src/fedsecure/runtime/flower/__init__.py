"""fedsecure on Flower's deployment engine (``pip install 'fedsecure[flower]'``).

:class:`FlowerTransport` drives fedsecure's server sessions over a Flower
``Grid``; :func:`client_app` is the matching ``ClientApp``. The apps in
:mod:`fedsecure.runtime.flower.apps` run ``fedsecure simulate``'s job and
federated training on a SuperLink and SuperNodes or in Flower's simulation
engine; :class:`LocalGrid` runs them in one process for tests and benchmarks.
See ``docs/deploy-flower.md``.
"""

from ._answers import AnswerLedger, answer_ledger_path
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
from ._credentials import (
    credentials_from_node_config,
    key_holder_from_node_config,
    lock_node_files,
    save_credentials_to_node_config,
    save_key_holder_to_node_config,
)
from ._identity import load_identity, load_registry, save_identity, write_identities
from ._paillier import (
    load_key_holder,
    load_paillier_credentials,
    load_paillier_keys,
    save_key_holder,
    save_paillier_credentials,
    write_paillier_deployment,
)
from ._local import LocalGrid
from ._server import ClientError, FlowerTransport, encoding_record

__all__ = [
    "AnswerLedger",
    "answer_ledger_path",
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
    "credentials_from_node_config",
    "key_holder_from_node_config",
    "load_identity",
    "lock_node_files",
    "load_key_holder",
    "load_paillier_credentials",
    "load_paillier_keys",
    "load_registry",
    "save_credentials_to_node_config",
    "save_identity",
    "save_key_holder",
    "save_key_holder_to_node_config",
    "save_paillier_credentials",
    "write_identities",
    "write_paillier_deployment",
    "synthetic_job",
]
