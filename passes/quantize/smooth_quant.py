"""SmoothQuant (Xiao et al., 2023): move the range of outlier activation channels into the weights.

A MatMul's (or Gemm's) input often has a few channels whose values are 10-100x the others
(LayerNorm outputs in transformers); one int8 scale for the whole tensor then leaves the other
channels a handful of levels. For Y = X W, scaling input channel k by 1/s_k and row k of W by s_k
computes the same Y, and with s_k = max|X_k|^alpha / max|W_k|^(1 - alpha) both X and W have
flatter ranges. Per-channel weights absorb the larger rows at little cost.

Every MatMul/Gemm reading the same activation with constant weights shares one s (the Q, K and V
projections of one LayerNorm). 1/s folds into the node that writes the activation: a
LayerNormalization's scale and bias, a Mul's constant gain, or a MatMul/Gemm's weight columns,
through Relu/LeakyRelu and a bias Add; activations anything else also reads, or that another op
writes, are left alone (see _divide_activation). Exact in real arithmetic; in float32 the
rescaled products round differently.

Not in -O int8: on the real-model corpus (held-out SQNR, onnx backend, alpha 0.5) it moved
plcmos-v2 50.2 -> 50.8 dB and DNSMOS 16.62 -> 16.66; PP-OCRv4's recognizer and oww-hey-jarvis
have no outlier channels (max/median channel range < 4), MTCNN-ONet and magika nothing it can
fold; none of the corpus models is a float transformer with LayerNorm outliers (smart-turn's
weights are int8 already), the case it exists for (its test: 12 -> 38 dB).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from edgec import ir, runner
from edgec.graph_utils import NameGen, constant_value, is_graph_output, producer, reduce_node, set_constant_input
from edgec.pass_infra import Pass, PassContext, PassResult, option
from edgec.quant import collect

# Calibration samples the activation maxima are measured on (spread over the set); NNCF's
# SmoothQuant takes a subset of 300 the same way.
MAX_SAMPLES = 128
SCALE_LIMITS = (1e-5, 1e5)


@dataclass
class _Group:
    activation: gs.Variable
    layers: list[gs.Node]  # every MatMul/Gemm reading `activation` as input 0 with a constant weight


class SmoothQuantPass(Pass):
    name = "smooth-quant"
    summary = "Migrate activation outlier channels into MatMul/Gemm weights (SmoothQuant; run before quantize)."
    requires_calibration = True
    # The migration strength: 0 leaves activations as they are, 1 moves all of their range into
    # the weights. The paper's default is 0.5; NNCF's for MatMul is 0.95.
    alpha: float = option(0.5, min=0, max=1)
    # Activations whose channel maxima differ by less than this factor are left alone: there is
    # no outlier to move, only weight precision to lose.
    min_spread: float = option(4.0, min=1)

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        ir.infer_shapes(graph)
        groups = _groups(graph)
        # Only activations whose scaling can fold somewhere are worth a calibration run.
        foldable = [g for g in groups if _absorbing_constants(graph, g.activation, _channels(g), len(g.layers))]
        stats = {"candidates": len(groups), "smoothed": 0, "folded_into": [], "unfoldable": len(groups) - len(foldable)}
        if not foldable:
            return PassResult(False, {**stats, "channel_spread": []})
        maxima = _channel_maxima(graph, foldable, ctx)
        names = NameGen(graph)
        smoothed, spreads = [], []
        for group in foldable:
            act = maxima.get(group.activation.name)
            if act is None:
                continue
            live = act[act > 0]  # dead channels (always 0) would make any spread look huge
            spread = float(live.max() / np.median(live)) if live.size else 1.0
            if not np.isfinite(spread) or spread < self.min_spread:
                continue
            weight = np.max([np.abs(_rows(layer)).max(axis=1) for layer in group.layers], axis=0)
            scale = np.ones_like(act)
            ok = (act > 0) & (weight > 0)
            scale[ok] = act[ok] ** self.alpha / weight[ok] ** (1 - self.alpha)
            scale = np.clip(scale, *SCALE_LIMITS)
            smoothed.append(_divide_activation(graph, group, scale, names))
            for layer in group.layers:
                _scale_rows(layer, scale, names)
            spreads.append(round(spread, 1))
        stats.update(smoothed=len(smoothed), folded_into=sorted(set(smoothed)), channel_spread=spreads)
        return PassResult(bool(smoothed), stats)


def _channels(group: _Group) -> int:
    layer = group.layers[0]
    return constant_value(layer.inputs[1]).shape[_weight_rows_axis(layer)]


def _weight_rows_axis(layer: gs.Node) -> int:
    """The axis of the constant weight that the activation's channels multiply."""
    return 1 if layer.op == "Gemm" and layer.attrs.get("transB", 0) else 0


