"""Per-layer calibration method choice: each activation tensor's own range method, where held-out
samples show the model's single method is not the best for that tensor.

calib=auto picks one method for the whole model, but methods trade clipping against rounding and
tensors differ: a post-ReLU tensor with a few outliers wants them clipped (entropy, mse), a
tensor feeding a sigmoid score or a softmax's logits wants its peaks kept (minmax). Starting
from the model's method, a coordinate descent tries each other method on SEGMENTS contiguous
runs of tensors, then on single tensors (those whose methods disagree most), and keeps a change
when the quantized model's worst output on the held-out scoring samples gains at least
MIN_GAIN_DB and the per-sample error reductions reach a paired t of MIN_T. (Intel Neural
Compressor tunes per-op calibration algorithms end to end the same way.)

The t test is what makes it safe: without it the search chose on noise. With the usual 16
scoring samples, Fashion-MNIST's MobileNetV2-style CNN took a change that gained 1.2 dB there and
lost 0.2 dB on the 10,000 test images (LeNet-5: +0.9, then -0.9); the gains came from one or two
samples (t ~ 1). calib=per-layer therefore holds out more samples (a quarter of the set, up to
quantize.PER_LAYER_SCORED).

Every trial runs in one onnxruntime session whose activation scales and zero points are inputs
instead of constants: a trial is one run over the samples, not a rewrite and a new session.
Scales go through qdq.activation_ranges like a real rewrite's (Relu/Clip bounds, fixed outputs,
sharing through rearranging ops); what the tunable model keeps from the model-wide rewrite is
its int32 biases (dequantized, they are the float biases to within int32 rounding), its per-
channel activation quantizers and the Concats it kept float. The build rewrites with the chosen
methods afterwards, so the artifact is exact.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_graphsurgeon as gs

from edgec import external_data, ir, runner
from edgec.quant import evaluation, qdq
from edgec.quant.observers import METHODS

# A change must also beat the current score by this much on the held-out samples (a significant
# but negligible gain is not worth a longer pipeline text).
MIN_GAIN_DB = 0.1
# Tensors whose methods' ranges all lie within this factor of each other are left at the model's
# method: their trials could only measure noise.
MIN_SPREAD = 1.1
# Single tensors tried, those whose methods disagree most first: with the segments, at most
# 3 x (SEGMENTS + this) model runs over the scoring samples (a count, not a time limit: the same
# inputs make the same choice).
MAX_TENSORS = 16
# Contiguous runs of tensors tried as one before single tensors.
SEGMENTS = 4
# The paired t statistic a change's per-sample error reductions must reach (one-sided p ~ 0.01
# from 16 samples up). A gain carried by one or two samples has t ~ 1 however many dB it shows.
MIN_T = 2.5


def paired_t(reductions: np.ndarray) -> float:
    """Mean over standard error of the per-sample error reductions (0 when they are all equal)."""
    deviation = float(np.std(reductions, ddof=1)) if len(reductions) > 1 else 0.0
    return float(np.mean(reductions)) / (deviation / math.sqrt(len(reductions))) if deviation > 0 else 0.0


def spread(ranges: dict[str, tuple[float, float]]) -> float:
    """Widest over narrowest span among one tensor's method ranges (1.0: all alike)."""
    spans = [hi - lo for lo, hi in ranges.values()]
    narrowest = min(spans)
    if narrowest <= 0:
        return math.inf if max(spans) > 0 else 1.0
    return max(spans) / narrowest


def candidates(method_ranges: dict[str, dict[str, tuple[float, float]]], tunable: set[str]) -> list[str]:
    """The tensors worth trying, widest disagreement first (ties in name order: deterministic)."""
    found = [(spread(r), name) for name, r in method_ranges.items() if name in tunable]
    found = [(s, name) for s, name in found if s >= MIN_SPREAD]
    found.sort(key=lambda item: (-item[0], item[1]))
    return [name for _, name in found[:MAX_TENSORS]]


def tunable_model(quantized: gs.Graph, tensors: set[str]) -> tuple[ir.Model, dict[str, tuple[str, str]]]:
    """A copy of the quantized graph whose per-tensor activation quantizers of `tensors` read their
    scale and zero point from new graph inputs: (model, tensor -> (scale input, zero point input))."""
    model = ir.Model(quantized).copy()
    graph = model.graph
    inputs: dict[str, tuple[str, str]] = {}
    for node in list(graph.nodes):
        if node.op != "QuantizeLinear" or isinstance(node.inputs[0], gs.Constant):
            continue
        name = node.inputs[0].name
        if name not in tensors or name in inputs or len(node.inputs) < 3:
            continue
        scale, zero_point = node.inputs[1], node.inputs[2]
        if not isinstance(scale, gs.Constant) or np.ndim(scale.values) != 0:
            continue  # per-channel: stays as the model-wide rewrite made it
        dequantizers = [n for n in node.outputs[0].outputs if n.op == "DequantizeLinear"]
        scale_in = gs.Variable(f"{name}__tuned_scale", dtype=np.float32, shape=[])
        zero_in = gs.Variable(f"{name}__tuned_zero_point", dtype=zero_point.values.dtype, shape=[])
        for quantizer in [node, *dequantizers]:
            quantizer.inputs[1], quantizer.inputs[2] = scale_in, zero_in
        graph.inputs.extend([scale_in, zero_in])
        inputs[name] = (scale_in.name, zero_in.name)
    graph.cleanup(remove_unused_graph_inputs=False)
    return model, inputs


