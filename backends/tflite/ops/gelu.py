"""GELU: TFLite has no ERF kernel but a GELU one, so the exact-GELU subgraph exporters write,
x * 0.5 * (1 + erf(x / sqrt(2))) in any association (PyTorch: Div, Erf, Add, Mul, Mul; Hugging
Face: Mul(x, 0.5) beside it), becomes one Gelu node before lowering; ONNX's own Gelu (opset 20)
lowers the same way."""

from __future__ import annotations

import math

import numpy as np
import onnx_graphsurgeon as gs
from ai_edge_litert import schema_py_generated as schema

from edgec.graph_utils import constant_value
from edgec.passes.cleanup.topological_sort import sort_nodes

SQRT2 = math.sqrt(2.0)
RTOL = 1e-4  # constants as exporters round them (1.4142135, 0.70710677)


def _scalar(tensor) -> float | None:
    value = constant_value(tensor)
    return float(np.asarray(value, np.float64).ravel()[0]) if value is not None and np.size(value) == 1 else None


def _close(value: float | None, wanted: float) -> bool:
    return value is not None and abs(value - wanted) <= RTOL * abs(wanted)


def _only_reader(tensor: gs.Tensor, keep: set[str]):
    """The single node reading `tensor`, when nothing else (and no graph output) needs it."""
    return tensor.outputs[0] if len(tensor.outputs) == 1 and tensor.name not in keep else None


def _other(node: gs.Node, tensor: gs.Tensor):
    return node.inputs[1] if node.inputs[0] is tensor else node.inputs[0]


def _match(erf: gs.Node, keep: set[str]) -> tuple[gs.Tensor, list[gs.Node], gs.Tensor] | None:
    """(x, the nodes to replace, the GELU output) for the Erf of one exact-GELU subgraph."""
    scaled = erf.inputs[0]
    if len(scaled.inputs) != 1 or _only_reader(scaled, keep) is not erf:
        return None
    head = scaled.inputs[0]
    if head.op == "Div" and _close(_scalar(head.inputs[1]), SQRT2):
        x = head.inputs[0]
    elif head.op == "Mul" and any(_close(_scalar(t), 1 / SQRT2) for t in head.inputs):
        x = next(t for t in head.inputs if not _close(_scalar(t), 1 / SQRT2))
    else:
        return None
    nodes, tensor = [head, erf], erf.outputs[0]
    add = _only_reader(tensor, keep)
    if add is None or add.op != "Add" or not _close(_scalar(_other(add, tensor)), 1.0):
        return None
    nodes.append(add)
    tensor, factor, has_x = add.outputs[0], 1.0, False
    while not (has_x and _close(factor, 0.5)):
        mul = _only_reader(tensor, keep)
        if mul is None or mul.op != "Mul":
            return None
        operand = _other(mul, tensor)
        value = _scalar(operand)
        half_x = operand.inputs[0] if isinstance(operand, gs.Variable) and len(operand.inputs) == 1 else None
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
            nodes.append(half_x)
        else:
            return None
        nodes.append(mul)
        tensor = mul.outputs[0]
        if len(nodes) > 8:
            return None
    return x, nodes, tensor


def fuse_erf_gelu(graph: gs.Graph) -> int:
    """Replace every exact-GELU subgraph of `graph` with a Gelu node; returns how many."""
    keep = {t.name for t in graph.outputs}
    fused = 0
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
        graph.nodes.append(gs.Node("Gelu", f"{erf.name}/gelu", {"approximate": "none"}, [x], [out]))
        fused += 1
    if fused:
        graph.nodes = sort_nodes(graph)  # iterative: onnx-graphsurgeon's toposort recurses per node
    return fused


def lower_gelu(ctx, node) -> None:
    approximate = node.attrs.get("approximate", "none")
    approximate = approximate.decode() if isinstance(approximate, bytes) else approximate
    x = ctx.get(node.inputs[0])
    out = ctx.new(node.outputs[0], nhwc=x.nhwc)
    options = schema.GeluOptionsT()
    options.approximate = approximate == "tanh"
    ctx.builder.operator(schema.BuiltinOperator.GELU, [x.index], [out.index], options, schema.BuiltinOptions.GeluOptions)


LOWERINGS = {"Gelu": lower_gelu}
