"""GELU: TFLite has no ERF kernel but a GELU one, so the exact-GELU subgraph exporters write,
x * 0.5 * (1 + erf(x / sqrt(2))) in any association (PyTorch: Div, Erf, Add, Mul, Mul; Hugging
Face: Mul(x, 0.5) beside it), becomes one Gelu node before lowering; ONNX's own Gelu (opset 20)
lowers the same way. In an int8 model the quantize pass has put Q/DQ pairs between the subgraph's
Add and Muls and stored its constants int8: before the Q/DQ pairs are folded, such a subgraph is
rewritten as the plain float one, so GELU then runs in float between DEQUANTIZE and QUANTIZE."""

from __future__ import annotations

import math

import numpy as np
import onnx_graphsurgeon as gs
from ai_edge_litert import schema_py_generated as schema

from edgec.backends.tflite.quantized import dequantized_values
from edgec.graph_utils import constant_value
from edgec.passes.cleanup.topological_sort import sort_nodes

SQRT2 = math.sqrt(2.0)
RTOL = 1e-4  # constants as exporters round them (1.4142135, 0.70710677)


def _scalar(tensor) -> float | None:
    """A one-element constant, also one the quantize pass stored int8 (DequantizeLinear of a constant)."""
    value = constant_value(tensor)
    producer = tensor.inputs[0] if isinstance(tensor, gs.Variable) and len(tensor.inputs) == 1 else None
    if value is None and producer is not None and producer.op == "DequantizeLinear":
        stored = constant_value(producer.inputs[0])
        value = None if stored is None else dequantized_values(producer, np.asarray(stored))
    return float(np.asarray(value, np.float64).ravel()[0]) if value is not None and np.size(value) == 1 else None


def _close(value: float | None, wanted: float) -> bool:
    """Within RTOL, or exactly the constant rounded to float16 (convert-fp16's weights: 1/sqrt(2)
    becomes 0.70703125, 1.1e-4 off)."""
    return value is not None and (abs(value - wanted) <= RTOL * abs(wanted) or value == float(np.float16(wanted)))


def _only_reader(tensor: gs.Tensor, keep: set[str]):
    """The single node reading `tensor`, when nothing else (and no graph output) needs it."""
    return tensor.outputs[0] if len(tensor.outputs) == 1 and tensor.name not in keep else None


def _reader(tensor: gs.Tensor, keep: set[str], nodes: list) -> tuple[gs.Node | None, gs.Tensor]:
    """(the single reader of `tensor`, the tensor it reads) past QuantizeLinear -> DequantizeLinear
    pairs, which join `nodes` (replaced with the subgraph)."""
    reader = _only_reader(tensor, keep)
    while reader is not None and reader.op == "QuantizeLinear":
        dequantize = _only_reader(reader.outputs[0], keep)
        if dequantize is None or dequantize.op != "DequantizeLinear":
            return None, tensor
        nodes += [reader, dequantize]
        tensor = dequantize.outputs[0]
        reader = _only_reader(tensor, keep)
    return reader, tensor


def _producer(tensor: gs.Tensor, keep: set[str], nodes: list) -> gs.Node | None:
    """The node computing `tensor`, before QuantizeLinear -> DequantizeLinear pairs that only pass
    it on (they join `nodes`)."""
    producer = tensor.inputs[0] if len(tensor.inputs) == 1 else None
    while producer is not None and producer.op == "DequantizeLinear" and len(producer.inputs[0].inputs) == 1:
        quantize = producer.inputs[0].inputs[0]
        if quantize.op != "QuantizeLinear" or _only_reader(producer.inputs[0], keep) is not producer:
            break
        if _only_reader(quantize.inputs[0], keep) is not quantize:
            return None
        nodes += [quantize, producer]
        tensor = quantize.inputs[0]
        producer = tensor.inputs[0] if len(tensor.inputs) == 1 else None
    return producer


def _other(node: gs.Node, tensor: gs.Tensor):
    return node.inputs[1] if node.inputs[0] is tensor else node.inputs[0]


