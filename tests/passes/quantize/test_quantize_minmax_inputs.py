"""quantize-minmax-inputs: a ReduceMax/ReduceMin whose output is quantized gets the same quantizer
on its input. Exact in onnxruntime (max and min commute with a monotone quantizer); in OpenVINO's
CPU plugin it turns a wrong fused float-reduce-to-u8 kernel (dnsmos: 17.7 dB instead of the IR's
41.6 dB) into a u8 reduction that matches the IR."""

import numpy as np
import pytest

import edgec
from edgec.passes.quantize.quantize_minmax_inputs import QuantizeMinmaxInputsPass
from tests.helpers import GraphBuilder, apply, op_counts, run

SHAPE = [1, 12, 10, 64]  # NHWC: the reduction keeps the last axis, as a TF global max pool does


def _reduce_then_dense(op="ReduceMax", quantize_input=False, second_reader=False):
    """x -> op(axes 1,2) -> Q/DQ (uint8, per tensor) -> MatMul with per-channel int8 weights."""
    b = GraphBuilder(seed=3)
    x = b.input("x", SHAPE)
    scale, zero = b.const(np.float32(0.0092)), b.const(np.uint8(0))
    if quantize_input:
        x = b.op("DequantizeLinear", [b.op("QuantizeLinear", [x, scale, zero]), scale, zero])
    reduced = b.op(op, [x], axes=[1, 2], keepdims=0)
    restored = b.op("DequantizeLinear", [b.op("QuantizeLinear", [reduced, scale, zero]), scale, zero])
    # [-64, 64], as edgec rounds weights for x86 without VNNI: full-range ones saturate OpenVINO's
    # u8 x s8 pair sums there (7.0 off at 26.7), which is not what this pass is about
    weights = b.const(b.rng.integers(-64, 65, (64, 128)).astype(np.int8))
    weight_scale = b.const((b.rng.random(128) * 0.01 + 0.001).astype(np.float32))
    dense = b.op("DequantizeLinear", [weights, weight_scale, b.const(np.zeros(128, np.int8))], axis=1)
    b.output(b.op("MatMul", [restored, dense]))
    if second_reader:
        b.output(b.op("Neg", [reduced]))
    return b.model()


def _feeds(count=4):
    rng = np.random.default_rng(7)
    return [{"x": np.abs(rng.standard_normal(SHAPE)).astype(np.float32) * 0.8} for _ in range(count)]


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin"])
def test_quantizes_the_input_without_changing_any_output(op):
    model = _reduce_then_dense(op)
    before = [run(model, feeds) for feeds in _feeds()]
    result = apply(model, QuantizeMinmaxInputsPass())
    assert result.modified and result.stats == {"reductions": 1}
    assert op_counts(model)["QuantizeLinear"] == 2 and op_counts(model)["DequantizeLinear"] == 3
    reduction = next(n for n in model.graph.nodes if n.op == op)
    assert reduction.inputs[0].inputs[0].op == "DequantizeLinear"
    for feeds, expected in zip(_feeds(), before):
        np.testing.assert_array_equal(run(model, feeds)[0], expected[0])


@pytest.mark.parametrize("variant", [{"quantize_input": True}, {"second_reader": True}, {"op": "ReduceMean"}])
def test_leaves_reductions_it_would_change_or_cannot_help(variant):
    """Already-quantized input; a float reader of the output (it would see rounded values); a
    reduction that does not commute with rounding."""
    model = _reduce_then_dense(**variant)
    counts = op_counts(model)
    assert not apply(model, QuantizeMinmaxInputsPass()).modified
    assert op_counts(model) == counts


def test_openvino_runs_the_rewritten_reduction_as_the_ir_computes():
    ov = pytest.importorskip("openvino")
    model = _reduce_then_dense()
    apply(model, QuantizeMinmaxInputsPass())
    compiled = ov.Core().compile_model(
        ov.Core().read_model(model.to_onnx().SerializeToString(), b""), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    for feeds in _feeds():
        expected = run(model, feeds)[0]
        got = compiled(feeds)[compiled.outputs[0]]
        # Same u8 inputs and int8 weights: float32 accumulation order apart.
        assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()


def test_openvino_int8_build_of_a_max_pool_head_passes_its_check(tmp_path):
    """The openvino backend appends the pass: the build's own check against the IR holds."""
    pytest.importorskip("openvino")
    b = GraphBuilder(seed=4)
    x = b.input("x", SHAPE)
    pooled = b.op("ReduceMax", [x], axes=[1, 2], keepdims=0)
    b.output(b.op("Relu", [b.op("Gemm", [pooled, b.weight(64, 128, scale=0.2), b.weight(128, scale=0.1)])]))
    calib = np.abs(np.random.default_rng(0).standard_normal((32, *SHAPE[1:]))).astype(np.float32)
    result = edgec.compile(b.proto(), target="x86-64", backend="openvino", opt="int8", calib=calib,
                           output_dir=tmp_path / "out")
    assert "quantize-minmax-inputs" in [p["name"] for p in result.report["passes"]]
    assert result.ok and result.report["backend_check"]["ok"]
