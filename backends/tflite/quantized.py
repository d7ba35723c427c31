"""Q/DQ IR -> int8 tensors: which ONNX nodes become TFLite int8 kernels, and their quantization.

The IR marks int8 the ONNX way: float ops between DequantizeLinear and QuantizeLinear. A TFLite
int8 op instead reads and writes int8 tensors that carry (scale, zero point). `fold_qdq` rewires
each node whose every float input comes through a DequantizeLinear and whose outputs all go into
QuantizeLinear (directly, or through a Relu/Clip the requantization absorbs) to the int8 tensors
around it, and records their parameters. Q/DQ left over become QUANTIZE/DEQUANTIZE operators;
int8-stored weights of float layers are dequantized into float constants.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from edgec.errors import EdgecError

# ONNX ops whose TFLite lowering has int8 kernels (TFLite's quantization spec).
INT8_OPS = {
    "Conv",
    "Gemm",
    "MatMul",
    "ConvTranspose",
    "Add",
    "Sub",
    "Mul",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "ReduceMean",
    "ReduceMax",
    "Relu",
    "Clip",
    "LeakyRelu",
    "HardSwish",
    "Sigmoid",
    "Tanh",
    "Softmax",
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Transpose",
    "Concat",
    "Pad",
    "Slice",
    "Split",
    "Gather",
    "Resize",
}
# TFLite's int8 kernels for these copy or pick values: input and output must share parameters
# (the lowering requantizes with a QUANTIZE where the IR gave the output its own).
SAME_PARAMS_OPS = {"MaxPool", "AveragePool", "ReduceMax", "Concat", "Pad", "Reshape", "Flatten", "Squeeze"}
SAME_PARAMS_OPS |= {"Unsqueeze", "Transpose", "Slice", "Split", "Gather", "Resize"}
# Float constant inputs that are attributes in disguise, not data: they stay float.
PARAMETER_INPUTS = {"Clip": {1, 2}, "Pad": {1, 2, 3}, "Resize": {1, 2, 3}, "Reshape": {1}, "Slice": {1, 2, 3, 4}}
ABSORBED = ("Relu", "Clip")


@dataclass
class QuantParams:
    """real = (q - zero_point) * scale; per channel along ONNX axis `axis` when scale has > 1 entry."""

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None = None
    # A weight-only int8 constant of a float layer: stored int8, DEQUANTIZEd to float32 in the file.
    dequantize: bool = False

    def same_as(self, other: "QuantParams") -> bool:
        return np.array_equal(self.scale, other.scale) and np.array_equal(self.zero_point, other.zero_point)


def dq_params(node: gs.Node, rank: int) -> QuantParams:
    scale = np.asarray(node.inputs[1].values, np.float32)
    if len(node.inputs) > 2 and not node.inputs[2].is_empty():
        zero_point = np.asarray(node.inputs[2].values)
    else:
        zero_point = np.zeros(scale.shape, np.int8)
    axis = int(node.attrs.get("axis", 1)) % max(rank, 1) if scale.size > 1 else None
    return QuantParams(scale.reshape(-1) if scale.size > 1 else scale, zero_point, axis)


def _producer(tensor: gs.Tensor) -> gs.Node | None:
    return tensor.inputs[0] if len(tensor.inputs) == 1 else None


def _dequantized(tensor: gs.Tensor) -> bool:
    """Comes out of a DequantizeLinear (of an int8 activation or an int8 weight)."""
    node = _producer(tensor)
    return node is not None and node.op == "DequantizeLinear"


def _only_quantizers(tensor: gs.Tensor, graph_outputs: set[int]) -> list[gs.Node] | None:
    """The QuantizeLinear nodes reading `tensor`, when they are all that reads it."""
    readers = list(tensor.outputs)
    if id(tensor) in graph_outputs or not readers or any(r.op != "QuantizeLinear" for r in readers):
        return None
    first = dq_params(readers[0], 0)
    if any(not dq_params(r, 0).same_as(first) for r in readers[1:]):
        return None
    return readers


def _plan_node(node: gs.Node, graph_outputs: set[int]) -> tuple[list, gs.Node | None] | None:
    """(the quantizers after it, an absorbed Relu/Clip or None) when `node` can run in int8."""
    if node.op not in INT8_OPS:
        return None
    parameters = PARAMETER_INPUTS.get(node.op, set())
    for i, tensor in enumerate(node.inputs):
        if tensor.is_empty() or i in parameters:
            continue
        floating = tensor.dtype is not None and np.issubdtype(np.dtype(tensor.dtype), np.floating)
        if floating and not _dequantized(tensor):
            return None
    if len(node.outputs) != 1 and node.op != "Split":
        return None
    quantizers = []
    absorbed = None
    for out in node.outputs:
        readers = _only_quantizers(out, graph_outputs)
        if readers is None and node.op not in ABSORBED and len(node.outputs) == 1 and len(out.outputs) == 1:
            follower = out.outputs[0]
            if follower.op in ABSORBED and id(out) not in graph_outputs:
                readers = _only_quantizers(follower.outputs[0], graph_outputs)
                absorbed = follower if readers is not None else None
        if readers is None:
            return None
        quantizers.append(readers)
    return quantizers, absorbed


BIAS_OPS = ("Conv", "Gemm", "ConvTranspose")


def _int32_bias(node: gs.Node, params: dict[str, QuantParams]) -> gs.Constant:
    """TFLite's int8 kernels take an int32 bias with scale s_in * s_w (per output channel). A bias
    the IR quantized otherwise (re-quantizing an int8 model requantizes its int32 bias like an
    activation) is re-expressed on that grid from the real values the IR computes with."""
    bias = node.inputs[2]
    s_in, s_w = params.get(node.inputs[0].name), params.get(node.inputs[1].name)
    held = params.get(bias.name)
    if s_in is None or s_w is None or not isinstance(node.inputs[1], gs.Constant):
        return bias
    channels = int(np.asarray(node.inputs[1].values).shape[1 if node.op == "ConvTranspose" else 0])
    if node.op == "Gemm" and not int(node.attrs.get("transB", 0)):
        channels = int(np.asarray(node.inputs[1].values).shape[1])
    scale = np.broadcast_to(s_in.scale.reshape(-1)[0] * s_w.scale.reshape(-1), (channels,)).astype(np.float32)
    values = np.asarray(bias.values)
    if held is not None and values.dtype == np.int32 and held.scale.size in (1, channels):
        if np.allclose(np.broadcast_to(held.scale.reshape(-1), (channels,)), scale, rtol=1e-6) and not np.any(
            held.zero_point
        ):
            return bias  # already TFLite's bias
    if held is not None:
        shape = [1] * values.ndim
        if held.axis is not None:
            shape[held.axis] = -1
        real = (values.astype(np.float64) - held.zero_point.astype(np.float64).reshape(shape)) * held.scale.reshape(
            shape
        )
    else:
        real = values.astype(np.float64)
    real = np.broadcast_to(real.reshape(-1), (channels,))
    limit = np.iinfo(np.int32)
    levels = np.clip(np.rint(real / scale), limit.min, limit.max).astype(np.int32)
    constant = gs.Constant(f"{bias.name}_int32", levels)
    if s_w.scale.size == 1:  # per-tensor weights want a per-tensor bias (XNNPACK refuses a mix)
        params[constant.name] = QuantParams(scale[:1].copy(), np.zeros(1, np.int64), None)
    else:
        params[constant.name] = QuantParams(scale, np.zeros(channels, np.int64), 0)
    return constant


def fold_constant_requantization(graph: gs.Graph) -> int:
    """QuantizeLinear(DequantizeLinear(int8 constant)) -> the int8 constant it computes. A
    quantizer that treats an already-int8 weight (weight-only models) as a float activation
    leaves such chains; the kernels need the weight itself. Computed as onnxruntime does
    (float32, round half to even, saturate). Returns how many were folded."""
    folded = 0
    for node in list(graph.nodes):
        if node.op != "QuantizeLinear" or not node.outputs:
            continue
        source = _producer(node.inputs[0])
        if source is None or source.op != "DequantizeLinear" or not isinstance(source.inputs[0], gs.Constant):
            continue
        stored = np.asarray(source.inputs[0].values)
        real = dequantized_values(source, stored)
        q = dq_params(node, real.ndim)
        if np.any(q.zero_point != 0) and _only_weights_after(node.outputs[0]):
            # Requantized like an activation (asymmetric): TFLite's int8 kernels take only
            # symmetric weights. The weight keeps its own int8 values and parameters instead.
            for dq in list(node.outputs[0].outputs):
                for reader in list(dq.outputs[0].outputs):
                    reader.inputs[reader.inputs.index(dq.outputs[0])] = source.outputs[0]
            folded += 1
            continue
        shape = [1] * real.ndim
        if q.axis is not None:
            shape[q.axis] = -1
        dtype = np.dtype(q.zero_point.dtype) if q.zero_point.dtype in (np.int8, np.uint8) else np.dtype(np.int8)
        info = np.iinfo(dtype)
        levels = np.rint(real / q.scale.reshape(shape).astype(np.float32)) + q.zero_point.reshape(shape)
        out = node.outputs[0]
        constant = gs.Constant(f"{out.name}_folded", np.clip(levels, info.min, info.max).astype(dtype))
        for reader in list(out.outputs):
            reader.inputs[reader.inputs.index(out)] = constant
        node.outputs.clear()
        folded += 1
    if folded:
        graph.cleanup(remove_unused_graph_inputs=False)
    return folded


def _only_weights_after(quantized_tensor: gs.Tensor) -> bool:
    """Every DequantizeLinear after it feeds only weight inputs (WEIGHT_INPUTS) of layers."""
    readers = list(quantized_tensor.outputs)
    for dq in readers:
        if dq.op != "DequantizeLinear" or not dq.outputs:
            return False
        for reader in dq.outputs[0].outputs:
            positions = [i for i, t in enumerate(reader.inputs) if t is dq.outputs[0]]
            if any(WEIGHT_INPUTS.get(reader.op) != i for i in positions):
                return False
    return bool(readers)


def dequantized_values(node: gs.Node, stored: np.ndarray) -> np.ndarray:
    """(q - zero_point) * scale in float32, as onnxruntime's DequantizeLinear computes it."""
    p = dq_params(node, stored.ndim)
    shape = [1] * stored.ndim
    if p.axis is not None:
        shape[p.axis] = -1
    levels = stored.astype(np.int32) - p.zero_point.astype(np.int32).reshape(shape)
    return (levels.astype(np.float32) * p.scale.reshape(shape).astype(np.float32)).astype(np.float32)


