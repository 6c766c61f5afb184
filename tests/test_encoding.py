"""Tier 1-2: flattening, clipping, quantisation and the no-wrap guarantee."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedsecure import ConfigurationError, InvalidUpdateError
from fedsecure.encoding import ClipMode, EncodingConfig, Quantizer, Ring, VectorSpec, clip_l2, clip_per_coordinate

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32)


@given(st.lists(hnp.arrays(np.float32, hnp.array_shapes(max_dims=3, max_side=4), elements=finite), min_size=1,
                max_size=4))
def test_vector_spec_round_trips_lists_of_arrays(arrays: list[np.ndarray]) -> None:
    spec = VectorSpec.from_parameters(arrays)
    flat = spec.flatten(arrays)
    assert flat.shape == (sum(a.size for a in arrays),)
    rebuilt = spec.unflatten(flat)
    assert isinstance(rebuilt, list)
    for original, back in zip(arrays, rebuilt):
        assert back.dtype == original.dtype and back.shape == original.shape
        np.testing.assert_array_equal(back, original)


def test_vector_spec_round_trips_a_torch_state_dict() -> None:
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    state = model.state_dict()
    spec = VectorSpec.from_parameters(state)
    rebuilt = spec.unflatten(spec.flatten(state))
    assert isinstance(rebuilt, dict) and list(rebuilt) == list(state)
    for name, tensor in state.items():
        assert isinstance(rebuilt[name], torch.Tensor)
        assert rebuilt[name].dtype == tensor.dtype and rebuilt[name].shape == tensor.shape
        assert torch.equal(rebuilt[name], tensor)
    model.load_state_dict(rebuilt)


def test_vector_spec_refuses_mismatched_parameters() -> None:
    spec = VectorSpec.from_parameters({"w": np.zeros((2, 2)), "b": np.zeros(2)})
    with pytest.raises(InvalidUpdateError, match="names"):
        spec.flatten({"w": np.zeros((2, 2))})
    with pytest.raises(InvalidUpdateError, match="shape"):
        spec.flatten({"w": np.zeros((2, 3)), "b": np.zeros(2)})
    with pytest.raises(InvalidUpdateError):
        spec.unflatten(np.zeros(5))
    with pytest.raises(InvalidUpdateError):
        VectorSpec.from_parameters({"w": "not an array"})


@given(hnp.arrays(np.float64, st.integers(1, 50), elements=finite), st.floats(0.01, 100))
def test_clipping_bounds(vector: np.ndarray, bound: float) -> None:
    clipped = clip_l2(vector, bound)
    assert np.linalg.norm(clipped) <= bound * (1 + 1e-9)
    if np.linalg.norm(vector) <= bound:
        np.testing.assert_array_equal(clipped, vector)
    assert np.all(np.abs(clip_per_coordinate(vector, bound)) <= bound)


def _config(**overrides: object) -> EncodingConfig:
    values: dict[str, object] = dict(dimension=16, clients=10, clip=1.0, scale=2.0**16,
                                     clip_mode=ClipMode.PER_COORDINATE)
    values.update(overrides)
    return EncodingConfig(**values)  # type: ignore[arg-type]


@given(hnp.arrays(np.float64, 16, elements=st.floats(-1, 1)))
def test_quantisation_round_trip_error_is_below_one_step(vector: np.ndarray) -> None:
    quantizer = Quantizer(_config())
    decoded = quantizer.decode_sum(quantizer.encode(vector).values).total
    assert np.max(np.abs(decoded - vector)) <= 1 / 2.0**16 + 1e-12


def test_stochastic_rounding_is_unbiased() -> None:
    quantizer = Quantizer(_config(scale=1.0, clip=4.0))
    value = np.full(16, 0.3)
    total = sum(quantizer.decode_sum(quantizer.encode(value).values).total for _ in range(4000))
    mean = total / 4000
    # Bernoulli(0.3) rounding: the standard error of the mean of 4000 draws is about 0.0072.
    assert np.all(np.abs(mean - 0.3) < 0.04)
    assert set(np.unique(quantizer.decode_sum(quantizer.encode(value).values).total)) <= {0.0, 1.0}


def test_ring_size_is_derived_so_the_worst_case_sum_never_wraps() -> None:
    for clients, clip, scale, mode in [(10, 1.0, 2.0**16, ClipMode.PER_COORDINATE), (1000, 3.5, 1000.0, ClipMode.L2),
                                       (7, 0.01, 2.0**30, ClipMode.PER_COORDINATE)]:
        config = EncodingConfig(dimension=4, clients=clients, clip=clip, scale=scale, clip_mode=mode)
        quantizer = Quantizer(config)
        ring = config.ring
        for sign in (1.0, -1.0):
            extreme = quantizer.encode(np.full(4, sign * clip) if mode is ClipMode.PER_COORDINATE
                                       else np.array([sign * clip, 0, 0, 0]))
            total = np.zeros(4, dtype=ring.dtype)
            for _ in range(clients):
                np.add(total, extreme.values, out=total)
            ring.reduce(total)
            expected = sign * clients * math.ceil(clip * scale) / scale
            assert quantizer.decode_sum(total).total[0] == pytest.approx(expected)
        # One bit fewer would wrap at this extreme.
        assert 2 * clients * math.ceil(clip * scale) >= 2 ** (ring.bits - 1)


def test_a_ring_that_could_wrap_is_refused_naming_the_parameter() -> None:
    with pytest.raises(ConfigurationError) as info:
        _config(clients=1000, scale=2.0**30, ring_bits=32)
    assert info.value.parameter == "scale" and "lower `scale`" in str(info.value)
    with pytest.raises(ConfigurationError) as info:
        _config(clients=10**6, scale=2.0**50)
    assert info.value.parameter == "scale"
    with pytest.raises(ConfigurationError) as info:
        _config(ring_bits=80)
    assert info.value.parameter == "ring_bits"


def test_fit_scale_picks_the_largest_power_of_two_that_fits() -> None:
    config = EncodingConfig.fit_scale(dimension=8, clients=100, clip=1.0, ring_bits=32)
    assert config.ring.bits == 32
    with pytest.raises(ConfigurationError):
        EncodingConfig(dimension=8, clients=100, clip=1.0, scale=config.scale * 2, ring_bits=32)


@pytest.mark.parametrize("bad", [np.array([np.nan] + [0.0] * 15), np.array([np.inf] + [0.0] * 15), np.zeros(15),
                                 np.zeros((4, 4)), np.array(["a"] * 16), np.zeros(16, dtype=complex)])
def test_bad_updates_are_refused_before_masking(bad: np.ndarray) -> None:
    with pytest.raises(InvalidUpdateError):
        Quantizer(_config()).encode(bad)


def test_weighted_mean_keeps_weights_inside_the_vector() -> None:
    config = _config(max_weight=100, clip=2.0, scale=2.0**10)
    quantizer = Quantizer(config)
    assert config.vector_length == 17
    a, b = np.full(16, 1.0), np.full(16, -0.5)
    ring = config.ring
    total = np.zeros(17, dtype=ring.dtype)
    np.add(total, quantizer.encode(a, weight=30).values, out=total)
    np.add(total, quantizer.encode(b, weight=10).values, out=total)
    decoded = quantizer.decode_sum(ring.reduce(total))
    assert decoded.total_weight == 40
    np.testing.assert_allclose(decoded.mean(), (30 * a + 10 * b) / 40, atol=1e-3)
    with pytest.raises(InvalidUpdateError):
        quantizer.encode(a, weight=101)
    with pytest.raises(InvalidUpdateError):
        quantizer.encode(a)
    with pytest.raises(InvalidUpdateError):
        Quantizer(_config()).encode(a, weight=3)


@given(st.integers(2, 64), st.lists(st.integers(-(2**62), 2**62), min_size=1, max_size=20))
def test_ring_signed_round_trip(bits: int, values: list[int]) -> None:
    ring = Ring(bits)
    half = 1 << (bits - 1)
    values = [v % (1 << bits) - half if not -half <= v < half else v for v in values]
    encoded = ring.from_signed(np.array(values, dtype=np.int64))
    assert ring.contains(encoded)
    assert ring.to_signed(encoded).tolist() == values


@pytest.mark.parametrize("bits", range(2, 65))
def test_ring_signed_extremes_for_every_width(bits: int) -> None:
    ring = Ring(bits)
    half = 1 << (bits - 1)
    values = np.array([-half, -half + 1, -1, 0, 1, half - 1], dtype=np.int64)
    encoded = ring.from_signed(values)
    assert encoded.dtype == ring.dtype and ring.contains(encoded)
    assert ring.to_signed(encoded).tolist() == values.tolist()
