"""Where Q/DQ pairs go, with what parameters, and the rewrite that puts them there.

Generated names are short (`<tensor>_q`, `_dq`, `_s` scale, `_zp` zero point) and Q/DQ nodes
are unnamed: in a small int8 model the names are a visible share of the file.

Activations get QuantizeLinear -> DequantizeLinear on the tensors around quantized ops, placed
the way onnxruntime and OpenVINO pattern-match them into int8 kernels: a Conv/Gemm/MatMul reads
DQ'd inputs and an int8 weight through DQ, and writes into Q (a following Relu/Clip is absorbed
by that Q's range, so the runtime drops it). Weights become int8 initializers + DequantizeLinear
(per output channel), biases int32 with scale s_in * s_w. Graph outputs stay float, except in
schemes for fully int8 runtimes (TFLite), where they get Q/DQ and keep their names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from edgec.graph_utils import NameGen, constant_value, is_graph_output
from edgec.quant import scheme as schemes
from edgec.quant.normalization import float_normalization_nodes
from edgec.quant.scheme import ABSORBED_ACTIVATIONS, COMPUTE_OPS, SHARED_OPS, Scheme


@dataclass
class Plan:
    nodes: list[gs.Node]  # the quantized nodes
    tensors: list[str]  # activations that get Q/DQ, in graph order
    absorbed: dict[str, str] = field(default_factory=dict)  # compute output -> activation output it defers to
    channelwise: set[str] = field(default_factory=set)  # activations quantized per channel (axis 1)


def _is_float(tensor: gs.Tensor) -> bool:
    dtype = tensor.dtype
    return dtype is not None and not isinstance(dtype, int) and np.issubdtype(np.dtype(dtype), np.floating)


def _activations(node: gs.Node) -> list[gs.Tensor]:
    """The non-constant float inputs (the data, not shapes, axes or weights). A weight that is
    already int8 (DequantizeLinear of a constant: weight-only int8 imports) is a weight too."""
    inputs = node.inputs[:1] if node.op in SHARED_OPS and node.op != "Concat" else node.inputs
    return [
        t
        for t in inputs
        if not isinstance(t, gs.Constant) and not t.is_empty() and _is_float(t) and not _stored_int8(t)
    ]


def _stored_int8(tensor: gs.Tensor) -> bool:
    producer = tensor.inputs[0] if tensor.inputs else None
    return producer is not None and producer.op == "DequantizeLinear" and isinstance(producer.inputs[0], gs.Constant)


def plan(graph: gs.Graph, scheme: Scheme, fallback: set[str]) -> Plan:
    """Decide which nodes and tensors to quantize (main graph; subgraphs stay float)."""
    kept_float = float_normalization_nodes(graph) if scheme.float_normalizations else set()
    candidates = [
        n
        for n in graph.nodes
        if n.op in scheme.quantized_ops and n.name not in fallback and id(n) not in kept_float and _activations(n)
    ]
    if scheme.residual_adds_only:
        candidates = [n for n in candidates if n.op != "Add" or len(_activations(n)) >= 2]
    chosen = {id(n) for n in candidates}
    # A Relu/Clip is quantized as part of the layer before it; after a float layer (a fallback,
    # or an op with no int8 kernel) it stays float too, so a fallback layer is float end to end.
    candidates = [n for n in candidates if n.op not in ABSORBED_ACTIVATIONS or _follows_quantized(n, chosen)]
    core = [n for n in candidates if n.op not in SHARED_OPS]
    tensors: set[str] = set()
    absorbed: dict[str, str] = {}
    for node in core:
        tensors.update(t.name for t in _activations(node))
        if scheme.output_qdq:
            for out in node.outputs:
                if _is_float(out):
                    tensors.add(out.name)
    if scheme.output_qdq:
        _absorb_activations(graph, core, tensors, absorbed)
        _extend_through_shared_ops(graph, candidates, tensors, scheme.float_outputs)
    if scheme.float_outputs:
        for out in graph.outputs:
            tensors.discard(out.name)
    else:
        _extend_back_through_shared_ops(candidates, tensors)
    quantized = [n for n in candidates if any(t.name in tensors for t in _activations(n) + list(n.outputs))]
    channelwise = set()
    if scheme.depthwise_inputs != "per-tensor":
        depthwise, standalone = _depthwise_inputs(graph, quantized, tensors)
        if scheme.depthwise_inputs == "per-channel":
            channelwise = depthwise
        elif standalone:  # "float-if-unfused": those layers stay float
            tensors_by_name = graph.tensors()
            layers = {r.name for name in standalone for r in tensors_by_name[name].outputs}
            return plan(graph, scheme, fallback | layers)
    order = {name: i for i, name in enumerate(graph.tensors())}
    return Plan(quantized, sorted(tensors, key=lambda n: order.get(n, 0)), absorbed, channelwise)


def is_depthwise(node: gs.Node) -> bool:
    """A Conv whose every group is one input channel (weight [C_out, 1, ...], group > 1)."""
    if node.op != "Conv" or int(node.attrs.get("group", 1)) <= 1 or len(node.inputs) < 2:
        return False
    shape = node.inputs[1].shape
    return shape is not None and len(shape) >= 3 and shape[1] == 1


def _depthwise_inputs(graph: gs.Graph, quantized: list[gs.Node], tensors: set[str]):
    """(the planned tensors read only by planned depthwise Convs, with a static channel count:
    the candidates for Scheme.depthwise_inputs; those whose producer is not planned)."""
    planned = {id(n) for n in quantized}
    found, standalone = set(), set()
    for name, tensor in graph.tensors().items():
        if name not in tensors or not isinstance(tensor, gs.Variable) or is_graph_output(graph, tensor):
            continue
        readers = list(tensor.outputs)
        if not readers or not all(is_depthwise(r) and id(r) in planned and r.inputs[0] is tensor for r in readers):
            continue
        shape = tensor.shape
        if not shape or len(shape) < 3 or not isinstance(shape[1], int) or shape[1] <= 1:
            continue
        producer = tensor.inputs[0] if len(tensor.inputs) == 1 else None
        if producer is not None and id(producer) in planned and producer.op in SHARED_OPS:
            continue  # it passes its input's parameters on (_share)
        found.add(name)
        if producer is None or id(producer) not in planned:
            standalone.add(name)
    return found, standalone


# A Concat joining inputs whose ranges differ this much (boxes in pixels and 0..1 scores of a
# detector head) would give the small one a handful of int8 levels under one shared scale.
MIXED_CONCAT_RATIO = 32.0


def mixed_concats(plan_: Plan, ranges: dict[str, tuple[float, float]]) -> set[str]:
    """Names of the planned Concats whose quantized inputs hold different quantities."""
    mixed = set()
    for node in plan_.nodes:
        if node.op != "Concat":
            continue
        spans = [max(abs(lo), abs(hi)) for lo, hi in (ranges[t.name] for t in _activations(node) if t.name in ranges)]
        if len(spans) > 1 and max(spans) > MIXED_CONCAT_RATIO * max(min(spans), np.finfo(np.float32).tiny):
            mixed.add(node.name)
    return mixed


def _follows_quantized(node: gs.Node, chosen: set[int]) -> bool:
    source = node.inputs[0]
    return len(source.inputs) == 1 and id(source.inputs[0]) in chosen and source.inputs[0].op not in SHARED_OPS


def _absorb_activations(graph, core, tensors, absorbed) -> None:
    """Conv -> Relu: quantize after the Relu only, so the runtime folds the Relu into the Q."""
    for node in core:
        if node.op not in COMPUTE_OPS + ("Add",):
            continue
        out = node.outputs[0]
        if len(out.outputs) == 1 and not is_graph_output(graph, out):
            follower = out.outputs[0]
            if follower.op in ABSORBED_ACTIVATIONS and any(n is follower for n in core):
                tensors.discard(out.name)
                absorbed[out.name] = follower.outputs[0].name


def _extend_through_shared_ops(graph, candidates, tensors, float_outputs: bool) -> None:
    """Reshape/MaxPool/Concat... stay int8 when their input is: their output gets Q/DQ too."""
    changed = True
    while changed:
        changed = False
        for node in candidates:
            if node.op in SHARED_OPS and any(t.name in tensors for t in _activations(node)):
                for out in node.outputs:
                    if (
                        _is_float(out)
                        and out.name not in tensors
                        and not (float_outputs and is_graph_output(graph, out))
                    ):
                        tensors.add(out.name)
                        changed = True


def _extend_back_through_shared_ops(candidates, tensors) -> None:
    """Fully int8 runtimes: a Flatten/Reshape... feeding an int8 layer gets its input quantized
    too, so it runs in int8 instead of in float before the QuantizeLinear."""
    changed = True
    while changed:
        changed = False
        for node in candidates:
            if node.op in SHARED_OPS and any(o.name in tensors for o in node.outputs):
                for tensor in _activations(node):
                    if tensor.name not in tensors:
                        tensors.add(tensor.name)
                        changed = True


# --- parameters ---------------------------------------------------------------------------------


def activation_ranges(
    graph: gs.Graph, plan_: Plan, ranges: dict[str, tuple[float, float]], scheme: Scheme
) -> dict[str, tuple[np.float32, np.integer]]:
    """Per-tensor (scale, zero point): calibrated ranges, tightened where an op bounds its output
    (Relu, Clip), fixed where the scheme says so, and shared through rearranging ops."""
    producers = {t.name: n for n in graph.nodes for t in n.outputs}
    adjusted = dict(ranges)
    for name, (lo, hi) in ranges.items():
        node = producers.get(name)
        if node is None:
            continue
        if node.op == "Relu":
            adjusted[name] = (0.0, hi)
        elif node.op == "Clip":
            low, high = _clip_bounds(node)
            adjusted[name] = (max(lo, low), min(hi, high))
    params = {name: schemes.activation_params(lo, hi, scheme) for name, (lo, hi) in adjusted.items()}
    for name in params:
        node = producers.get(name)
        if node is not None and node.op in scheme.fixed_outputs:
            scale, zero_point = scheme.fixed_outputs[node.op]
            params[name] = (np.float32(scale), scheme.np_dtype.type(zero_point))
    _share(graph, plan_, params, adjusted, scheme)
    return params


def channelwise_params(plan_: Plan, params: dict, observers: dict, scheme: Scheme) -> None:
    """Per-channel (scales, zero points) for the plan's channelwise tensors: each channel's
    observed [min, max] within the tensor's own calibrated range, so a channel is never clipped
    less than the per-tensor method clips it (NNCF takes per-channel min-max alone)."""
    for name in plan_.channelwise:
        observer = observers.get(name)
        if name not in params or observer is None or observer.channel_min is None:
            continue
        lo, hi = schemes.range_of(*params[name], scheme)
        params[name] = schemes.channel_activation_params(
            np.maximum(observer.channel_min, lo), np.minimum(observer.channel_max, hi), scheme
        )


def _clip_bounds(node: gs.Node) -> tuple[float, float]:
    low = constant_value(node.inputs[1]) if len(node.inputs) > 1 and not node.inputs[1].is_empty() else None
    high = constant_value(node.inputs[2]) if len(node.inputs) > 2 and not node.inputs[2].is_empty() else None
    return (float(low) if low is not None else -np.inf, float(high) if high is not None else np.inf)


def _share(graph, plan_, params, ranges, scheme) -> None:
    """Rearranging ops output their input's parameters; Concat gives all its inputs and its output
    one set (the union of their ranges), as TFLite requires and onnxruntime fuses best."""
    for node in graph.nodes:  # topological: parameters flow forward
        if node.op not in SHARED_OPS or not node.outputs or node.outputs[0].name not in params:
            continue
        inputs = [t for t in _activations(node) if t.name in params]
        if not inputs:
            continue
        if node.op == "Concat":
            names = [t.name for t in inputs] + [node.outputs[0].name]
            lo = min(ranges.get(n, (0.0, 0.0))[0] for n in names)
            hi = max(ranges.get(n, (0.0, 0.0))[1] for n in names)
            shared = schemes.activation_params(lo, hi, scheme)
            for name in names:
                params[name] = shared
        else:
            for out in node.outputs:
                if out.name in params:
                    params[out.name] = params[inputs[0].name]


# --- the rewrite --------------------------------------------------------------------------------


def insert_activation_qdq(graph: gs.Graph, tensor: gs.Variable, scale, zero_point, names: NameGen) -> None:
    """x -> QuantizeLinear -> DequantizeLinear -> (every former reader of x). A graph output
    keeps its name on the DequantizeLinear's output, so callers still find it."""
    readers = list(tensor.outputs)
    output_slots = [i for i, t in enumerate(graph.outputs) if t is tensor]
    q_scale = gs.Constant(names(f"{tensor.name}_s"), np.asarray(scale, np.float32))
    q_zero = gs.Constant(names(f"{tensor.name}_zp"), np.asarray(zero_point))
    quantized = gs.Variable(names(f"{tensor.name}_q"), dtype=np.asarray(zero_point).dtype, shape=tensor.shape)
    restored = gs.Variable(names(f"{tensor.name}_dq"), dtype=tensor.dtype, shape=tensor.shape)
    axis = {"axis": 1} if np.ndim(scale) == 1 else {}  # per channel (channelwise_params)
    q = gs.Node("QuantizeLinear", "", attrs=dict(axis), inputs=[tensor, q_scale, q_zero], outputs=[quantized])
    dq = gs.Node(
        "DequantizeLinear",
        "",
        attrs=dict(axis),
        inputs=[quantized, q_scale, q_zero],
        outputs=[restored],
    )
    for reader in readers:
        for i, t in enumerate(reader.inputs):
            if t is tensor:
                reader.inputs[i] = restored
    if output_slots:
        original = tensor.name
        tensor.name, restored.name = names(f"{original}_f"), original
        for i in output_slots:
            graph.outputs[i] = restored
    graph.nodes.extend([q, dq])


