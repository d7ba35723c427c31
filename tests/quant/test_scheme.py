"""Scheme invariants as properties."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgec.quant import scheme as schemes

floats = st.floats(-1e3, 1e3, allow_nan=False, width=32)


@given(st.sampled_from(list(schemes.SCHEMES)), floats, floats)
def test_zero_is_exact_and_zero_points_are_0_where_symmetric(name, a, b):
    scheme = schemes.get(name)
    lo, hi = min(a, b), max(a, b)
    scale, zero_point = schemes.activation_params(lo, hi, scheme)
    qmin, qmax = scheme.qrange
    assert scale > 0 and qmin <= int(zero_point) <= qmax
    assert np.asarray(zero_point).dtype == scheme.np_dtype
    if scheme.symmetric_activations:
        assert int(zero_point) == 0
    # 0.0 maps to an integer exactly: padding and ReLU zeros cost no error.
    assert (0.0 / scale + int(zero_point)) == int(zero_point)


@given(st.sampled_from(list(schemes.SCHEMES)), floats, floats, st.integers(0, 2**16))
@settings(max_examples=200)
def test_quantize_dequantize_round_trip_within_half_a_step(name, a, b, seed):
    scheme = schemes.get(name)
    lo, hi = min(a, b, 0.0), max(a, b, 0.0)
    scale, zero_point = schemes.activation_params(lo, hi, scheme)
    qmin, qmax = scheme.qrange
    # Values inside the representable range [(qmin - zp) * s, (qmax - zp) * s].
    low, high = (qmin - int(zero_point)) * float(scale), (qmax - int(zero_point)) * float(scale)
    x = np.random.default_rng(seed).uniform(low, high, 1000).astype(np.float32)
    q = np.clip(np.round(x / scale) + int(zero_point), qmin, qmax)
    restored = (q - int(zero_point)) * scale
    # float32 arithmetic adds a few ulps on top of the half step
    assert np.all(np.abs(restored - x) <= scale / 2 + 4 * np.finfo(np.float32).eps * np.abs(x) + 1e-12)


@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=4, max_side=6), elements=floats), st.booleans())
def test_weights_are_symmetric_int8_within_127(weights, per_channel):
    q, scale = schemes.quantize_weights(weights, 0 if per_channel else None)
    assert q.dtype == np.int8 and q.min() >= -127 and q.max() <= 127
    assert scale.shape == ((weights.shape[0],) if per_channel else ())
    shaped = scale.reshape([-1] + [1] * (weights.ndim - 1)) if per_channel else scale
    assert np.all(np.abs(q * shaped - weights) <= shaped / 2 * (1 + 1e-5) + 1e-30)


@given(hnp.arrays(np.float32, st.integers(1, 16), elements=floats), st.floats(1e-4, 1.0), st.integers(0, 2**16))
def test_bias_scale_is_input_scale_times_weight_scale(bias, input_scale, seed):
    weight_scale = np.random.default_rng(seed).uniform(1e-4, 1.0, bias.shape).astype(np.float32)
    # what the quantize pass does first, so no bias saturates int32
    weight_scale = np.maximum(weight_scale, schemes.bias_safe_weight_scale(bias, input_scale)).astype(np.float32)
    q, scale = schemes.quantize_bias(bias, np.float32(input_scale), weight_scale)
    assert q.dtype == np.int32
    np.testing.assert_array_equal(scale, (np.float32(input_scale) * weight_scale).astype(np.float32))
    assert np.all(np.abs(q.astype(np.int64)) < 2**31 - 1)
    assert np.all(np.abs(q * scale.astype(np.float64) - bias) <= scale / 2 * (1 + 1e-5) + 1e-30)


def test_tflite_fixes_softmax_logistic_and_tanh_outputs():
    fixed = schemes.get("tflite").fixed_outputs
    assert fixed["Softmax"] == (1 / 256, -128) and fixed["Sigmoid"] == (1 / 256, -128)
    assert fixed["Tanh"] == (1 / 128, 0)


def test_subnormal_weights_get_a_nonzero_scale():
    from edgec.quant.scheme import quantize_weights

    w = np.array([[1e-44, -2e-44], [0.0, 0.0], [0.5, -1.0]], np.float32)
    for axis in (None, 0):
        q, scale = quantize_weights(w, axis)
        assert np.all(scale > 0) and np.all(np.isfinite(scale))
        assert np.all(np.abs(q.astype(np.float64) * scale.reshape(-1, 1) - w) <= scale.reshape(-1, 1) / 2 + 1e-45)