def _rows(layer: gs.Node) -> np.ndarray:
    weight = constant_value(layer.inputs[1])
    return np.moveaxis(weight, _weight_rows_axis(layer), 0).astype(np.float64)


def _smoothable(node: gs.Node, tensor: gs.Tensor) -> bool:
    if node.op not in ("MatMul", "Gemm") or node.inputs[0] is not tensor:
        return False
    if node.op == "Gemm" and node.attrs.get("transA", 0):
        return False
    weight = constant_value(node.inputs[1])
    return weight is not None and weight.ndim == 2 and np.issubdtype(weight.dtype, np.floating)


def _groups(graph: gs.Graph) -> list[_Group]:
    found = []
    for tensor in graph.tensors().values():
        if not isinstance(tensor, gs.Variable) or tensor.dtype is None or tensor.shape is None:
            continue
        if not np.issubdtype(np.dtype(tensor.dtype), np.floating) or len(tensor.shape) < 2:
            continue
        layers = [n for n in tensor.outputs if _smoothable(n, tensor)]
        channels = {constant_value(n.inputs[1]).shape[_weight_rows_axis(n)] for n in layers}
        if layers and len(channels) == 1 and tensor.shape[-1] in channels:
            found.append(_Group(tensor, layers))
    return found


def _channel_maxima(graph: gs.Graph, groups: list[_Group], ctx: PassContext) -> dict[str, np.ndarray]:
    """max |x| per last-axis channel of each group's activation over the calibration samples,
    reduced in the graph (the tensors themselves never leave onnxruntime)."""
    model = ir.Model(graph).copy()
    probe = model.graph
    tensors = probe.tensors()
    fresh = NameGen(probe)
    outputs: dict[str, gs.Variable] = {}
    for group in groups:
        tensor = tensors[group.activation.name]
        magnitude = gs.Variable(fresh(f"{tensor.name}__abs"), dtype=tensor.dtype)
        peak = gs.Variable(fresh(f"{tensor.name}__channel_peak"), dtype=tensor.dtype)
        axes = list(range(len(tensor.shape) - 1))
        reduce = reduce_node("ReduceMax", magnitude, peak, axes, probe.opset, fresh(f"{tensor.name}__axes"))
        probe.nodes += [gs.Node("Abs", inputs=[tensor], outputs=[magnitude]), reduce]
        outputs[group.activation.name] = peak
    probe.outputs = list(outputs.values())
    probe.cleanup(remove_unused_graph_inputs=False).toposort()
    samples = ctx.calibration
    if len(samples) > MAX_SAMPLES:
        samples = samples.subset(samples.spread(MAX_SAMPLES), "smooth-quant")
    session = runner.make_session(model, optimize=True)
    inputs = [i.name for i in session.get_inputs()]
    wanted = [peak.name for peak in outputs.values()]
    maxima: dict[str, np.ndarray] = {}
    for feeds, _ in collect.batches(samples, model):
        for name, value in zip(outputs, session.run(wanted, {k: feeds[k] for k in inputs})):
            value = np.asarray(value, np.float64)
            maxima[name] = value if name not in maxima else np.maximum(maxima[name], value)
    return maxima


def _scale_rows(layer: gs.Node, scale: np.ndarray, names: NameGen) -> None:
    weight = constant_value(layer.inputs[1])
    shape = [-1, 1] if _weight_rows_axis(layer) == 0 else [1, -1]
    scaled = (weight.astype(np.float64) * scale.reshape(shape)).astype(weight.dtype)
    set_constant_input(layer, 1, scaled, names, f"{layer.name}_smoothed_weight")