def layers_reading_inputs(graph: gs.Graph) -> set[str]:
    """Names of the compute layers whose data input is a model input, through layout ops only: the
    layers that see dense, full-range uint8 values (an image, a waveform), where x86's saturating
    u8 x s8 pair sums overflow first (NNCF applies its overflow fix to these by default)."""
    inputs = {t.name for t in graph.inputs}
    names = set()
    for node in graph.nodes:
        if node.op not in COMPUTE_OPS or not node.inputs:
            continue
        tensor = node.inputs[0]
        while tensor.inputs and tensor.inputs[0].op in SHARED_OPS + ("Pad", "Cast"):
            tensor = tensor.inputs[0].inputs[0]
        if tensor.name in inputs:
            names.add(node.name)
    return names


def weight_axis(node: gs.Node, per_channel: bool) -> int | None:
    """The output-channel axis of a node's weight, where per-channel scales go."""
    if not per_channel:
        return None
    if node.op == "Conv":
        return 0
    if node.op == "ConvTranspose":
        return 1 if int(node.attrs.get("group", 1)) == 1 else None
    if node.op == "Gemm":
        return 0 if int(node.attrs.get("transB", 0)) else 1
    if node.op == "MatMul":
        weight = constant_value(node.inputs[1])
        return weight.ndim - 1 if weight is not None and weight.ndim >= 2 else None
    return None


