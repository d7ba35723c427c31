"""The IR's precision brought into the form TensorRT builds from.

TensorRT chooses kernel precisions itself (--fp16/--int8), so the file it parses holds float32:
- a float16 IR (-O fp16) is widened back to float32; its weights keep their float16-rounded
  values, so the engine built with --fp16 computes on the weights the IR was checked with;
- an int8 IR keeps its Q/DQ in TensorRT's explicit-quantization form (symmetric int8, zero
  points present, weights as float -> QuantizeLinear -> DequantizeLinear, the form TensorRT 8's
  QAT exports use), or loses them entirely for a float engine, its weights staying int8-rounded.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from edgec.errors import EdgecError
from edgec.graph_utils import NameGen, bypass, constant_value, is_graph_output, remove_node, replace_uses
from edgec.ir import iter_graphs

QDQ = ("QuantizeLinear", "DequantizeLinear")


# --- float16 -> float32 ---------------------------------------------------------------------


def widen_fp16(graph: gs.Graph) -> int:
    """Undo convert-fp16: float<->float Casts go, float16 tensors and constants become float32
    (exactly: every float16 is a float32). Returns the number of Casts removed."""
    removed = 0
    for g in list(iter_graphs(graph)):
        for node in list(g.nodes):
            if node.op == "Cast" and int(node.attrs.get("to", 0)) in (onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT):
                source = node.inputs[0]
                if _is(source, np.float16) or _is(source, np.float32):
                    if not bypass(g, node, source):  # a graph output fed straight from an input
                        node.op, node.attrs = "Identity", {}
                    removed += 1
                    continue
                node.attrs["to"] = onnx.TensorProto.FLOAT  # int -> float16 becomes int -> float32
            for key, value in list(node.attrs.items()):
                if isinstance(value, gs.Constant) and value.values.dtype == np.float16:
                    node.attrs[key] = gs.Constant(value.name, value.values.astype(np.float32))
        for tensor in g.tensors().values():
            if isinstance(tensor, gs.Constant) and tensor.values.dtype == np.float16:
                tensor.values = tensor.values.astype(np.float32)
                tensor.export_dtype = None  # the imported float16 would otherwise be written back
            elif _is(tensor, np.float16):
                tensor.dtype = np.float32
    return removed


# --- int8 -----------------------------------------------------------------------------------


def activation_scales(graph: gs.Graph) -> dict[str, np.float32]:
    """The scale of every activation the IR quantizes (QuantizeLinear on a computed tensor), by
    tensor name: what TensorRT's calibration cache records (scale = amax / 127)."""
    scales = {}
    for node in graph.nodes:
        if node.op != "QuantizeLinear" or isinstance(node.inputs[0], gs.Constant):
            continue
        scale = _constant(node, 1)
        zero = _constant_or_none(node, 2)
        where = f"QuantizeLinear '{node.name or node.outputs[0].name}'"
        if scale.size != 1:
            raise EdgecError(f"{where} quantizes an activation per axis; TensorRT takes per-tensor scales")
        if zero is None or zero.dtype != np.int8 or zero.any():
            raise EdgecError(
                f"{where} is not symmetric int8, which a TensorRT calibration cache assumes "
                "(quantize with scheme=tensorrt)"
            )
        scales[node.inputs[0].name] = np.float32(scale.reshape(-1)[0])
    return scales


def strip_qdq(graph: gs.Graph) -> int:
    """The float graph of an int8 IR: weights dequantized to float32 constants (the int8-rounded
    values the IR computes with) and every activation Q -> DQ pair removed. Returns pairs removed."""
    names = NameGen(graph)
    removed = 0
    for g in list(iter_graphs(graph)):
        for node in [n for n in g.nodes if n.op == "DequantizeLinear" and isinstance(n.inputs[0], gs.Constant)]:
            values = dequantize(node)
            _replace_output(g, node, gs.Constant(names(f"{node.inputs[0].name}_float"), values))
        for node in [n for n in g.nodes if n.op == "QuantizeLinear"]:
            x, q = node.inputs[0], node.outputs[0]
            readers = list(q.outputs)
            if is_graph_output(g, q) or any(r.op != "DequantizeLinear" for r in readers):
                raise EdgecError(f"QuantizeLinear '{node.name}' feeds more than DequantizeLinear: no float form")
            for dq in readers:
                if not bypass(g, dq, x):
                    _become_identity(dq, x)
            remove_node(g, node)
            removed += 1
        left = [n.name or n.op for n in g.nodes if n.op in QDQ]
        if left:
            raise EdgecError(f"Q/DQ nodes without a float form: {', '.join(left[:6])}")
        g.cleanup(remove_unused_graph_inputs=False)
    return removed


