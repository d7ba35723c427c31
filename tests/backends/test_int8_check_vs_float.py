"""The int8 backend check of onnx, openvino and tvm: with the float model's outputs at hand, the
artifact is judged by its error against float next to the Q/DQ IR's, not by its distance to the
IR (int8 kernels round differently from the IR's float emulation, not worse)."""

import numpy as np
import pytest

from edgec.compare import compare
from edgec.registry import Registry

NAME = "y"


def _outputs(rng, sigma_ir, sigma_artifact, count=64, shape=(40,)):
    floating = [rng.normal(0, 1, shape) for _ in range(count)]
    ir = [f + rng.normal(0, sigma_ir, shape) for f in floating]
    artifact = [f + rng.normal(0, sigma_artifact, shape) for f in floating]
    return ([{NAME: v} for v in values] for values in (floating, ir, artifact))


@pytest.mark.parametrize("backend", ["onnx", "openvino", "tvm"])
def test_an_artifact_as_far_from_float_as_the_ir_passes_though_far_from_the_ir(backend):
    """IR and artifact each ~20 dB from float with independent rounding: ~17 dB apart, which the
    IR-relative budget alone (cosine 0.999 / 30 dB on onnx) rejects; PP-OCRv4's recognizer did this."""
    tolerance = Registry().backend(backend).quantized_check()
    floating, ir, artifact = _outputs(np.random.default_rng(0), 0.1, 0.1)
    assert not compare(ir, artifact, tolerance, "IR")  # no float outputs: the IR-relative budget
    check = compare(ir, artifact, tolerance, "IR", float_reference=floating)
    assert check.ok, check.failures
    record = check.vs_float[0]
    assert abs(record["sqnr_db"] - record["reference_sqnr_db"]) < 0.5 and check.sqnr_db < 18


@pytest.mark.parametrize("backend", ["onnx", "openvino", "tvm"])
def test_an_artifact_clearly_worse_than_the_ir_fails(backend):
    tolerance = Registry().backend(backend).quantized_check()
    floating, ir, artifact = _outputs(np.random.default_rng(1), 0.1, 0.14)  # ~3 dB worse than the IR
    check = compare(ir, artifact, tolerance, "IR", float_reference=floating)
    assert not check.ok and "sqnr vs float" in check.failures[0]
    halved = [{NAME: o[NAME] * 0.5} for o in ir]  # a wrong output scale
    assert not compare(ir, halved, tolerance, "IR", float_reference=floating).ok


def test_an_output_close_enough_to_float_passes_whatever_the_ir_reaches():
    tolerance = Registry().backend("onnx").quantized_check()
    floating, ir, artifact = _outputs(np.random.default_rng(2), 0.0, 0.01)  # IR exact, artifact 40 dB
    assert compare(ir, artifact, tolerance, "IR", float_reference=floating).ok