def quantize_weight_input(
    graph: gs.Graph,
    node: gs.Node,
    index: int,
    axis: int | None,
    names: NameGen,
    min_scale=None,
    qmax: int = schemes.WEIGHT_QMAX,
    memo: dict | None = None,
):
    """Replace a float constant input by int8 + DequantizeLinear; returns the scale (or None).
    `memo`: rounded weights by the float array they came from, reused by the next rewrite of
    the same float graph (calib=auto's candidates differ in activation ranges only)."""
    weight = node.inputs[index]
    values = constant_value(weight)
    if values is None or not np.issubdtype(values.dtype, np.floating):
        return None
    key = (id(values), axis, qmax)
    known = memo.get(key) if memo is not None else None
    if known is None or known[0] is not values:  # the array itself is kept: its id cannot be reused
        known = (values, *schemes.quantize_weights(values, axis, None, qmax))
        if memo is not None:
            memo[key] = known
    q, scale = known[1].copy(), known[2]
    if min_scale is not None and np.any(np.asarray(min_scale) > scale):  # the bias would not fit int32
        q, scale = schemes.quantize_weights(values, axis, min_scale, qmax)
    _dequantized_input(
        graph, node, index, q, scale, _symmetric_zero(node, np.int8, scale), axis, names, f"{weight.name}_q"
    )
    return scale