def _match(erf: gs.Node, keep: set[str]) -> tuple[gs.Tensor, list[gs.Node], gs.Tensor] | None:
    """(x, the nodes to replace, the GELU output) for the Erf of one exact-GELU subgraph."""
    scaled, nodes = erf.inputs[0], []
    if len(scaled.inputs) != 1 or _only_reader(scaled, keep) is not erf:
        return None
    head = _producer(scaled, keep, nodes)
    if head is None:
        return None
    if head.op == "Div" and _close(_scalar(head.inputs[1]), SQRT2):
        x = head.inputs[0]
    elif head.op == "Mul" and any(_close(_scalar(t), 1 / SQRT2) for t in head.inputs):
        x = next(t for t in head.inputs if not _close(_scalar(t), 1 / SQRT2))
    else:
        return None
    nodes += [head, erf]
    add, tensor = _reader(erf.outputs[0], keep, nodes)
    if add is None or add.op != "Add" or not _close(_scalar(_other(add, tensor)), 1.0):
        return None
    nodes.append(add)
    tensor, factor, has_x = add.outputs[0], 1.0, False
    while not (has_x and _close(factor, 0.5)):
        mul, tensor = _reader(tensor, keep, nodes)
        if mul is None or mul.op != "Mul":
            return None
        operand = _other(mul, tensor)
        value = _scalar(operand)
        beside: list = []
        half_x = _producer(operand, keep, beside) if isinstance(operand, gs.Variable) else None
        if value is not None:
            factor *= value
        elif operand is x and not has_x:
            has_x = True
        elif (  # Mul(x, 0.5) computed beside the chain, read only here
            half_x is not None and half_x.op == "Mul" and not has_x and x in half_x.inputs
            and _only_reader(operand, keep) is mul and _scalar(_other(half_x, x)) is not None
        ):
            factor *= _scalar(_other(half_x, x))
            has_x = True
            nodes += [*beside, half_x]
        else:
            return None
        nodes.append(mul)
        tensor = mul.outputs[0]
        if len(nodes) > 16:
            return None
    return x, nodes, tensor


def fuse_erf_gelu(graph: gs.Graph) -> int:
    """Replace every exact-GELU subgraph of `graph` with a Gelu node; returns how many."""
    return _replace(graph, lambda erf, x, out: [gs.Node("Gelu", f"{erf.name}/gelu", {"approximate": "none"}, [x], [out])])


def dequantize_erf_gelu(graph: gs.Graph) -> int:
    """Rewrite every exact-GELU subgraph, Q/DQ pairs and int8-stored constants included, as the
    plain float x * 0.5 * (1 + erf(x / sqrt(2))), which fuse_erf_gelu then matches after shape
    inference (a float one is merely re-spelled)."""

    def plain(erf, x, out):
        def scalar(name, value):
            return gs.Constant(f"{erf.name}/{name}", np.array(value, np.float32))

        scaled, erfed, plus = (gs.Variable(f"{erf.name}/{n}", x.dtype, x.shape) for n in ("scaled", "erf", "plus"))
        times = gs.Variable(f"{erf.name}/times", x.dtype, x.shape)
        return [
            gs.Node("Div", f"{erf.name}/div", inputs=[x, scalar("sqrt2", SQRT2)], outputs=[scaled]),
            gs.Node("Erf", erf.name, inputs=[scaled], outputs=[erfed]),
            gs.Node("Add", f"{erf.name}/add", inputs=[erfed, scalar("one", 1.0)], outputs=[plus]),
            gs.Node("Mul", f"{erf.name}/mul", inputs=[plus, x], outputs=[times]),
            gs.Node("Mul", f"{erf.name}/half", inputs=[times, scalar("half", 0.5)], outputs=[out]),
        ]

    return _replace(graph, plain)


def _replace(graph: gs.Graph, build) -> int:
    keep = {t.name for t in graph.outputs}
    replaced_count = 0
    for erf in [n for n in graph.nodes if n.op == "Erf"]:
        found = _match(erf, keep)
        if found is None:
            continue
        x, nodes, out = found
        for node in nodes:
            node.outputs.clear()
            node.inputs.clear()
        replaced = {id(node) for node in nodes}
        graph.nodes = [n for n in graph.nodes if id(n) not in replaced]
        graph.nodes.extend(build(erf, x, out))
        replaced_count += 1
    if replaced_count:
        graph.cleanup()  # the int8-stored constants the subgraph read
        graph.nodes = sort_nodes(graph)  # iterative: onnx-graphsurgeon's toposort recurses per node
    return replaced_count


def lower_gelu(ctx, node) -> None:
    approximate = node.attrs.get("approximate", "none")
    approximate = approximate.decode() if isinstance(approximate, bytes) else approximate
    x = ctx.get(node.inputs[0])
    out = ctx.new(node.outputs[0], nhwc=x.nhwc)
    options = schema.GeluOptionsT()
    options.approximate = approximate == "tanh"
    ctx.builder.operator(schema.BuiltinOperator.GELU, [x.index], [out.index], options, schema.BuiltinOptions.GeluOptions)


LOWERINGS = {"Gelu": lower_gelu}
