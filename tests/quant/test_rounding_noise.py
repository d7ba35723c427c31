"""An int8 artifact that rounds the IR's near-ties the other way is judged against the IR's own
spread under nudged roundings (edgec.quant.rounding_noise); a wrong one still fails."""

import numpy as np
import onnx_graphsurgeon as gs
import pytest

from edgec import runner
from edgec.compare import Tolerance, compare
from edgec.quant import rounding_noise
from tests.helpers import GraphBuilder

HALF_TIE = 2e-5  # in LSBs: above float32's resolution at |q| ~ 50, below the nudge's 5e-5


def _ir():
    """x -> QuantizeLinear(scale 1) -> DequantizeLinear -> ReduceSum: an output where the
    directions of near-tie roundings add up instead of averaging out."""
    b = GraphBuilder()
    x = b.input("x", [1, 64])
    scale, zero = b.const(np.float32(1.0)), b.const(np.int8(0))
    restored = b.op("DequantizeLinear", [b.op("QuantizeLinear", [x, scale, zero]), scale, zero])
    b.output(b.op("ReduceSum", [restored, b.const(np.array([1], np.int64))], keepdims=1))
    return b.model()


def _samples(count=4):
    """Values half an LSB plus or minus HALF_TIE from a rounding boundary, 33 above and 31 below:
    the IR's roundings nearly cancel in the sum; a nudge sends all 64 the same way."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        codes = rng.integers(40, 60, 64)
        sides = np.array([1.0] * 33 + [-1.0] * 31)
        out.append({"x": (codes + 0.5 + HALF_TIE * rng.permutation(sides)).astype(np.float32)[None]})
    return out


def _runs(model, samples):
    """(the IR's outputs, the float model's: the plain sum)."""
    y = model.graph.outputs[0].name
    floats = [{y: s["x"].astype(np.float64).sum(axis=1, keepdims=True)} for s in samples]
    return runner.run_model(model, samples), floats


def _judged(model, samples, candidate):
    ir_outputs, floats = _runs(model, samples)
    candidate = [{model.graph.outputs[0].name: c} for c in candidate]
    check = compare(ir_outputs, candidate, Tolerance(max_sqnr_loss_vs_float_db=1.0), "IR", float_reference=floats)
    return check, rounding_noise.rejudge(check, model, samples, floats, candidate, ir_outputs)


def test_nudged_moves_only_the_quantize_scales_by_a_millionth():
    model = _ir()
    moved = rounding_noise.nudged(model, seed=0)
    q = next(n for n in moved.graph.nodes if n.op == "QuantizeLinear")
    dq = next(n for n in moved.graph.nodes if n.op == "DequantizeLinear")
    assert abs(float(q.inputs[1].values) - 1.0) == pytest.approx(rounding_noise.RELATIVE_NUDGE, rel=0.2)
    assert float(dq.inputs[1].values) == 1.0
    assert isinstance(q.inputs[1], gs.Constant) and q.inputs[1].values.ndim == 0
    original = next(n for n in model.graph.nodes if n.op == "QuantizeLinear")
    assert float(original.inputs[1].values) == 1.0  # the model itself is untouched


def test_an_artifact_rounding_the_ties_the_other_way_passes_against_the_irs_spread():
    model, samples = _ir(), _samples()
    # A runtime whose near-ties all fall down: the sum is ~32 LSBs off where the IR's was ~1.
    candidate = [np.floor(s["x"].astype(np.float64)).sum(axis=1, keepdims=True) for s in samples]
    check, judged = _judged(model, samples, candidate)
    assert not check.ok  # ~30 dB below the IR's lucky cancellation
    (spread,) = judged.rounding_noise.values()
    assert spread[0] - min(spread) > 20  # the IR's own SQNR vs float, then its nudged copies'
    assert judged.ok, judged.failures
    assert list(judged.to_json()["rounding_noise_sqnr_db"].values()) == [spread]


def test_a_wrong_artifact_still_fails():
    model, samples = _ir(), _samples()
    # 3x the error any rounding of the ties can make: a wrong scale, not noise.
    candidate = [np.floor(s["x"].astype(np.float64)).sum(axis=1, keepdims=True) - 64.0 for s in samples]
    check, judged = _judged(model, samples, candidate)
    assert not check.ok and not judged.ok
    assert "sqnr vs float" in judged.failures[0]


def test_a_passing_check_is_not_measured_again():
    model, samples = _ir(), _samples()
    ir_outputs, floats = _runs(model, samples)
    check = compare(ir_outputs, ir_outputs, Tolerance(max_sqnr_loss_vs_float_db=1.0), "IR", float_reference=floats)
    assert check.ok and rounding_noise.rejudge(check, model, samples, floats, ir_outputs, ir_outputs) is check