def widen_stored_weight(node: gs.Node, index: int, qmax: int) -> None:
    """An input that is already int8 (DequantizeLinear of a constant) but uses more than [-qmax, qmax]
    goes back to its float values, so quantize_weight_input re-rounds it into the range: imported
    full-range weights would saturate the int8 kernels of x86 CPUs without VNNI just the same."""
    tensor = node.inputs[index] if index < len(node.inputs) else None
    if tensor is None or not _stored_int8(tensor):
        return
    dq = tensor.inputs[0]
    stored = np.asarray(dq.inputs[0].values)
    if stored.dtype != np.int8 or int(np.abs(stored.astype(np.int32)).max(initial=0)) <= qmax:
        return
    node.inputs[index] = gs.Constant(f"{tensor.name}_float", dequantized_constant(dq))


def dequantized_constant(dq: gs.Node) -> np.ndarray:
    """The output of a DequantizeLinear of constants as onnxruntime computes it (see dequantize)."""
    zero = constant_value(dq.inputs[2]) if len(dq.inputs) > 2 and not dq.inputs[2].is_empty() else None
    return dequantize(constant_value(dq.inputs[0]), constant_value(dq.inputs[1]), zero, int(dq.attrs.get("axis", 1)))


def dequantize(stored: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int = 1) -> np.ndarray:
    """DequantizeLinear as onnxruntime computes it: float32(q - zero_point) * scale, per channel
    along `axis` when the scale has one per channel."""
    stored = np.asarray(stored)
    scale = np.asarray(scale, np.float32)
    zero = np.asarray(0 if zero_point is None else zero_point)
    if scale.ndim == 1 and stored.ndim > 1:
        shape = [1] * stored.ndim
        shape[axis % stored.ndim] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape) if zero.ndim == 1 else zero
    # int64: an int32 bias minus its zero point cannot wrap; np.asarray keeps a 0-d result an array.
    return np.asarray(((stored.astype(np.int64) - zero.astype(np.int64)).astype(np.float32) * scale), np.float32)


