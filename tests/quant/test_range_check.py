"""The data-free range check: calibrated ranges against what folded BatchNorm statistics predict."""

import numpy as np
import pytest

import edgec
from edgec.quant import range_check
from tests.helpers import GraphBuilder

CHANNELS = 8


def _conv_bn_relu(tmp_path):
    """Conv -> BatchNorm -> Relu -> Conv, its BatchNorm statistics those of standard-normal inputs
    (per channel: mean 0, variance sum(w^2) away from the border), as a model trained on such
    inputs would hold."""
    b = GraphBuilder(seed=7)
    x = b.input("x", [1, 3, 16, 16])
    w = (b.rng.standard_normal((CHANNELS, 3, 3, 3)) * 0.3).astype(np.float32)
    gamma = b.rng.uniform(0.5, 2.0, CHANNELS).astype(np.float32)
    beta = b.rng.uniform(-0.5, 0.5, CHANNELS).astype(np.float32)
    variance = (w.astype(np.float64) ** 2).sum(axis=(1, 2, 3)).astype(np.float32)
    y = b.op("Conv", [x, b.const(w)], pads=[1, 1, 1, 1])
    mean = np.zeros(CHANNELS, np.float32)
    y = b.op("BatchNormalization", [y, b.const(gamma), b.const(beta), b.const(mean), b.const(variance)])
    b.output(b.op("Conv", [b.op("Relu", [y]), b.weight(4, CHANNELS, 1, 1)]))
    path = tmp_path / "model.onnx"
    edgec.ir.save(b.model(), path)
    return path


def _build(tmp_path, model, scale: float):
    data = np.random.default_rng(0).standard_normal((32, 1, 3, 16, 16)).astype(np.float32) * scale
    calib = tmp_path / f"calib-{scale:g}.npy"
    np.save(calib, data)
    result = edgec.compile(
        model, target="x86-64", backend="onnx", passes="fold-batchnorm,quantize{calib=minmax}", calib=str(calib),
        output_dir=tmp_path / f"out-{scale:g}",
    )
    quantize = next(p for p in result.report["passes"] if p["name"] == "quantize")
    return result, quantize["stats"]["data_free_range_check"]


def test_calibration_data_like_the_training_data_passes(tmp_path):
    result, check = _build(tmp_path, _conv_bn_relu(tmp_path), 1.0)
    assert check["checked"] >= 1 and check["mismatched"] == 0
    assert not [w for w in result.report["warnings"] if "BatchNorm statistics" in w]


@pytest.mark.parametrize("scale", [255.0, 1 / 255])
def test_calibration_data_scaled_unlike_the_training_data_is_named(tmp_path, scale):
    """0-255 pixels for a model trained on 0-1 (and the other way round): every BatchNorm output's
    span moves by ~255x (down to its betas' spread); the build warns and says which tensor, and still builds."""
    result, check = _build(tmp_path, _conv_bn_relu(tmp_path), scale)
    assert result.ok and check["mismatched"] >= 1
    ratio = check["worst"][0]["span_ratio"]
    # too small, the spans shrink to the betas' spread: still far under the predicted one
    assert (ratio > 50) if scale > 1 else (ratio < 1 / 10)
    warnings = [w for w in result.report["warnings"] if "BatchNorm statistics" in w]
    assert len(warnings) == 1 and check["worst"][0]["tensor"] in warnings[0]


def test_predicted_ranges_pass_through_relu_clamped_at_zero():
    b = GraphBuilder()
    x = b.input("x", [1, 2, 4, 4])
    y = b.op("Relu", [b.op("Identity", [x])])
    b.output(y)
    model = b.model()
    statistics = {}
    bn_output = model.graph.nodes[0].outputs[0].name
    range_check.record(statistics, bn_output, np.array([1.0, 2.0]), np.array([-20.0, 1.0]))
    table = statistics[range_check.CACHE_KEY]
    assert range_check.predicted_range(model.graph, bn_output, table) == (-25.0, 11.0)
    assert range_check.predicted_range(model.graph, y, table) == (0.0, 11.0)
    assert range_check.predicted_range(model.graph, "x", table) is None