def search(
    float_graph: gs.Graph,
    plan: qdq.Plan,
    quantized: gs.Graph,
    method_ranges: dict[str, dict[str, tuple[float, float]]],
    base_method: str,
    scheme,
    samples: list[dict],
    reference: list[dict],
) -> dict:
    """{"methods": tensor -> method (only the tensors that changed), "before_db", "after_db",
    "tried", "trials"}. `method_ranges`: each quantized tensor's range per method, from the
    fitting samples; `samples`/`reference`: the held-out scoring samples and the float outputs."""
    ranges_of = {name: r for name, r in method_ranges.items() if name in plan.tensors}
    model, inputs = tunable_model(quantized, set(ranges_of))
    tried = candidates(ranges_of, set(inputs))
    # the tunable tensors in graph order (a toposorted graph's producers come first)
    order = [t.name for n in float_graph.nodes for t in n.outputs if t.name in inputs]
    order = [t.name for t in float_graph.inputs if t.name in inputs] + order
    result = {"methods": {}, "tried": len(tried), "trials": 0, "accepted": 0}
    if not tried and len(order) < 2:
        return result | {"before_db": None, "after_db": None}
    if external_data.needed(model.graph):  # over 2 GB: one more session of it is not worth a refinement
        return result | {"before_db": None, "after_db": None, "skipped": "weights over the 2 GB protobuf limit"}
    session = runner.make_session(runner.dequantized_weights(model.to_onnx()))
    energy = {k: sum(float(np.sum(np.square(r[k], dtype=np.float64))) for r in reference) for k in reference[0]}

    def score(methods: dict[str, str]) -> tuple[float, np.ndarray]:
        """(worst output SQNR, each sample's error energy relative to each output's signal)."""
        ranges = {name: r[methods.get(name, base_method)] for name, r in ranges_of.items()}
        params = qdq.activation_ranges(float_graph, plan, ranges, scheme)
        tuned = {}
        for name, (scale_in, zero_in) in inputs.items():
            scale, zero_point = params[name]
            tuned[scale_in] = np.asarray(scale, np.float32)
            tuned[zero_in] = np.asarray(zero_point)
        outputs = runner.run(session, [{**sample, **tuned} for sample in samples])
        worst = evaluation.worst_output_db(outputs, reference)
        errors = np.array([
            sum(float(np.sum(np.square(o[k] - r[k], dtype=np.float64))) / max(energy[k], 1e-30) for k in r)
            for o, r in zip(outputs, reference)
        ])
        return worst, errors

    chosen: dict[str, str] = {}
    before, errors = score(chosen)
    best = before
    # Contiguous segments first (early layers may want their outliers clipped and the last ones
    # their peaks kept: a change over many tensors moves the output more than the samples' noise
    # does), then single tensors, those whose methods disagree most first.
    groups = [g for g in segments(order, SEGMENTS) if len(g) > 1] + [[name] for name in tried]
    for group in groups:
        winner = None
        tried_ranges = {_group_key(group, chosen, base_method, ranges_of)}
        for method in METHODS:
            trial_methods = {**chosen, **{name: method for name in group}}
            key = _group_key(group, trial_methods, base_method, ranges_of)
            if key in tried_ranges:  # the same ranges score the same
                continue
            tried_ranges.add(key)
            result["trials"] += 1
            trial, trial_errors = score(trial_methods)
            significant = paired_t(errors - trial_errors) >= MIN_T
            if significant and trial >= best + MIN_GAIN_DB and (winner is None or trial > winner[1]):
                winner = (trial_methods, trial, trial_errors)
        if winner is not None:
            chosen, best, errors = winner
            result["accepted"] += 1
    result["methods"] = {name: method for name, method in chosen.items() if method != base_method}
    return result | {"before_db": round(before, 2), "after_db": round(best, 2)}


def segments(names: list[str], count: int) -> list[list[str]]:
    """`names` cut into `count` contiguous runs of near-equal length (fewer when there are fewer names)."""
    count = min(count, len(names))
    return [names[i * len(names) // count : (i + 1) * len(names) // count] for i in range(count)]


def _group_key(group: list[str], methods: dict, base_method: str, ranges_of: dict) -> tuple:
    return tuple(_rounded(ranges_of[name][methods.get(name, base_method)]) for name in group)


def _rounded(bounds: tuple[float, float]) -> tuple[float, float]:
    """A range to 4 significant digits: methods landing on the same bins give one trial."""
    return tuple(float(f"{v:.4g}") for v in bounds)