def quantize_bias_input(graph, node, index, input_scale, weight_scale, names) -> bool:
    bias = constant_value(node.inputs[index]) if index < len(node.inputs) else None
    if bias is None or bias.ndim != 1 or weight_scale is None:
        return False
    weight_scale = np.broadcast_to(np.asarray(weight_scale, np.float32), bias.shape)
    q, scale = schemes.quantize_bias(bias, input_scale, weight_scale)
    zero_point = _symmetric_zero(node, np.int32, scale)
    _dequantized_input(graph, node, index, q, scale, zero_point, 0, names, f"{node.inputs[index].name}_q")
    return True


def _symmetric_zero(node: gs.Node, dtype, scale):
    """Zero points of symmetric constants: left out (None, read as 0 by ONNX) where that saves one
    per output channel and onnxruntime still fuses the layer (Conv); Gemm/MatMul keep theirs, since
    onnxruntime 1.32 fuses them into QGemm only when the weight's DequantizeLinear names one."""
    if node.op in ("Conv", "ConvTranspose"):
        return None
    return np.zeros(np.shape(scale), dtype)


def _dequantized_input(graph, node, index, q, scale, zero_point, axis, names, base) -> None:
    """Constant input -> stored `q` + DequantizeLinear. A zero point of None (symmetric weights and
    biases) is left out: ONNX reads it as 0, and one per channel would cost as much as the scales."""
    source = node.inputs[index]
    # A 0-d operand (Mul(x, 0.1667) in Paddle/TF exports) clips to a numpy scalar, which
    # onnx-graphsurgeon refuses as a Constant's values.
    q = np.asarray(q)
    stored = gs.Constant(names(base), q)
    scale_c = gs.Constant(names(f"{base}_s"), np.asarray(scale, np.float32))
    operands = [stored, scale_c]
    if zero_point is not None:
        operands.append(gs.Constant(names(f"{base}_zp"), np.asarray(zero_point)))
    restored = gs.Variable(names(f"{base}_dq"), dtype=source.dtype, shape=list(q.shape))
    attrs = {"axis": int(axis)} if axis is not None and np.asarray(scale).ndim == 1 else {}
    dq = gs.Node(
        "DequantizeLinear",
        "",
        attrs=attrs,
        inputs=operands,
        outputs=[restored],
    )
    node.inputs[index] = restored
    graph.nodes.append(dq)