def uint8_to_int8(graph: gs.Graph) -> int:
    """Re-encode uint8 Q/DQ (onnxruntime's default QUInt8 activations) as int8, exactly: codes and
    zero points move by -128, so (q - zp) * scale is unchanged. LiteRT's int8 kernels take int8
    activations only; a uint8 one next to per-channel int8 weights fails to prepare. Left alone
    when a uint8 tensor reaches anything but DequantizeLinear (a graph output, an integer op).
    Returns how many Q/DQ nodes changed."""
    qdq = [n for n in graph.nodes if n.op in ("QuantizeLinear", "DequantizeLinear") and len(n.inputs) > 2]
    unsigned = [n for n in qdq if isinstance(n.inputs[2], gs.Constant) and n.inputs[2].values.dtype == np.uint8]
    outputs = {id(t) for t in graph.outputs}
    for node in unsigned:
        codes = node.outputs[0] if node.op == "QuantizeLinear" else node.inputs[0]
        readers_ok = all(r.op == "DequantizeLinear" for r in codes.outputs) and id(codes) not in outputs
        if not readers_ok or (node.op == "DequantizeLinear" and isinstance(codes, gs.Variable) and not codes.inputs):
            return 0  # a uint8 graph input or another reader: keep the model as it is
    shifted: dict[int, gs.Constant] = {}

    def signed(tensor: gs.Constant) -> gs.Constant:
        if id(tensor) not in shifted:
            values = np.asarray((np.asarray(tensor.values, np.int16) - 128).astype(np.int8))  # 0-d stays an array
            shifted[id(tensor)] = gs.Constant(f"{tensor.name}:int8", values)
        return shifted[id(tensor)]

    for node in unsigned:
        node.inputs[2] = signed(node.inputs[2])
        if node.op == "QuantizeLinear":
            node.outputs[0].dtype = np.int8
        elif isinstance(node.inputs[0], gs.Constant) and node.inputs[0].values.dtype == np.uint8:
            node.inputs[0] = signed(node.inputs[0])
    return len(unsigned)


