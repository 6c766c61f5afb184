"""The Python API's mistakes a user makes first: each gets a ConfigurationError naming the argument, never an
AttributeError from deep inside; the string forms of enums are accepted where a user would write them."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fedsecure import ConfigurationError, EncodingConfig, ProtocolKind, RoundConfig
from fedsecure.runtime import Simulator

ENCODING = EncodingConfig.fit_scale(dimension=10, clients=4, clip=5.0)


def test_protocols_are_accepted_as_the_strings_users_write() -> None:
    config = RoundConfig.create(protocol="secagg+", clients=range(4), encoding=ENCODING)
    assert config.protocol is ProtocolKind.SECAGG_PLUS
    with pytest.raises(ConfigurationError, match="protocol must be one of") as error:
        RoundConfig.create(protocol="secagg++", clients=range(4), encoding=ENCODING)
    assert error.value.parameter == "protocol"


@pytest.mark.parametrize("updates, fragment", [
    ({c: np.zeros(10) for c in range(4)}, "client 0 is a ndarray, not an EncodedUpdate"),
    ({}, "client 0 is missing"),
])
def test_the_simulator_names_an_update_that_is_not_encoded(updates: dict[int, Any], fragment: str) -> None:
    config = RoundConfig.create(protocol=ProtocolKind.SECAGG, clients=range(4), encoding=ENCODING)
    with pytest.raises(ConfigurationError, match=fragment) as error:
        Simulator(config, updates)
    assert error.value.parameter == "updates"


def _federation(**changes: Any) -> Any:
    torch = pytest.importorskip("torch")
    from fedsecure.fl import FederatedClient, Federation

    options: dict[str, Any] = {"model": torch.nn.Linear(2, 1), "train": lambda model, data: None,
                               "clients": [FederatedClient(i, None, 10) for i in range(3)]}
    return Federation(**(options | changes))


def test_federation_arguments_are_checked_by_name() -> None:
    from fedsecure.fl import FederatedClient

    assert _federation(protocol="secagg").protocol is ProtocolKind.SECAGG
    cases = [({"model": object()}, "model", "has no state_dict"),
             ({"clients": [FederatedClient(0, None, 1), FederatedClient(0, None, 1)]}, "clients", "repeated: [0]"),
             ({"protocol": "secure"}, "protocol", "protocol must be one of")]
    for changes, parameter, fragment in cases:
        with pytest.raises(ConfigurationError) as error:
            _federation(**changes)
        assert error.value.parameter == parameter and fragment in str(error.value)
    for bad in (-5, 2.5, True):
        with pytest.raises(ConfigurationError, match="num_examples of client 0") as error:
            FederatedClient(0, None, bad)  # type: ignore[arg-type]
        assert error.value.parameter == "num_examples"
