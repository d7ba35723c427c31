"""Replace shape computations on static shapes (Shape -> Gather -> Unsqueeze -> Concat ...) by constants."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from edgec import ir
from edgec.graph_utils import constant_value, is_graph_output, remove_node
from edgec.ir import iter_graphs
from edgec.pass_infra import Pass, PassContext, PassResult
from edgec.passes.cleanup.fold_constants import FoldConstantsPass, inline_decided_ifs


# Each round needs a shape inference; real models needed 2-3 (a bound, not a budget).
MAX_ROUNDS = 32


class SimplifyShapesPass(Pass):
    name = "simplify-shapes"
    summary = "Turn Shape/Size of statically known dimensions into constants and fold the chains they feed."

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        stats = {"shape_ops_replaced": 0, "chain_nodes_folded": 0, "rounds": 0}
        # A folded chain gives a Reshape a constant shape, shape inference then knows its output,
        # and a Shape of that output becomes foldable: repeat until nothing changes (real models
        # stack such chains; one round left them for backends that cannot lower Shape).
        for _ in range(MAX_ROUNDS):
            ir.infer_shapes(graph)
            replaced, folded = self._round(graph)
            stats["shape_ops_replaced"] += replaced
            stats["chain_nodes_folded"] += folded
            stats["rounds"] += 1
            if not replaced:
                break
        return PassResult(stats["shape_ops_replaced"] > 0, stats)

    def _round(self, graph: gs.Graph) -> tuple[int, int]:
        replaced_count = folded_count = 0
        folder = FoldConstantsPass()
        for g in list(iter_graphs(graph)):
            seeds: set[int] = set()
            for node in list(g.nodes):
                found = _replacement(node)
                if found is None or is_graph_output(g, found[2]):
                    continue
                value, replaced, target = found
                for dead in replaced:
                    remove_node(g, dead)
                target.to_constant(np.asarray(value, dtype=np.int64))
                seeds.add(id(target))
                replaced_count += 1
            if seeds:
                folded, _ = folder.fold(g, seeds)
                folded_count += folded
        # An If on a shape (silero-vad's decoder checks its state's size) is decided now: its
        # taken branch joins the graph, and its shapes may fold in the next round.
        replaced_count += inline_decided_ifs(graph)
        return replaced_count, folded_count


def _replacement(node: gs.Node) -> tuple[np.ndarray, list[gs.Node], gs.Tensor] | None:
    """(value, nodes it replaces, tensor that becomes the constant) for a Shape or Size whose
    dimensions are known, or a Shape -> Gather that picks only known dimensions."""
    if node.op not in ("Shape", "Size") or not node.inputs or not node.outputs:
        return None
    shape = node.inputs[0].shape
    if shape is None:
        return None
    if node.op == "Size":
        return (
            (np.asarray(int(np.prod(shape)), dtype=np.int64), [node], node.outputs[0]) if _all_static(shape) else None
        )
    dims = list(shape)[slice(node.attrs.get("start", 0), node.attrs.get("end", len(shape)))]
    if _all_static(dims):
        return np.asarray(dims, dtype=np.int64), [node], node.outputs[0]
    picked = _gather_of_static_dims(node, dims)
    if picked is None:
        return None
    gather = node.outputs[0].outputs[0]
    return picked, [node, gather], gather.outputs[0]


def _gather_of_static_dims(node: gs.Node, dims: list) -> np.ndarray | None:
    """The value of Shape -> Gather when the Gather picks only known dimensions (e.g. C of [N, C, H, W])."""
    out = node.outputs[0]
    if len(out.outputs) != 1 or out.outputs[0].op != "Gather":
        return None
    gather = out.outputs[0]
    indices = constant_value(gather.inputs[1]) if len(gather.inputs) > 1 else None
    if indices is None or gather.inputs[0] is not out or int(gather.attrs.get("axis", 0)) != 0:
        return None
    picked = np.asarray(indices).astype(np.int64)
    if np.any(picked >= len(dims)) or np.any(picked < -len(dims)):
        return None
    values = np.asarray(dims, dtype=object)[picked]
    if not _all_static(np.ravel(values).tolist()):
        return None
    return np.asarray(values.tolist(), dtype=np.int64)


def _all_static(dims) -> bool:
    return all(isinstance(d, (int, np.integer)) and d >= 0 for d in dims)
