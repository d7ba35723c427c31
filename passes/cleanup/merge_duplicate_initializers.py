"""Merge initializers that hold identical data (same dtype, shape and bytes) into one."""

from __future__ import annotations

import hashlib

import numpy as np
import onnx_graphsurgeon as gs

from edgec.graph_utils import is_graph_output, replace_uses
from edgec.pass_infra import Pass, PassContext, PassResult


class MergeDuplicateInitializersPass(Pass):
    name = "merge-duplicate-initializers"
    summary = "Make nodes share one copy of initializers that hold identical data."
    # Tiny constants (axes, shapes) are merged too; they are most of the duplicates exporters make.
    min_bytes: int = 0

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        stats = {"merged": 0, "bytes_saved": 0}
        _merge(graph, {}, stats, self.min_bytes)
        return PassResult(stats["merged"] > 0, stats)


def _merge(graph: gs.Graph, visible: dict[tuple, list[gs.Constant]], stats: dict, min_bytes: int) -> None:
    """Merge within `graph`, keeping the outermost copy: a subgraph sees its parents' constants,
    but sibling subgraphs (the two branches of an If) cannot see each other's."""
    visible = {key: list(group) for key, group in visible.items()}
    for node in list(graph.nodes):
        for tensor in list(node.inputs):
            if not isinstance(tensor, gs.Constant) or is_graph_output(graph, tensor):
                continue
            values = tensor.values
            if values.nbytes < min_bytes:
                continue
            key = _fingerprint(values)
            group = visible.setdefault(key, [])
            keeper = next((c for c in group if c is tensor or _identical(c.values, values)), None)
            if keeper is None:
                group.append(tensor)
            elif keeper is not tensor:
                replace_uses(graph, tensor, keeper)
                stats["merged"] += 1
                stats["bytes_saved"] += int(values.nbytes)
    for node in graph.nodes:
        for sub in node.subgraphs():
            _merge(sub, visible, stats, min_bytes)


def _fingerprint(values: np.ndarray) -> tuple:
    return (values.dtype.str, values.shape, hashlib.sha256(values.tobytes()).hexdigest())


def _identical(a: np.ndarray, b: np.ndarray) -> bool:
    # Bytes, not ==: NaN payloads count, and -0.0 differs from 0.0.
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
