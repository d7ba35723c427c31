"""quantize{symmetric_activations=true}: activations with negative values quantized zero-centred
(NNCF's performance preset), so OpenVINO's CPU plugin runs its zero-point-free kernels."""

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import edgec
from edgec.quant import scheme as schemes
from tests.quant.test_depthwise_inputs import _pp_lcnet_block


def _activation_quantizers(path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    proto = onnx.load(path)
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    return {
        n.input[0]: (inits[n.input[1]], inits[n.input[2]])
        for n in proto.graph.node
        if n.op_type == "QuantizeLinear" and n.input[1] in inits
    }


def _build(path, out, symmetric: bool):
    passes = f"quantize{{scheme=openvino,calib=minmax,recover=false,symmetric_activations={str(symmetric).lower()}}}"
    return edgec.compile(path, target="x86-64", backend="onnx", passes=passes, calib="random:32", output_dir=out)


def test_signed_activations_get_zero_point_128_and_unsigned_ones_zero(tmp_path):
    pytest.importorskip("openvino")
    model = _pp_lcnet_block(tmp_path)  # HardSwish outputs: down to -0.375, so signed
    fitted = _activation_quantizers(_build(model, tmp_path / "fitted", False).output_dir / "model.onnx")
    centred_build = _build(model, tmp_path / "centred", True)
    centred = _activation_quantizers(centred_build.output_dir / "model.onnx")
    assert centred_build.ok and centred.keys() == fitted.keys()
    assert any(not set(np.ravel(zp)) <= {0, 128} for _, zp in fitted.values())  # fitted: off-centre
    for name, (scale, zp) in centred.items():
        fitted_scale, fitted_zp = fitted[name]
        lo = (0 - fitted_zp.astype(np.int64)) * fitted_scale  # the fitted range's ends
        hi = (255 - fitted_zp.astype(np.int64)) * fitted_scale
        signed = lo < -1e-12
        np.testing.assert_array_equal(zp, np.where(signed, 128, 0).astype(np.uint8))
        # The wider side sets the step: 127 steps below and above 128, 255 from 0 (the fitted
        # ends are known to half a step: its zero point was rounded).
        expected = np.where(signed, np.maximum(-lo, hi) / 127, hi / 255)
        np.testing.assert_allclose(scale, expected, rtol=1 / 127)


def test_the_option_replays_from_the_pipeline_text(tmp_path):
    pytest.importorskip("openvino")
    result = _build(_pp_lcnet_block(tmp_path), tmp_path / "o", True)
    assert "symmetric_activations=true" in result.report["pipeline"]
    assert schemes.get("openvino", symmetric=True).symmetric_activations
    assert not schemes.get("openvino").symmetric_activations