# Ops that commute with a positive per-channel divisor: relu(x / s) = relu(x) / s for s > 0.
HOMOGENEOUS = ("Relu", "LeakyRelu")


def _divide_activation(graph: gs.Graph, group: _Group, scale: np.ndarray, names: NameGen) -> str:
    """Divide the activation by `scale` inside the node that computes it, through Relu/LeakyRelu
    and a bias Add (_absorbing_constants found one); returns that node's op. A Mul
    inserted in front of the layers instead (NNCF's way) gains nothing in a Q/DQ graph: the
    activation is still quantized as the Mul's input, outliers and all (measured: 12.0 vs
    11.7 dB on this pass's test model, 38 dB with the divisor folded)."""
    edits = _absorbing_constants(graph, group.activation, scale.size, len(group.layers))
    for node, index, columns_axis in edits:
        value = constant_value(node.inputs[index])
        if columns_axis is None:  # a per-channel (or scalar) gain or bias along the last axis
            new = np.broadcast_to(value.astype(np.float64), scale.shape) / scale
        else:  # a layer's weight: its output channels are this axis
            new = value.astype(np.float64) / scale.reshape([-1, 1] if columns_axis == 0 else [1, -1])
        set_constant_input(node, index, new.astype(value.dtype), names, f"{node.name}_smoothed")
    return edits[-1][0].op


def _absorbing_constants(graph: gs.Graph, activation: gs.Variable, channels: int, readers: int) -> list | None:
    """[(node, constant input index, weight column axis or None)] whose division by the scale
    divides `activation` by it, or None."""
    tensor, edits = activation, []
    while True:
        if len(tensor.outputs) != readers or is_graph_output(graph, tensor):
            return None  # someone else would read the scaled values
        readers = 1
        node = producer(tensor)
        if node is None:
            return None
        if node.op in HOMOGENEOUS:
            tensor = node.inputs[0]
            continue
        if node.op == "Add":  # a bias: divide it, then whatever computes the other operand
            constant = [i for i in (0, 1) if constant_value(node.inputs[i]) is not None]
            if len(constant) != 1 or not _per_channel(constant_value(node.inputs[constant[0]]), channels):
                return None
            edits.append((node, constant[0], None))
            tensor = node.inputs[1 - constant[0]]
            if producer(tensor) is None or producer(tensor).op not in ("MatMul", "Gemm"):
                return None
            continue
        break
    if node.op == "LayerNormalization" and int(node.attrs.get("axis", -1)) in (-1, len(activation.shape) - 1):
        indices = [i for i in (1, 2) if i < len(node.inputs) and not node.inputs[i].is_empty()]
        if all(_per_channel(constant_value(node.inputs[i]), channels) for i in indices):
            return edits + [(node, i, None) for i in indices]
    elif node.op == "Mul":
        constant = [i for i in (0, 1) if constant_value(node.inputs[i]) is not None]
        if len(constant) == 1 and _per_channel(constant_value(node.inputs[constant[0]]), channels):
            return edits + [(node, constant[0], None)]
    elif node.op in ("MatMul", "Gemm") and _smoothable(node, node.inputs[0]):
        columns_axis = 0 if node.op == "Gemm" and node.attrs.get("transB", 0) else 1
        if constant_value(node.inputs[1]).shape[columns_axis] != channels:
            return None
        bias = node.op == "Gemm" and len(node.inputs) > 2 and not node.inputs[2].is_empty()
        if bias and not _per_channel(constant_value(node.inputs[2]), channels):
            return None
        return edits + [(node, 1, columns_axis)] + ([(node, 2, None)] if bias else [])
    return None


def _per_channel(value: np.ndarray | None, channels: int) -> bool:
    """A float constant that broadcasts along the last axis only: a scalar, [C], [1, C], ..."""
    if value is None or not np.issubdtype(value.dtype, np.floating):
        return False
    shape = np.shape(value)
    return all(d == 1 for d in shape[:-1]) and shape[-1:] in ((), (1,), (channels,))
