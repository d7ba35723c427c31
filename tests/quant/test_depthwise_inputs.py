"""Depthwise Conv inputs (Scheme.depthwise_inputs): per channel in the openvino scheme (NNCF's
placement, checked in OpenVINO itself), the depthwise layer float in the onnx scheme where its
input's quantizer would stand alone, per tensor where onnxruntime fuses it with its producer."""

import dataclasses

import numpy as np
import onnx
import pytest

import edgec
from edgec import runner
from edgec.compare import Tolerance
from edgec.quant import scheme as schemes
from edgec.passes.quantize.quantize import QuantizePass
from tests.helpers import GraphBuilder

CHANNELS = 8
WIDE = 30.0  # the last channel's range against the others'


def _pp_lcnet_block(tmp_path, activation="HardSwish"):
    """Conv -> activation -> depthwise 3x3 -> activation -> Conv, where one channel of the
    depthwise input spans WIDE times the others (PP-LCNet's HardSwish outputs: 0.4 to 12)."""
    b = GraphBuilder(seed=3)
    gains = np.ones((CHANNELS, 1, 1, 1), np.float32)
    gains[-1] = WIDE
    w1 = (b.rng.standard_normal((CHANNELS, 3, 1, 1)) * 0.5).astype(np.float32) * gains
    h = b.op(activation, [b.op("Conv", [b.input("x", [1, 3, 16, 16]), b.const(w1)])])
    w2 = (b.rng.standard_normal((CHANNELS, 1, 3, 3)) * 0.5).astype(np.float32)
    w2[-1] /= WIDE  # past the depthwise layer every channel spans alike
    dw = b.op("Conv", [h, b.const(w2)], group=CHANNELS, pads=[1, 1, 1, 1])
    b.output(b.op("Conv", [b.op(activation, [dw]), b.weight(4, CHANNELS, 1, 1)]))
    onnx.save(b.proto(), tmp_path / "m.onnx")
    return tmp_path / "m.onnx"


def _compile(path, out, backend, scheme):
    return edgec.compile(
        path, target="x86-64", backend=backend, passes=f"quantize{{scheme={scheme},calib=minmax,recover=false}}",
        calib="random:32", output_dir=out,
    )


