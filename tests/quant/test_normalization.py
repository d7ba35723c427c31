"""Spelled-out LayerNorms stay float in the onnx scheme (edgec.quant.normalization)."""

import dataclasses

import numpy as np
import pytest

from edgec import calib, runner
from edgec.pass_infra import PassContext, apply_pass
from edgec.passes.quantize.quantize import QuantizePass
from edgec.quant import evaluation, qdq
from edgec.quant import scheme as schemes
from edgec.quant.normalization import float_normalization_nodes
from tests.helpers import GraphBuilder

WIDTH = 64


def _layer_norm(b: GraphBuilder, x: str, spelling: str) -> str:
    mean = b.op("ReduceMean", [x], axes=[-1], keepdims=1)
    centred = b.op("Sub", [x, mean])
    square = b.op("Pow", [centred, b.const(np.float32(2.0))]) if spelling == "pow" else b.op("Mul", [centred, centred])
    variance = b.op("ReduceMean", [square], axes=[-1], keepdims=1)
    std = b.op("Sqrt", [b.op("Add", [variance, b.const(np.float32(1e-5))])])
    if spelling == "reciprocal":  # TFLite's RSQRT as imported
        normalized = b.op("Mul", [centred, b.op("Reciprocal", [std])])
    else:
        normalized = b.op("Div", [centred, std])
    gamma = b.const((1 + 0.1 * b.rng.standard_normal(WIDTH)).astype(np.float32))
    beta = b.const((0.1 * b.rng.standard_normal(WIDTH)).astype(np.float32))
    return b.op("Add", [b.op("Mul", [normalized, gamma]), beta])


def _keyword_head(spelling: str = "div"):
    """Gemm -> LayerNorm -> Relu -> Gemm -> Sigmoid: openWakeWord's head, opset 13."""
    b = GraphBuilder(seed=7, opset=13)
    x = b.input("x", [1, WIDTH])
    hidden = b.op("Gemm", [x, b.weight(WIDTH, WIDTH, scale=0.2), b.weight(WIDTH)], transB=1)
    activated = b.op("Relu", [_layer_norm(b, hidden, spelling)])
    b.output(b.op("Sigmoid", [b.op("Gemm", [activated, b.weight(1, WIDTH, scale=0.2), b.weight(1)], transB=1)]))
    return b.model()


@pytest.mark.parametrize("spelling", ["div", "reciprocal", "pow"])
def test_every_spelling_is_found_with_its_affine(spelling):
    model = _keyword_head(spelling)
    found = float_normalization_nodes(model.graph)
    ops = sorted(n.op for n in model.graph.nodes if id(n) in found)
    expected = ["Add", "Add", "Mul", "ReduceMean", "ReduceMean", "Sqrt", "Sub"]
    expected += {"div": ["Div", "Mul"], "reciprocal": ["Mul", "Mul", "Reciprocal"], "pow": ["Div", "Pow"]}[spelling]
    assert ops == sorted(expected)
    assert not any(n.op in ("Gemm", "Relu", "Sigmoid") for n in model.graph.nodes if id(n) in found)


def test_a_centring_that_is_not_a_normalization_is_left_alone():
    """x - mean(x), squared and averaged, but nothing divides by it: no normalization."""
    b = GraphBuilder(seed=1, opset=13)
    x = b.input("x", [1, WIDTH])
    centred = b.op("Sub", [x, b.op("ReduceMean", [x], axes=[-1], keepdims=1)])
    b.output(b.op("ReduceMean", [b.op("Mul", [centred, centred])], axes=[-1], keepdims=1))
    b.output(centred)
    assert float_normalization_nodes(b.model().graph) == set()


def test_only_the_onnx_and_tensorrt_schemes_keep_it_float():
    graph = _keyword_head().graph
    found = float_normalization_nodes(graph)
    for name in ("onnx", "tensorrt", "tflite"):
        planned = {id(n) for n in qdq.plan(graph, schemes.get(name), set()).nodes}
        assert bool(planned & found) == (name == "tflite"), name


def _samples(count: int, seed: int) -> list[dict]:
    """Inputs whose spread differs 100-fold between samples: a few have a small variance."""
    rng = np.random.default_rng(seed)
    spreads = rng.choice([0.02, 1.0, 2.0], size=count, p=[0.25, 0.5, 0.25])
    return [{"x": (s * rng.standard_normal((1, WIDTH))).astype(np.float32)} for s in spreads]


def test_keeping_it_float_beats_quantizing_it_on_held_out_samples(monkeypatch):
    """The same build with the normalization quantized (the onnx scheme before) and float: on
    held-out samples the float one is closer to float32, by more than run-to-run noise."""
    model = _keyword_head()
    held_out = _samples(128, seed=2)
    reference = runner.run_model(model, held_out)
    stack = {"x": np.stack([s["x"] for s in _samples(64, seed=1)])}

    def build() -> tuple[float, set[str]]:
        quantized = model.copy()
        quantize = QuantizePass(calib="minmax", bias_correction="off", recover=False)
        apply_pass(quantize, quantized.graph, PassContext(calibration=calib.load(stack, quantized)))
        rounded = {n.inputs[0].name for n in quantized.graph.nodes if n.op == "QuantizeLinear"}
        return evaluation.worst_output_db(runner.run_model(quantized, held_out), reference), rounded

    kept_float, rounded_float = build()
    quantizing_it = dataclasses.replace(schemes.SCHEMES["onnx"], float_normalizations=False)
    monkeypatch.setitem(schemes.SCHEMES, "onnx", quantizing_it)
    quantized_db, rounded_quantized = build()
    assert len(rounded_quantized) > len(rounded_float)
    assert kept_float > quantized_db + 2.0, (kept_float, quantized_db)
