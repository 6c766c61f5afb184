"""Every Paillier claim in SECURITY.md, attacked: each attack fails against the protective configuration and,
where fedsecure has a weaker one, succeeds there (the victim's update is recovered to quantisation).

The attacks are :mod:`fedsecure.audit`'s own (``fedsecure audit --attack ... --protocol paillier[-threshold]``).
"""

from __future__ import annotations

import pytest

from fedsecure.audit._attacks import attack_names, run_attack
from fedsecure.protocols import ProtocolKind

CASES = [(ProtocolKind.PAILLIER, name) for name in attack_names(ProtocolKind.PAILLIER)] + [
    (ProtocolKind.PAILLIER_THRESHOLD, name) for name in attack_names(ProtocolKind.PAILLIER_THRESHOLD)]


@pytest.mark.parametrize("clients", [5, 6, 10])
@pytest.mark.parametrize(("protocol", "name"), CASES, ids=lambda v: getattr(v, "value", v))
def test_paillier_attack_fails_when_protected_and_succeeds_when_weakened(protocol: ProtocolKind, name: str,
                                                                         clients: int) -> None:
    result = run_attack(name, protocol=protocol, clients=clients)
    assert result.protected.defeated is False, result.protected.detail
    if name == "paillier-key-substitution":
        assert result.weakened.defeated is None and "no weakened configuration" in result.weakened.detail
    else:
        assert result.weakened.defeated is True, result.weakened.detail
        assert result.weakened.reconstruction_error is not None and result.weakened.reconstruction_error < 1e-3


def test_every_paillier_arrangement_has_its_attacks() -> None:
    assert set(attack_names(ProtocolKind.PAILLIER)) == {"curious-key-holder", "paillier-replay",
                                                        "paillier-key-substitution"}
    assert set(attack_names(ProtocolKind.PAILLIER_THRESHOLD)) == {"threshold-split", "paillier-key-substitution"}
    with pytest.raises(ValueError, match="does not target"):
        run_attack("threshold-split", protocol=ProtocolKind.PAILLIER)


def test_the_curious_key_holder_can_only_reach_the_mean() -> None:
    result = run_attack("curious-key-holder", protocol=ProtocolKind.PAILLIER, clients=6)
    assert "['aggregate']" in result.protected.detail  # no contributions field in what it receives
    assert result.protected.reconstruction_error is not None and result.protected.reconstruction_error > 0.3


def test_the_replayed_ciphertext_is_refused_by_its_proof_and_the_quorum() -> None:
    detail = run_attack("paillier-replay", protocol=ProtocolKind.PAILLIER, clients=10).protected.detail
    assert "plaintext-knowledge proof does not verify" in detail and "fewer approvals" in detail
