import numpy as np

from edgec import calib
from edgec.pass_infra import PassContext, apply_pass
from edgec.passes.quantize.correct_bias import CorrectBiasPass
from edgec.passes.quantize.equalize_cross_layer import EqualizeCrossLayerPass
from edgec.passes.quantize.quantize import QuantizePass
from tests.helpers import GraphBuilder, apply, assert_equivalent, feeds_for, run


def _unbalanced(activation="Relu", flatten=False):
    """Conv -> act -> (MaxPool) -> Conv/Gemm with channel ranges spread over 3 orders of magnitude."""
    b = GraphBuilder(seed=1)
    x = b.input("x", [1, 3, 8, 8])
    w1 = b.rng.standard_normal((6, 3, 3, 3)).astype(np.float32) * np.logspace(-2, 1, 6)[:, None, None, None]
    y = b.op("Conv", [x, b.const(w1.astype(np.float32)), b.weight(6)], pads=[1, 1, 1, 1])
    y = (
        b.op(activation, [y])
        if activation != "Clip"
        else b.op("Clip", [y, b.const(np.float32(0)), b.const(np.float32(6))])
    )
    y = b.op("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])
    if flatten:
        b.output(b.op("Gemm", [b.op("Flatten", [y]), b.weight(96, 5)]))
    else:
        b.output(b.op("Conv", [y, b.weight(4, 6, 1, 1), b.weight(4)]))
    return b.model()


def _ranges(model):
    w = next(n for n in model.graph.nodes if n.op == "Conv").inputs[1].values
    r = np.abs(w).reshape(w.shape[0], -1).max(1)
    return r.max() / r.min()


def test_equalization_is_exact_and_balances_ranges():
    for flatten in (False, True):
        model = _unbalanced(flatten=flatten)
        before = model.copy()
        result = apply(model, EqualizeCrossLayerPass())
        assert result.stats["pairs"] == 1
        assert _ranges(model) < _ranges(before) / 10
        assert assert_equivalent(before, model) < 1e-5


def test_relu6_is_not_homogeneous_so_pairs_across_it_are_left_alone():
    model = _unbalanced(activation="Clip")
    assert not apply(model, EqualizeCrossLayerPass()).modified


def test_equalization_helps_per_tensor_int8(tmp_path):
    """What CLE is for: per-tensor weights on unbalanced channels lose much less after it."""

    def quantized(equalize):
        model = _unbalanced()
        original = model.copy()
        if equalize:
            apply(model, EqualizeCrossLayerPass())
        np.save(tmp_path / "c.npy", np.random.default_rng(0).standard_normal((32, 1, 3, 8, 8)).astype(np.float32))
        apply_pass(
            QuantizePass(per_channel=False),
            model.graph,
            PassContext(calibration=calib.load(str(tmp_path / "c.npy"), model)),
        )
        feeds = feeds_for(original)
        ref, got = run(original, feeds)[0], run(model, feeds)[0]
        return 10 * np.log10(np.sum(ref**2) / np.sum((ref - got) ** 2))

    assert quantized(True) > quantized(False) + 1.5  # dB


def test_bias_correction_cancels_the_mean_error_of_weight_rounding(tmp_path):
    b = GraphBuilder(seed=3)
    x = b.input("x", [1, 16, 6, 6])
    b.output(b.op("Conv", [x, b.weight(8, 16, 3, 3, scale=0.3), b.weight(8)]))
    model = b.model()
    original = model.copy()
    rng = np.random.default_rng(0)
    # inputs with a large common mean: the case where E[(W_q - W) x] is far from zero
    data = (rng.standard_normal((64, 1, 16, 6, 6)) + 3.0).astype(np.float32)
    np.save(tmp_path / "c.npy", data)
    ctx = PassContext(calibration=calib.load(str(tmp_path / "c.npy"), model))

    def mean_error(corrected):
        m = original.copy()
        if corrected:
            apply_pass(CorrectBiasPass(), m.graph, ctx)
        # bias_correction=off: the measured correction inside quantize would hide this pass's effect
        apply_pass(QuantizePass(activations="uint8", bias_correction="off"), m.graph, ctx)
        errors = [run(m, {"x": s})[0] - run(original, {"x": s})[0] for s in data[:16]]
        return float(np.abs(np.mean(errors, axis=(0, 2, 3, 4))).mean())

    assert mean_error(True) < 0.5 * mean_error(False)
