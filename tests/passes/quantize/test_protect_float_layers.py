"""protect-float-layers: a float Conv/Gemm reading a per-tensor DequantizeLinear gets a
per-channel copy of it, so onnxruntime's WeightBiasQuantization leaves its weights float (it
quantized MediaPipe's palm detector's float layers per tensor: 16.6 dB from the checked IR)."""

import numpy as np
import onnxruntime as ort
import pytest

from edgec.passes.quantize.protect_float_layers import ProtectFloatLayersPass
from tests.helpers import GraphBuilder, apply, op_counts


def _float_layer_after_quantized_input(op="Conv", weight="float", bias="float"):
    """x -> Q/DQ (uint8, per tensor) -> op with a float / int8-stored weight and bias -> Q/DQ."""
    b = GraphBuilder(seed=2)
    shape, channels = ([1, 8, 6, 6], 8) if op == "Conv" else ([2, 8], 8)
    x = b.input("x", shape)
    scale, zero = b.const(np.float32(0.05)), b.const(np.uint8(100))
    h = b.op("DequantizeLinear", [b.op("QuantizeLinear", [x, scale, zero]), scale, zero])
    w_shape, axis = ([16, channels, 3, 3], 0) if op == "Conv" else ([channels, 16], 1)
    values = b.rng.standard_normal(w_shape).astype(np.float32) * np.linspace(0.01, 1.0, 16).reshape(
        [16, 1, 1, 1] if op == "Conv" else [1, 16]
    )  # channels of very different ranges: what per-tensor int8 rounds away
    if weight == "float":
        w = b.const(values.astype(np.float32))
    else:
        w_scale = (np.abs(values).max(axis=tuple(i for i in range(values.ndim) if i != axis)) / 127).astype(np.float32)
        shape_for = [-1 if i == axis else 1 for i in range(values.ndim)]
        stored = np.round(values / w_scale.reshape(shape_for)).astype(np.int8)
        w = b.op("DequantizeLinear", [b.const(stored), b.const(w_scale), b.const(np.zeros(16, np.int8))], axis=axis)
    inputs = [h, w]
    if bias == "float":
        inputs.append(b.const(b.rng.standard_normal(16).astype(np.float32)))
    attrs = {"pads": [1, 1, 1, 1]} if op == "Conv" else {}
    y = b.op(op, inputs, **attrs)
    out_scale, out_zero = b.const(np.float32(0.25)), b.const(np.uint8(128))  # read by a quantized layer
    b.output(b.op("DequantizeLinear", [b.op("QuantizeLinear", [y, out_scale, out_zero]), out_scale, out_zero]))
    return b.model()


def _run(model, feeds, optimize):
    options = ort.SessionOptions()
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    session = ort.InferenceSession(model.to_onnx().SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def _feeds(model):
    shape = model.graph.inputs[0].shape
    return {"x": np.random.default_rng(0).uniform(-5, 7, shape).astype(np.float32)}


def _relative(reference, got):
    return float(np.abs(got - reference).max() / np.abs(reference).max())


@pytest.mark.parametrize("op", ["Conv", "Gemm"])
def test_onnxruntime_runs_the_float_layer_float_after_the_pass(op):
    model = _float_layer_after_quantized_input(op)
    feeds = _feeds(model)
    emulated = _run(model, feeds, optimize=False)
    # onnxruntime 1.32 quantizes the float weight per tensor when it optimizes the graph.
    assert _relative(emulated, _run(model, feeds, optimize=True)) > 1e-3
    result = apply(model, ProtectFloatLayersPass())
    assert result.modified and result.stats["protected"] == 1
    np.testing.assert_array_equal(_run(model, feeds, optimize=False), emulated)  # exact
    assert _relative(emulated, _run(model, feeds, optimize=True)) < 1e-5  # float32 summation order only


def test_a_layer_computing_float_on_int8_stored_weights_keeps_its_float_bias():
    """float_compute: int8 weights, float bias. onnxruntime would quantize the bias to int32 and
    fuse the layer into an int8 kernel."""
    model = _float_layer_after_quantized_input(weight="int8")
    assert apply(model, ProtectFloatLayersPass()).modified
    reader = next(n for n in model.graph.nodes if n.op == "Conv").inputs[0].inputs[0]
    assert reader.op == "DequantizeLinear" and reader.inputs[1].values.shape == (8,) and reader.attrs["axis"] == 1


def test_leaves_int8_layers_and_float_inputs_alone():
    int8_layer = _float_layer_after_quantized_input(weight="int8", bias="none")
    counts = op_counts(int8_layer)
    assert not apply(int8_layer, ProtectFloatLayersPass()).modified and op_counts(int8_layer) == counts
    b = GraphBuilder()
    x = b.input("x", [1, 3, 4, 4])
    b.output(b.op("Conv", [x, b.weight(4, 3, 1, 1)]))
    float_model = b.model()
    assert not apply(float_model, ProtectFloatLayersPass()).modified
