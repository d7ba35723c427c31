"""smooth-quant: activation outlier channels move into MatMul/Gemm weights, exactly in float, and
int8 loses less on them."""

import numpy as np
import pytest

from edgec import calib
from edgec.pass_infra import PassContext, apply_pass
from edgec.passes.quantize.quantize import QuantizePass
from edgec.passes.quantize.smooth_quant import SmoothQuantPass
from tests.helpers import GraphBuilder, assert_equivalent, op_counts, run

HIDDEN, TOKENS = 32, 12
OUTLIERS = (3, 17)  # channels a LayerNorm scales 40x, as in transformer activations


def _attention_inputs(layernorm: bool = True, residual: bool = False):
    """x -> LayerNorm (outlier gains) -> Q, K, V MatMuls, like a transformer block's projections.
    Without `layernorm`, a Mul sets the gains and a Gemm (transB) reads them too; `residual`: the
    activation also feeds an Add, so 1/s cannot fold into its producer."""
    b = GraphBuilder(seed=5, opset=17)
    x = b.input("x", [1, TOKENS, HIDDEN] if layernorm else [TOKENS, HIDDEN])
    gamma = np.ones(HIDDEN, np.float32)
    gamma[list(OUTLIERS)] = 40.0
    if layernorm:
        y = b.op("LayerNormalization", [x, b.const(gamma), b.const(np.full(HIDDEN, 0.1, np.float32))], axis=-1)
    else:
        y = b.op("Mul", [x, b.const(gamma)])
        weight = b.const(np.ascontiguousarray(_rows(b, HIDDEN, 16).T))
        b.output(b.op("Gemm", [y, weight, b.weight(16)], transB=1))
    for _ in range(3):
        b.output(b.op("MatMul", [y, b.const(_rows(b, HIDDEN, HIDDEN))]))
    if residual:
        b.output(b.op("Add", [y, x]))
    return b.model()


def _rows(b: GraphBuilder, rows: int, columns: int) -> np.ndarray:
    """Rows the outlier channels multiply are small, as in trained transformers: those channels
    do not dominate the output, so the other channels' int8 precision matters."""
    w = b.rng.standard_normal((rows, columns)) * 0.2
    w[list(OUTLIERS)] /= 20
    return w.astype(np.float32)


def _calibration(tmp_path, model, count=32):
    shape = [dim if isinstance(dim, int) else 1 for dim in model.graph.inputs[0].shape]
    data = np.random.default_rng(0).standard_normal((count, *shape)).astype(np.float32)
    np.save(tmp_path / "c.npy", data)
    return calib.load(str(tmp_path / "c.npy"), model)


def test_smoothing_is_exact_in_float_and_folds_into_the_layernorm(tmp_path):
    model = _attention_inputs()
    before = model.copy()
    result = apply_pass(SmoothQuantPass(), model.graph, PassContext(calibration=_calibration(tmp_path, model)))
    assert result.stats["smoothed"] == 1 and result.stats["folded_into"] == ["LayerNormalization"]
    assert result.stats["channel_spread"][0] > 20  # the two outliers against the median channel
    assert op_counts(model) == op_counts(before)  # nothing inserted
    assert assert_equivalent(before, model, rtol=1e-5) < 1e-5
    # the LayerNorm's outlier gains came down: the activation it writes is flatter
    norm = next(n for n in model.graph.nodes if n.op == "LayerNormalization")
    gains = np.abs(norm.inputs[1].values)
    assert gains.max() / np.median(gains) < 40 / 4


def test_an_activation_something_else_also_reads_is_left_alone(tmp_path):
    """1/s has nowhere to go when a residual Add reads the LayerNorm output too (a Mul in front
    of the MatMuls would leave the outliers in the tensor the quantizer still sees)."""
    model = _attention_inputs(residual=True)
    result = apply_pass(SmoothQuantPass(), model.graph, PassContext(calibration=_calibration(tmp_path, model)))
    assert not result.modified and result.stats["unfoldable"] == 1 and result.stats["smoothed"] == 0


def test_a_constant_gain_and_a_gemm_smooth_too(tmp_path):
    model = _attention_inputs(layernorm=False)
    before = model.copy()
    result = apply_pass(SmoothQuantPass(), model.graph, PassContext(calibration=_calibration(tmp_path, model)))
    assert result.stats["smoothed"] == 1 and result.stats["folded_into"] == ["Mul"]
    assert op_counts(model) == op_counts(before)
    assert assert_equivalent(before, model, rtol=1e-5) < 1e-5


def test_the_divisor_goes_through_relu_and_a_bias_into_the_layer_before(tmp_path):
    """MatMul -> Add(bias) -> Relu -> MatMul, the outliers made by the first layer's columns:
    its columns and bias absorb 1/s (relu(x / s) = relu(x) / s for s > 0)."""
    b = GraphBuilder(seed=4, opset=17)
    x = b.input("x", [1, TOKENS, HIDDEN])
    first = b.rng.standard_normal((HIDDEN, HIDDEN)).astype(np.float32) * 0.2
    first[:, list(OUTLIERS)] *= 40
    hidden = b.op("Relu", [b.op("Add", [b.op("MatMul", [x, b.const(first)]), b.weight(HIDDEN)])])
    b.output(b.op("MatMul", [hidden, b.const(_rows(b, HIDDEN, 8))]))
    model = b.model()
    before = model.copy()
    result = apply_pass(SmoothQuantPass(), model.graph, PassContext(calibration=_calibration(tmp_path, model)))
    assert result.stats["smoothed"] == 1 and result.stats["folded_into"] == ["MatMul"]
    assert assert_equivalent(before, model, rtol=1e-5) < 1e-5
    columns = np.abs(next(n for n in model.graph.nodes if n.op == "MatMul").inputs[1].values).max(axis=0)
    assert columns.max() / np.median(columns) < 40 / 4


def test_flat_activations_are_left_alone(tmp_path):
    b = GraphBuilder(seed=2, opset=17)
    x = b.input("x", [1, TOKENS, HIDDEN])
    b.output(b.op("MatMul", [x, b.weight(HIDDEN, 8)]))
    model = b.model()
    result = apply_pass(SmoothQuantPass(), model.graph, PassContext(calibration=_calibration(tmp_path, model)))
    assert not result.modified and result.stats["candidates"] == 1 and result.stats["smoothed"] == 0


@pytest.mark.parametrize("layernorm", [True, False])
def test_int8_loses_less_after_smoothing(tmp_path, layernorm):
    """What it is for: per-tensor activation scales no longer spent on two outlier channels."""

    def int8_sqnr(smooth: bool) -> float:
        model = _attention_inputs(layernorm=layernorm)
        original = model.copy()
        ctx = PassContext(calibration=_calibration(tmp_path, model))
        if smooth:
            apply_pass(SmoothQuantPass(), model.graph, ctx)
        apply_pass(QuantizePass(calib="minmax", recover=False, bias_correction="off"), model.graph, ctx)
        shape = model.graph.inputs[0].shape
        feeds = {"x": np.random.default_rng(9).standard_normal(shape).astype(np.float32)}
        ref, got = run(original, feeds), run(model, feeds)
        return min(10 * np.log10(np.sum(r**2) / np.sum((r - g) ** 2)) for r, g in zip(ref, got))

    assert int8_sqnr(True) > int8_sqnr(False) + 3  # dB


def test_the_pass_is_registered_and_needs_calibration():
    from edgec.registry import Registry

    cls = Registry(entry_points=False).pass_class("smooth-quant")
    assert cls is SmoothQuantPass and cls.requires_calibration