def fold_qdq(graph: gs.Graph, weight_only: bool = False) -> dict[str, QuantParams]:
    """Rewire int8-capable nodes to int8 tensors (in place); returns every int8 tensor's parameters.
    `weight_only`: int8 weights of float layers stay int8 behind a DEQUANTIZE (else float32)."""
    uint8_to_int8(graph)
    fold_constant_requantization(graph)
    graph_outputs = {id(t) for t in graph.outputs}
    plans = [(node, _plan_node(node, graph_outputs)) for node in list(graph.nodes)]
    params: dict[str, QuantParams] = {}
    for node, plan in plans:
        if plan is None:
            continue
        quantizers, absorbed = plan
        for i, tensor in enumerate(node.inputs):
            source = _producer(tensor)
            if source is None or source.op != "DequantizeLinear":
                continue
            stored = source.inputs[0]
            params[stored.name] = dq_params(source, len(stored.shape or ()))
            node.inputs[i] = stored
        if node.op in BIAS_OPS and len(node.inputs) > 2 and isinstance(node.inputs[2], gs.Constant):
            node.inputs[2] = _int32_bias(node, params)
        last = absorbed or node
        for i, readers in enumerate(quantizers):
            target = readers[0].outputs[0]
            params[target.name] = dq_params(readers[0], 0)
            for extra in readers[1:]:  # same parameters: their readers share the first's int8 tensor
                for reader in list(extra.outputs[0].outputs):
                    reader.inputs[reader.inputs.index(extra.outputs[0])] = target
                extra.outputs.clear()
            for q in readers:
                q.inputs.clear()
                q.outputs.clear()
            if absorbed is not None:
                inner = gs.Variable(f"{node.outputs[0].name}", dtype=target.dtype, shape=target.shape)
                params[inner.name] = params[target.name]
                node.outputs[0] = inner
                absorbed.inputs[0] = inner
            last.outputs[i] = target
    _dequantize_float_weights(graph, params if weight_only else None)
    graph.cleanup(remove_unused_graph_inputs=False)
    for node in graph.nodes:  # parameters of the int8 tensors QUANTIZE/DEQUANTIZE read or write
        if node.op == "QuantizeLinear":
            params[node.outputs[0].name] = dq_params(node, 0)
        elif node.op == "DequantizeLinear":
            params[node.inputs[0].name] = dq_params(node, len(node.inputs[0].shape or ()))
    return params