def _sqnr_db(source, model, seed=5) -> float:
    rng = np.random.default_rng(seed)
    feeds = [{"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(16)]
    ref = np.concatenate([next(iter(o.values())) for o in runner.run_model(edgec.ir.load(source), feeds)])
    got = np.concatenate([next(iter(o.values())) for o in runner.run_model(model, feeds)])
    return float(10 * np.log10(np.sum(ref**2) / np.sum((ref - got) ** 2)))


def _depthwise(model):
    return next(n for n in model.graph.nodes if n.op == "Conv" and int(n.attrs.get("group", 1)) == CHANNELS)


def _input_quantizer(layer):
    dq = layer.inputs[0].inputs[0] if layer.inputs[0].inputs else None
    return dq.inputs[0].inputs[0] if dq is not None and dq.op == "DequantizeLinear" else None


def test_openvino_quantizes_a_depthwise_input_per_channel(tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    source = _pp_lcnet_block(tmp_path)
    result = _compile(source, tmp_path / "o", "openvino", "openvino")
    assert result.ok and result.report["backend_check"]["ok"]  # OpenVINO itself ran it within budget
    q = _input_quantizer(_depthwise(result.model))
    scales = np.asarray(q.inputs[1].values)
    assert q.op == "QuantizeLinear" and scales.shape == (CHANNELS,) and q.attrs["axis"] == 1
    assert scales[-1] > 10 * np.median(scales[:-1])  # the wide channel no longer sets the others' step
    per_channel_db = _sqnr_db(source, result.model)

    per_tensor = dataclasses.replace(schemes.SCHEMES["openvino"], depthwise_inputs="per-tensor")
    monkeypatch.setitem(schemes.SCHEMES, "openvino", per_tensor)
    monkeypatch.setattr(QuantizePass, "tolerance", Tolerance(min_cosine=0.5))  # it misses the default budget
    baseline = _compile(source, tmp_path / "p", "openvino", "openvino")
    assert np.asarray(_input_quantizer(_depthwise(baseline.model)).inputs[1].values).size == 1
    assert per_channel_db > _sqnr_db(source, baseline.model) + 6.0


def test_onnx_scheme_keeps_a_depthwise_layer_with_a_standalone_quantizer_float(tmp_path, monkeypatch):
    # The first layer's per-tensor output (onnxruntime's fused placement) rounds the narrow
    # channels away before the HardSwish: this block misses the default budget on any backend
    # but openvino's.
    monkeypatch.setattr(QuantizePass, "tolerance", Tolerance(min_cosine=0.5))
    result = _compile(_pp_lcnet_block(tmp_path), tmp_path / "o", "onnx", "onnx")
    depthwise = _depthwise(result.model)
    assert _input_quantizer(depthwise) is None  # reads the float HardSwish output
    assert depthwise.inputs[1].__class__.__name__ == "Constant"  # float weights, not int8 + DQ
    pointwise = [n for n in result.model.graph.nodes if n.op == "Conv" and n is not depthwise]
    assert all(_input_quantizer(n) is not None for n in pointwise)


def test_onnx_scheme_keeps_a_depthwise_layer_fused_with_its_producer_int8(tmp_path):
    """Conv -> Relu -> depthwise (MobileNet): the Relu's output is the first layer's quantized
    output, which onnxruntime fuses into QLinearConv; the depthwise layer stays int8 per tensor."""
    result = _compile(_pp_lcnet_block(tmp_path, activation="Relu"), tmp_path / "o", "onnx", "onnx")
    q = _input_quantizer(_depthwise(result.model))
    assert q is not None and np.asarray(q.inputs[1].values).size == 1


def test_openvino_scheme_quantizes_layer_inputs_and_residual_adds_only():
    """NNCF's placement: the inputs of Conv and of an Add of two computed tensors; no Mul, no Add
    of a constant (no int8 kernel gained, one more rounding) and no layer outputs."""
    from edgec.quant import qdq

    b = GraphBuilder(seed=1)
    a = b.op("Relu", [b.op("Conv", [b.input("x", [1, 4, 8, 8]), b.weight(4, 4, 1, 1)])])
    scaled = b.op("Mul", [a, b.const(np.float32(0.5))])
    shifted = b.op("Add", [scaled, b.const(np.float32(1.0))])
    joined = b.op("Add", [shifted, a])
    b.output(b.op("Conv", [joined, b.weight(2, 4, 1, 1)]))
    graph = b.model().graph
    openvino = qdq.plan(graph, schemes.get("openvino"), set())
    assert set(openvino.tensors) == {"x", a, shifted, joined}
    assert scaled in qdq.plan(graph, schemes.get("onnx"), set()).tensors  # onnxruntime's QLinearMul/Add pattern


@pytest.mark.parametrize("activation", ["Identity", "HardSwish"])
def test_openvino_candidates_score_in_float_kernels_with_per_channel_quantizers(tmp_path, activation):
    """calib=auto scores the openvino scheme's candidates on dequantized weights with onnxruntime's
    Q/DQ fusions off: left on, onnxruntime quantized the float weights itself and fused the
    per-channel quantizer into a QLinearConv it then refused (PP-OCRv4 rec, exit 3)."""
    pytest.importorskip("openvino")
    source = _pp_lcnet_block(tmp_path, activation)
    result = edgec.compile(
        source, target="x86-64", backend="openvino", passes="quantize{scheme=openvino,recover=false}",
        calib="random:32", output_dir=tmp_path / "o",
    )
    stats = next(p for p in result.report["passes"] if p["name"] == "quantize")["stats"]
    assert result.ok and len(stats["calib_scores_db"]) == 4
    assert min(stats["calib_scores_db"].values()) > 20
