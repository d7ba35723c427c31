"""Fast bias correction (edgec.quant.bias_correction) inside the quantize pass: each int8 layer's
bias absorbs the mean shift its own rounding and clipping cause, measured against the float
layer on the float layer's own input."""

import numpy as np
import onnx_graphsurgeon as gs
import pytest

from edgec import calib, runner
from edgec.graph_utils import constant_value
from edgec.pass_infra import PassContext, apply_pass
from edgec.passes.quantize.quantize import QuantizePass
from edgec.quant import bias_correction
from tests.helpers import GraphBuilder


def _model():
    """Conv -> Relu -> Conv -> Gemm head: the first layer's input has heavy tails that a 99th
    percentile range clips, which shifts every channel's mean after it."""
    b = GraphBuilder(seed=4)
    biases = np.array([1.2, -0.8, 0.9, -1.5, 1.1, 0.7, -1.0, 1.3], np.float32)  # as BatchNorm folds them
    x = b.input("x", [1, 3, 8, 8])
    h = b.op("Relu", [b.op("Conv", [x, b.weight(8, 3, 3, 3), b.const(biases)], pads=[1, 1, 1, 1])])
    h = b.op("Relu", [b.op("Conv", [h, b.weight(8, 8, 1, 1), b.const(biases[::-1].copy())])])
    flat = b.op("Flatten", [b.op("GlobalAveragePool", [h])])
    b.output(b.op("Gemm", [flat, b.weight(4, 8), b.const(biases[:4] * 2)], transB=1))
    return b.model()


def _samples(count, seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_t(2, (count, 1, 3, 8, 8)) + 0.5).astype(np.float32)


def _quantized(model, stack, correction):
    quantized = model.copy()
    quantize = QuantizePass(calib="percentile", percentile=99.0, bias_correction=correction, recover=False)
    result = apply_pass(quantize, quantized.graph, PassContext(calibration=calib.load(stack, model)))
    return quantized, result.stats


def _sqnr(reference, got):
    ref, out = np.concatenate([r.ravel() for r in reference]), np.concatenate([g.ravel() for g in got])
    return 10 * np.log10(np.sum(ref**2) / np.sum((ref - out) ** 2))


def test_the_corrected_model_is_closer_to_float_on_new_inputs_and_its_mean_error_shrinks():
    model = _model()
    corrected, stats = _quantized(model, _samples(32, 0), "fast")
    plain, plain_stats = _quantized(model, _samples(32, 0), "off")
    assert "bias_correction" not in plain_stats
    chosen = stats["bias_correction"]
    assert chosen["layers"] == 3 and chosen["chosen"] != "none"
    assert chosen["scored_db"][chosen["chosen"]] == max(chosen["scored_db"].values())  # the held-out samples chose
    held_out = [{"x": s} for s in _samples(256, 1)]

    def outputs(m):
        return [next(iter(r.values())) for r in runner.run_model(m, held_out)]

    reference, fixed, unfixed = outputs(model), outputs(corrected), outputs(plain)
    assert _sqnr(reference, fixed) > _sqnr(reference, unfixed) + 0.4  # 10.7 vs 10.2 dB
    mean_error = lambda got: np.abs(np.mean(np.stack(got) - np.stack(reference), axis=0)).max()  # noqa: E731
    assert mean_error(fixed) < 0.9 * mean_error(unfixed)  # 1.99 vs 2.40


def test_biases_stay_int32_on_the_input_and_weight_scales_and_nothing_else_changes():
    model = _model()
    corrected, _ = _quantized(model, _samples(32, 0), "fast")
    plain, _ = _quantized(model, _samples(32, 0), "off")
    assert [n.op for n in corrected.graph.nodes] == [n.op for n in plain.graph.nodes]

    def biases(m):
        return {n.name: n.inputs[2].inputs[0] for n in m.graph.nodes if n.op in ("Conv", "Gemm")}

    moved = 0
    for name, dq in biases(corrected).items():
        other = biases(plain)[name]
        assert constant_value(dq.inputs[0]).dtype == np.int32
        np.testing.assert_array_equal(constant_value(dq.inputs[1]), constant_value(other.inputs[1]))  # same scale
        moved += int(np.any(constant_value(dq.inputs[0]) != constant_value(other.inputs[0])))
    assert moved == 3