# Where float layers read their weights: these keep int8 storage (TFLite's weight-only format).
WEIGHT_INPUTS = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1}


def _dequantize_float_weights(graph: gs.Graph, weight_only: dict[str, QuantParams] | None = None) -> None:
    """An int8 weight read by a float layer. TFLite's float kernels want float values: with
    `weight_only` (the parameters table) the weight input of Conv/Gemm/MatMul stays an int8
    constant that the lowering DEQUANTIZEs in the file (4x smaller, and LiteRT's DEQUANTIZE
    computes the same float32 values); every other reader gets a float32 constant."""
    for node in list(graph.nodes):
        if node.op != "DequantizeLinear" or not isinstance(node.inputs[0], gs.Constant) or not node.outputs:
            continue
        stored = np.asarray(node.inputs[0].values)
        out = node.outputs[0]
        real, int8 = None, None
        for reader in list(out.outputs):
            for position, tensor in enumerate(list(reader.inputs)):
                if tensor is not out:
                    continue
                keep = weight_only is not None and WEIGHT_INPUTS.get(reader.op) == position and stored.ndim >= 2
                if keep and stored.dtype in (np.int8, np.uint8):
                    if int8 is None:
                        int8 = gs.Constant(f"{out.name}_int8", stored)
                        params = dq_params(node, stored.ndim)
                        params.dequantize = True
                        weight_only[int8.name] = params
                    reader.inputs[position] = int8
                else:
                    if real is None:  # a 0-d weight's result is a scalar
                        real = gs.Constant(out.name, np.asarray(dequantized_values(node, stored), np.float32))
                    reader.inputs[position] = real
        node.outputs.clear()


def int8_io(graph: gs.Graph, params: dict[str, QuantParams]) -> list[str]:
    """The model reads and writes int8: a float input that only feeds QuantizeLinear becomes that
    int8 tensor, a DequantizeLinear'd output its int8 source (names kept). Returns those left float."""
    left_float = []
    for position, tensor in enumerate(list(graph.inputs)):
        readers = list(tensor.outputs)
        if not readers or any(r.op != "QuantizeLinear" for r in readers) or len(readers) > 1:
            left_float.append(tensor.name)
            continue
        quantized = readers[0].outputs[0]
        readers[0].outputs.clear()
        readers[0].inputs.clear()
        name = tensor.name
        params[name] = params.pop(quantized.name)
        quantized.name, quantized.shape = name, tensor.shape
        graph.inputs[position] = quantized
    for position, tensor in enumerate(list(graph.outputs)):
        source = _producer(tensor)
        if source is None or source.op != "DequantizeLinear" or isinstance(source.inputs[0], gs.Constant):
            left_float.append(tensor.name)
            continue
        quantized = source.inputs[0]
        if len(quantized.outputs) > 1:
            raise EdgecError(f"tflite: output '{tensor.name}' is also read inside the model; keep --io-dtype float32")
        source.inputs.clear()
        source.outputs.clear()
        name = tensor.name
        params[name] = params.pop(quantized.name)
        quantized.name = name
        graph.outputs[position] = quantized
    graph.cleanup(remove_unused_graph_inputs=False)
    return left_float
