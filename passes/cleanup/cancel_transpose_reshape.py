"""Cancel or merge back-to-back Transposes and back-to-back reshapes (Reshape/Flatten/Squeeze/Unsqueeze)."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from edgec import ir
from edgec.graph_utils import NameGen, bypass, constant_value, is_graph_output, only_consumer, remove_node, static_shape
from edgec.ir import iter_graphs
from edgec.pass_infra import Pass, PassContext, PassResult

RESHAPES = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")


class CancelTransposeReshapePass(Pass):
    name = "cancel-transpose-reshape"
    summary = "Cancel inverse Transpose pairs, merge Transpose chains and collapse chains of reshapes."

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        ir.infer_shapes(graph)
        names = NameGen(graph)
        stats = {"transposes_removed": 0, "transposes_merged": 0, "reshapes_removed": 0, "reshapes_merged": 0}
        for g in list(iter_graphs(graph)):
            changed = True
            while changed:  # each rewrite can expose the next pair
                changed = False
                for node in list(g.nodes):
                    if not node.outputs:  # removed by an earlier rewrite in this sweep
                        continue
                    if node.op == "Transpose":
                        changed |= _transpose(g, node, stats)
                    elif node.op in RESHAPES:
                        changed |= _reshape(g, node, stats, names)
        return PassResult(any(stats.values()), stats)


def _perm(node: gs.Node, rank: int | None) -> list[int] | None:
    perm = node.attrs.get("perm")
    if perm is None:
        return list(reversed(range(rank))) if rank is not None else None
    return [int(p) for p in perm]


def _rank(tensor: gs.Tensor) -> int | None:
    return len(tensor.shape) if tensor.shape is not None else None


def _transpose(graph: gs.Graph, node: gs.Node, stats: dict) -> bool:
    x = node.inputs[0]
    perm = _perm(node, _rank(x))
    if perm is None:
        return False
    if perm == list(range(len(perm))):
        if bypass(graph, node, x):
            stats["transposes_removed"] += 1
            return True
        return False
    first = x.inputs[0] if len(x.inputs) == 1 else None
    if first is None or first.op != "Transpose" or only_consumer(graph, x) is not node:
        return False
    inner = _perm(first, _rank(first.inputs[0]))
    if inner is None or len(inner) != len(perm):
        return False
    # y = transpose(transpose(a, inner), perm)  =>  y[i] takes axis inner[perm[i]] of a.
    composed = [inner[p] for p in perm]
    source = first.inputs[0]
    node.inputs[0] = source
    node.attrs["perm"] = composed
    _drop_if_unused(graph, first)
    if composed == list(range(len(composed))) and bypass(graph, node, source):
        stats["transposes_removed"] += 2
    else:
        stats["transposes_merged"] += 1
    return True


def _reshape(graph: gs.Graph, node: gs.Node, stats: dict, names: NameGen) -> bool:
    x, y = node.inputs[0], node.outputs[0]
    in_shape, out_shape = static_shape(x), static_shape(y)
    if in_shape is not None and in_shape == out_shape:
        if bypass(graph, node, x):
            stats["reshapes_removed"] += 1
            return True
    first = x.inputs[0] if len(x.inputs) == 1 else None
    if first is None or first.op not in RESHAPES or only_consumer(graph, x) is not node:
        return False
    target = _target_shape(node, y)
    if target is None:
        return False
    # Any chain of reshapes equals one Reshape from the chain's input to its final shape.
    source = first.inputs[0]
    node.op = "Reshape"
    node.attrs = {}
    node.inputs.clear()
    node.inputs.extend([source, gs.Constant(names(f"{y.name}_shape"), target)])
    _drop_if_unused(graph, first)
    stats["reshapes_merged"] += 1
    return True


def _target_shape(node: gs.Node, y: gs.Tensor) -> np.ndarray | None:
    """A Reshape shape input that yields y whatever the input is: y's static shape with at most
    one unknown dimension as -1, or the node's own constant shape when it has no 0 entries."""
    if y.shape is not None:
        dims = [d if isinstance(d, (int, np.integer)) and d >= 0 else -1 for d in y.shape]
        if dims.count(-1) <= 1:
            return np.asarray(dims, dtype=np.int64)
    if node.op == "Reshape" and len(node.inputs) > 1 and not node.attrs.get("allowzero", 0):
        shape = constant_value(node.inputs[1])
        if shape is not None and 0 not in shape.tolist():
            return np.asarray(shape, dtype=np.int64)
    return None


def _drop_if_unused(graph: gs.Graph, node: gs.Node) -> None:
    if not any(out.outputs or is_graph_output(graph, out) for out in node.outputs):
        remove_node(graph, node)
