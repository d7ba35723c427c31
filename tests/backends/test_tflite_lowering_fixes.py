"""Lowering bugs and refusals the ONNX node-test conformance run exposed, each checked against onnxruntime."""

import numpy as np
import pytest
from onnx import TensorProto

litert = pytest.importorskip("ai_edge_litert.interpreter", reason="pip install 'edgec[tflite]'")

from edgec.backends.tflite.lowering import lower  # noqa: E402
from edgec.errors import EdgecError  # noqa: E402
from tests.backends.test_tflite_lowering import compare  # noqa: E402
from tests.backends.test_tflite_ops_more import operators  # noqa: E402
from tests.helpers import GraphBuilder, feeds_for, run  # noqa: E402


def pool(op, shape=(1, 2, 7, 8), after_conv=False, **attrs):
    g = GraphBuilder()
    x = g.input("x", list(shape))
    if after_conv:
        x = g.op("Conv", [x, g.weight(shape[1], shape[1], 1, 1)])
    g.output(g.op(op, [x], **attrs))
    return g.model()


@pytest.mark.parametrize(
    "attrs",
    [
        {"kernel_shape": [3, 3], "pads": [0, 1, 2, 1]},  # count_include_pad=0: the divisor shrinks at borders
        {"kernel_shape": [5, 5], "pads": [2, 2, 2, 2]},  # what TFLite's SAME pads: no explicit PAD
        {"kernel_shape": [3, 2], "strides": [2, 2], "ceil_mode": 1},
        {"kernel_shape": [3, 3], "strides": [2, 3], "pads": [1, 1, 1, 0], "ceil_mode": 1, "count_include_pad": 1},
        {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_LOWER"},
        {"kernel_shape": [2, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER", "count_include_pad": 1},  # was SAME
    ],
)
def test_average_pool_divides_like_onnx(attrs):
    assert compare(pool("AveragePool", after_conv=True, **attrs)) < 1e-5


@pytest.mark.parametrize(
    "attrs",
    [
        {"kernel_shape": [3, 2], "strides": [2, 2], "ceil_mode": 1},
        {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_LOWER"},
    ],
)
def test_max_pool_ceil_mode_and_same_lower(attrs):
    assert compare(pool("MaxPool", **attrs)) < 1e-6


def test_ceil_mode_window_starting_in_the_padding_is_refused():
    # ONNX shape inference says 4 columns, onnxruntime computes 3: the 4th window starts in the pad
    model = pool("AveragePool", kernel_shape=[3, 3], strides=[2, 3], pads=[1, 1, 1, 1], ceil_mode=1)
    with pytest.raises(EdgecError, match="ceil_mode=1: the inferred output size 4 keeps a window"):
        lower(model)


def test_conv_same_lower_pads_the_odd_pixel_first():
    g = GraphBuilder()
    x = g.input("x", [1, 2, 6, 7])
    g.output(g.op("Conv", [x, g.weight(3, 2, 4, 3), g.weight(3)], auto_pad="SAME_LOWER", strides=[1, 2]))
    assert compare(g.model()) < 1e-5


def test_max_min_of_one_or_many_inputs():
    g = GraphBuilder()
    x = g.input("x", [1, 3, 4, 4])
    y = g.op("Conv", [x, g.weight(3, 3, 1, 1)])
    g.output(g.op("Max", [y, x, g.weight(1, 3, 1, 1), g.const(np.float32(0.1))]))
    g.output(g.op("Min", [y]))
    g.output(g.op("Max", [g.input("a", [2, 3]), g.input("b", [3]), g.input("c", [2, 1])]))
    assert compare(g.model()) < 1e-6


def test_clip_without_bounds_is_the_identity():
    g = GraphBuilder()
    x = g.input("x", [2, 5])
    g.output(g.op("Clip", [g.op("Neg", [x])]))
    assert compare(g.model()) == 0.0


def test_slice_with_negative_steps_walks_backwards_to_the_start():
    g = GraphBuilder()
    x = g.input("x", [1, 3, 6, 7])
    y = g.op("Conv", [x, g.weight(4, 3, 1, 1)])  # NHWC: the end mask must land on the stored axis
    ints = [np.array(v, np.int64) for v in ([-1, 5], [-100, 0], [3, 2], [-1, -2])]  # starts, ends, axes, steps
    g.output(g.op("Slice", [y, *(g.const(v) for v in ints)]))
    g.output(g.op("Slice", [y, *(g.const(np.array(v, np.int64)) for v in ([2], [-9], [1], [-1]))]))
    assert compare(g.model()) < 1e-6


@pytest.mark.parametrize("axis, after_conv", [(1, True), (2, True), (0, False), (1, False)])
def test_softmax_on_any_axis(axis, after_conv):
    g = GraphBuilder()
    x = g.input("x", [1, 3, 4, 5] if after_conv else [3, 4, 5])
    if after_conv:
        x = g.op("Conv", [x, g.weight(3, 3, 1, 1)])
    g.output(g.op("Softmax", [x], axis=axis))
    model = g.model()
    assert compare(model) < 1e-5
    if after_conv and axis == 1:  # the channels of an NHWC tensor are its last axis already
        assert operators(model).count("TRANSPOSE") == 2


def test_constant_nodes_feed_lowerings_that_need_constants():
    g = GraphBuilder()
    x = g.input("x", [2, 6])
    shape = g.op("Constant", [], value_ints=[3, 4])
    y = g.op("Reshape", [x, shape])
    g.output(g.op("Add", [y, g.op("Constant", [], value_float=0.5)]))
    assert compare(g.model()) < 1e-6


def test_lower_rank_activation_broadcasts_against_an_nhwc_one():
    g = GraphBuilder()
    x = g.input("x", [1, 3, 4, 5])
    y = g.op("Conv", [x, g.weight(3, 3, 1, 1)])
    g.output(g.op("Mul", [y, g.input("v", [4, 5])]))
    assert compare(g.model()) < 1e-6


def test_integer_tensors_are_refused_by_name():
    g = GraphBuilder()
    x = g.input("x", [2, 3], TensorProto.INT32)
    g.output(g.op("Add", [x, x]))
    with pytest.raises(EdgecError, match=r"Add 'Add_\d+': 'x' is int32: only float32"):
        lower(g.model())


def test_inputs_without_a_tflite_type_are_refused():
    g = GraphBuilder()
    x = g.input("x", [2, 3], TensorProto.DOUBLE)
    g.output(g.op("Relu", [x]))
    with pytest.raises(EdgecError, match="'x' has type float64, which TFLite has no tensor type for"):
        lower(g.model())


def test_int8_average_pool_over_the_whole_input_requantizes_once_like_onnxruntime():
    """mp-selfie's squeeze-excite pools average a 64x64 ReLU map whose scale (0.018) is coarser
    than the pooled output's (0.0083). AVERAGE_POOL_2D keeps its input's scale, so the average was
    rounded to the coarse grid and then requantized: 61% of the pooled codes 1-2 LSB off. As a
    MEAN the exact sum is requantized once: every code equals onnxruntime's on the Q/DQ IR."""
    g = GraphBuilder(seed=3)
    x = g.input("x", [1, 4, 16, 16])
    s_in, s_out, zero = g.const(np.float32(0.02)), g.const(np.float32(0.0037)), g.const(np.int8(-128))
    relu = g.op("Relu", [g.op("Conv", [x, g.weight(4, 4, 1, 1)])])
    xq = g.op("DequantizeLinear", [g.op("QuantizeLinear", [relu, s_in, zero]), s_in, zero])
    pooled = g.op("AveragePool", [xq], kernel_shape=[16, 16])
    g.output(g.op("DequantizeLinear", [g.op("QuantizeLinear", [pooled, s_out, zero]), s_out, zero]))
    model = g.model()
    ops = operators(model)
    assert "MEAN" in ops and "AVERAGE_POOL_2D" not in ops
    interpreter = litert.Interpreter(model_content=lower(model.copy()))
    interpreter.allocate_tensors()
    for seed in range(4):
        feeds = feeds_for(model, seed)
        expected = run(model, feeds)[0]
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], feeds["x"])
        interpreter.invoke()
        got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
        assert np.abs(got - expected).max() <= 0.0037 * 0.01  # the same codes, not one step off


def test_an_average_pool_with_several_windows_stays_a_pool():
    model = pool("AveragePool", shape=(1, 2, 8, 8), after_conv=True, kernel_shape=[4, 8])
    assert "AVERAGE_POOL_2D" in operators(model) and compare(model) < 1e-5