def test_a_float_bias_moves_by_the_measured_shift():
    """TensorRT's scheme leaves biases float: the shift is added as it is."""
    b = GraphBuilder(seed=1)
    x = b.input("x", [1, 4])
    scale, zero = b.const(np.float32(0.05)), b.const(np.int8(0))
    xq = b.op("DequantizeLinear", [b.op("QuantizeLinear", [x, scale, zero]), scale, zero])
    float_model = GraphBuilder(seed=1)
    fx = float_model.input("x", [1, 4])
    weight = np.full((2, 4), 0.3, np.float32)
    bias = np.array([0.1, -0.2], np.float32)
    float_model.output(float_model.op("Gemm", [fx, float_model.const(weight), float_model.const(bias)], transB=1))
    b.output(b.op("Gemm", [xq, b.const(weight), b.const(bias)], transB=1))
    floating, quantized = float_model.model(), b.model()
    quantized.graph.outputs[0].name = floating.graph.outputs[0].name = "y"
    for m in (floating, quantized):
        m.graph.nodes[-1].outputs[0].name = "y"
    samples = [{"x": np.full((1, 4), v, np.float32)} for v in (0.012, 0.013, 0.014)]  # each rounds down to 0.0
    assert bias_correction.correct(floating.graph, quantized.graph, samples) == 1
    moved = constant_value(next(n for n in quantized.graph.nodes if n.op == "Gemm").inputs[2])
    # The mean shift, shrunk by 0.2% for the spread of three samples (edgec.quant.bias_correction._shrunk_mean).
    np.testing.assert_allclose(moved - bias, 4 * 0.3 * 0.013, rtol=0.005)


def test_layers_whose_input_is_not_quantized_are_left_alone():
    b = GraphBuilder(seed=2)
    x = b.input("x", [1, 4])
    b.output(b.op("Gemm", [x, b.weight(2, 4), b.weight(2)], transB=1))
    model = b.model()
    assert bias_correction.correct(model.graph, model.copy().graph, [{"x": np.ones((1, 4), np.float32)}]) == 0
    assert isinstance(model.graph.nodes[0].inputs[2], gs.Constant)


def test_a_gemm_bias_that_is_not_one_per_channel_is_left_alone():
    """magika's Gemm adds a [1, C] bias, which the quantize pass leaves float: the correction,
    which moves one value per output channel, crashed on it (exit 3)."""
    b = GraphBuilder(seed=5)
    x = b.input("x", [1, 16])
    b.output(b.op("Gemm", [b.op("Relu", [b.op("Gemm", [x, b.weight(8, 16), b.weight(8)], transB=1)]),
                           b.weight(4, 8), b.const(np.full((1, 4), 0.5, np.float32))], transB=1))
    model = b.model()
    stack = np.random.default_rng(0).standard_normal((32, 1, 16)).astype(np.float32)
    quantized, stats = _quantized(model, stack, "fast")
    assert stats["bias_correction"]["layers"] == 1  # the first Gemm only
    head = [n for n in quantized.graph.nodes if n.op == "Gemm"][-1]
    np.testing.assert_array_equal(constant_value(head.inputs[2]), np.full((1, 4), 0.5, np.float32))


def test_a_correction_that_fails_leaves_the_quantized_model_and_says_why(monkeypatch):
    """An injected fault: the refinement is optional, so the build keeps the uncorrected int8
    model and warns, instead of an internal error (exit 3)."""
    def broken(*args, **kwargs):
        raise ValueError("injected")

    monkeypatch.setattr(bias_correction, "measure_together", broken)
    model = _model()
    corrected, stats = _quantized(model, _samples(32, 0), "fast")
    plain, _ = _quantized(model, _samples(32, 0), "off")
    assert stats["bias_correction"] == {"layers": 0, "chosen": "none", "error": "ValueError: injected"}
    held_out = [{"x": s} for s in _samples(8, 1)]
    for a, b in zip(runner.run_model(corrected, held_out), runner.run_model(plain, held_out)):
        np.testing.assert_array_equal(next(iter(a.values())), next(iter(b.values())))


def test_the_probe_measures_at_most_bias_probe_samples_spread_over_the_set(monkeypatch):
    """The probe runs every layer twice; a 100-sample set is measured on 32 of its samples."""
    from edgec.passes.quantize import quantize as quantize_module

    measured = []
    original = bias_correction.measure_together

    def counting(float_graph, quantized, samples):
        measured.append(len(list(samples)))
        return original(float_graph, quantized, samples)

    monkeypatch.setattr(quantize_module.mean_shifts, "measure_together", counting)
    _quantized(_model(), _samples(100, 0), "fast")
    assert measured == [quantize_module.BIAS_PROBE_SAMPLES]