def tensorrt_qdq(graph: gs.Graph) -> tuple[int, int]:
    """Q/DQ as TensorRT 8.2's parser takes them: three inputs (the zero point is required),
    int8 zero points of 0, positive constant scales, per-axis scales on weights only; int8
    weights become float -> QuantizeLinear -> DequantizeLinear (Q gives the same int8 back:
    round(q * s / s) = q) and int32 biases plain float (TensorRT adds biases in float).
    A stored weight whose Q/DQ TensorRT cannot read becomes its float values. Returns (weights
    requantized, weights dequantized)."""
    names = NameGen(graph)
    weights = dequantized = 0
    problems = []
    for g in list(iter_graphs(graph)):
        for node in [n for n in g.nodes if n.op in QDQ]:
            source = node.inputs[0]
            if node.op == "DequantizeLinear" and _constant_dtype(source) == np.int32:
                _replace_output(g, node, gs.Constant(names(f"{source.name}_float"), dequantize(node)))
                continue
            problem = _check_qdq(node, names)
            if problem and node.op == "DequantizeLinear" and isinstance(source, gs.Constant):
                # A stored weight TensorRT cannot read as int8 (uint8 with a zero point: what
                # float-integer-ops leaves of onnxruntime's dynamic int8) is the same float weight.
                _replace_output(g, node, gs.Constant(names(f"{source.name}_float"), dequantize(node)))
                dequantized += 1
                continue
            if problem:
                problems.append(f"{node.op} '{node.name or node.outputs[0].name}' ({problem})")
                continue
            if node.op != "DequantizeLinear" or not isinstance(source, gs.Constant):
                continue
            values = dequantize(node)
            float_weight = gs.Constant(names(f"{source.name}_float"), values)
            requantized = gs.Variable(names(f"{source.name}_requant"), dtype=np.int8, shape=list(values.shape))
            g.nodes.append(
                gs.Node(
                    "QuantizeLinear",
                    names(f"{node.name or source.name}_q"),
                    dict(node.attrs),
                    [float_weight, node.inputs[1], node.inputs[2]],
                    [requantized],
                )
            )
            node.inputs[0] = requantized
            weights += 1
        g.toposort(recurse_subgraphs=False)
        g.cleanup(remove_unused_graph_inputs=False)
    if problems:
        raise EdgecError(
            "TensorRT takes only symmetric int8 Q/DQ with constant per-tensor (per-channel on weights) "
            f"scales: {'; '.join(problems[:6])}" + ("; ..." if len(problems) > 6 else "")
        )
    return weights, dequantized


def dequantize(node: gs.Node) -> np.ndarray:
    """A constant DequantizeLinear's output exactly as onnxruntime computes it:
    float32(q - zero_point) * scale, broadcast along `axis`."""
    q = node.inputs[0].values
    scale = _constant(node, 1).astype(np.float32)
    zero = _constant(node, 2) if len(node.inputs) > 2 and not node.inputs[2].is_empty() else np.zeros((), np.int64)
    if scale.size > 1:
        shape = [1] * q.ndim
        shape[int(node.attrs.get("axis", 1)) % q.ndim] = -1
        scale, zero = scale.reshape(shape), np.asarray(zero).reshape(shape)
    # np.asarray: arithmetic on a 0-d weight gives a numpy scalar, which a gs.Constant refuses.
    return np.asarray(((q.astype(np.int64) - np.asarray(zero, np.int64)).astype(np.float32) * scale), np.float32)


def _check_qdq(node: gs.Node, names: NameGen) -> str | None:
    scale = _constant_or_none(node, 1)
    if scale is None:
        return "scale computed at run time"
    if not (scale > 0).all():
        return "a scale is not positive"
    if len(node.inputs) < 3 or node.inputs[2].is_empty():
        # TensorRT 8.2 needs the zero point spelled out. Without one QuantizeLinear means uint8;
        # a DequantizeLinear of int8 data means int8, and gets an explicit zero.
        if node.op == "QuantizeLinear":
            return "no zero point: uint8"
        if not _is_int8_source(node):
            return f"{_dtype_name(node.inputs[0])} data"
        while len(node.inputs) < 3:
            node.inputs.append(gs.Variable.empty())
        node.inputs[2] = gs.Constant(names(f"{node.inputs[1].name}_zero"), np.zeros(scale.shape, np.int8))
    zero = _constant_or_none(node, 2)
    if zero is None:
        return "zero point computed at run time"
    if zero.dtype != np.int8:
        return f"{zero.dtype} zero point, TensorRT takes int8"
    if (zero != 0).any():
        return "asymmetric: non-zero zero point"
    if scale.size > 1 and not isinstance(node.inputs[0], gs.Constant):
        return "per-axis scales on an activation"
    return None


def _replace_output(graph: gs.Graph, node: gs.Node, value: gs.Constant) -> None:
    out = node.outputs[0]
    if is_graph_output(graph, out):
        _become_identity(node, value)
        return
    replace_uses(graph, out, value)
    remove_node(graph, node)


def _become_identity(node: gs.Node, source: gs.Tensor) -> None:
    """The node keeps its output (a graph output's name) and now just passes `source` on."""
    node.op, node.attrs = "Identity", {}
    node.inputs.clear()
    node.inputs.append(source)


def _constant(node: gs.Node, index: int) -> np.ndarray:
    value = _constant_or_none(node, index)
    if value is None:
        raise EdgecError(f"{node.op} '{node.name}': input {index} is computed at run time, TensorRT needs a constant")
    return value


def _constant_or_none(node: gs.Node, index: int) -> np.ndarray | None:
    return None if index >= len(node.inputs) else constant_value(node.inputs[index])


def _constant_dtype(tensor: gs.Tensor):
    return tensor.values.dtype if isinstance(tensor, gs.Constant) else None


def _is_int8_source(node: gs.Node) -> bool:
    source = node.inputs[0]
    return _constant_dtype(source) == np.int8 or _is(source, np.int8)


def _is(tensor: gs.Tensor, dtype) -> bool:
    if isinstance(tensor, gs.Constant):
        return tensor.values.dtype == dtype
    found = tensor.dtype
    return found is not None and not isinstance(found, int) and np.dtype(found) == np.dtype(dtype)


def _dtype_name(tensor: gs.Tensor) -> str:
    if isinstance(tensor, gs.Constant):
        return str(tensor.values.dtype)
    return str(tensor.dtype)