def _linear_layers():
    """Layers whose output mean the probe computes from input means: a strided 1x1 Conv, a
    grouped 1x1 Conv, a padded 3x3 Conv, a depthwise SAME_LOWER stride-2 Conv, a strided and
    dilated 3x2 Conv with asymmetric pads, and Gemms with and without transB (alpha, beta)."""
    b = GraphBuilder(seed=9)
    rng = np.random.default_rng(5)

    def bias(n):
        return b.const(rng.standard_normal(n).astype(np.float32))

    x = b.input("x", [1, 4, 9, 9])
    h = b.op("Conv", [x, b.weight(8, 4, 1, 1), bias(8)], strides=[2, 2])
    grouped = b.op("Conv", [h, b.weight(8, 4, 1, 1), bias(8)], group=2)
    h = b.op("Relu", [grouped])
    h = b.op("Conv", [h, b.weight(6, 8, 3, 3), bias(6)], pads=[1, 1, 1, 1])
    h = b.op("Conv", [h, b.weight(6, 1, 3, 3), bias(6)], group=6, auto_pad="SAME_LOWER", strides=[2, 2])
    h = b.op("Conv", [h, b.weight(6, 6, 3, 2), bias(6)], strides=[2, 1], dilations=[1, 2], pads=[2, 0, 1, 1])
    flat = b.op("Flatten", [b.op("GlobalAveragePool", [h])])
    g = b.op("Gemm", [flat, b.weight(6, 5), bias(5)], alpha=0.7, beta=1.5)
    b.output(b.op("Gemm", [g, b.weight(3, 5), bias(3)], transB=1))
    return b.model(), [1, 4, 9, 9]


def _sequence_layers():
    """A 1-D convolution (kernel 5, stride 3, pads 2/1) into a Gemm."""
    b = GraphBuilder(seed=3)
    rng = np.random.default_rng(6)
    x = b.input("x", [1, 3, 20])
    bias = b.const(rng.standard_normal(4).astype(np.float32))
    h = b.op("Conv", [x, b.weight(4, 3, 5), bias], strides=[3], pads=[2, 1])
    flat = b.op("Flatten", [b.op("GlobalAveragePool", [b.op("Relu", [h])])])
    b.output(b.op("Gemm", [flat, b.weight(4, 2), b.const(rng.standard_normal(2).astype(np.float32))]))
    return b.model(), [1, 3, 20]


@pytest.mark.parametrize("build", [_linear_layers, _sequence_layers])
def test_input_means_measure_what_the_quantized_copy_measures(monkeypatch, build):
    """Linearity: the shifts from input means (per channel, or per channel and kernel offset
    with strides, dilations and padding) equal, to float32 rounding, the shifts from running a
    quantized copy of the layer; two graphs measured in one probe get what each gets alone."""
    model, shape = build()
    stack = (np.random.default_rng(2).standard_t(3, (24, *shape)) + 0.3).astype(np.float32)
    quantize = QuantizePass(calib="percentile", percentile=99.0, bias_correction="off", recover=False)
    wide, narrow = model.copy(), model.copy()
    apply_pass(quantize, wide.graph, PassContext(calibration=calib.load(stack, model)))
    quantize = QuantizePass(calib="percentile", percentile=90.0, bias_correction="off", recover=False)
    apply_pass(quantize, narrow.graph, PassContext(calibration=calib.load(stack, model)))
    samples = [{"x": s} for s in stack]
    layers = bias_correction._layers(wide.graph, set(model.graph.tensors()))
    _, planned = bias_correction._probe(model.graph, layers)
    assert len(planned) == len(layers)  # no layer needs its copy
    assert sum(planned[i].visits is not None for i in planned) == (3 if build is _linear_layers else 1)

    together = bias_correction.measure_together(model.graph, [wide.graph, narrow.graph], samples)
    alone = [bias_correction.measure(model.graph, g, samples) for g in (wide.graph, narrow.graph)]
    monkeypatch.setattr(bias_correction, "_moments", lambda *args: None)
    copied = [bias_correction.measure(model.graph, g, samples) for g in (wide.graph, narrow.graph)]
    offsets = [layers[i].node.name for i in planned if planned[i].visits is not None]
    # something to agree on: the 90th percentile's clipping shifts every offset layer
    assert all(np.abs(copied[1][name][0]).max() > 1e-3 for name in offsets)
    for measured, copy in zip(together, copied):
        assert set(copy) == set(measured) and len(copy) == len(layers)
        for name, (shift, _) in copy.items():
            np.testing.assert_allclose(measured[name][0], shift, rtol=1e-3, atol=1e-6)
    for one, other in zip(together, alone):
        assert set(one) == set(other)
        for name in one:
            np.testing.assert_array_equal(one[name][0], other[name][0])
