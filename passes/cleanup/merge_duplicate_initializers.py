"""Merge initializers that hold identical data (same dtype, shape and bytes) into one."""

from __future__ import annotations

import hashlib

import numpy as np
import onnx_graphsurgeon as gs

from edgec.graph_utils import is_graph_output, replace_uses
from edgec.ir import iter_graphs
from edgec.pass_infra import Pass, PassContext, PassResult, option


class MergeDuplicateInitializersPass(Pass):
    name = "merge-duplicate-initializers"
    summary = "Make nodes share one copy of initializers that hold identical data."
    # Tiny constants (axes, shapes) are merged too; they are most of the duplicates exporters make.
    min_bytes: int = option(0, min=0)

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        # One table for the whole model: a constant shared by two If branches is written once,
        # in the innermost graph enclosing both (see ir.Model.to_onnx).
        keepers: dict[tuple, gs.Constant] = {}
        merged = saved = 0
        for g in iter_graphs(graph):
            for node in list(g.nodes):
                for tensor in list(node.inputs):
                    if not isinstance(tensor, gs.Constant) or is_graph_output(g, tensor):
                        continue
                    values = tensor.values
                    if values.nbytes < self.min_bytes:
                        continue
                    keeper = keepers.setdefault(_fingerprint(values), tensor)
                    if keeper is not tensor and _identical(keeper.values, values):
                        replace_uses(g, tensor, keeper)
                        merged += 1
                        saved += int(values.nbytes)
        return PassResult(merged > 0, {"merged": merged, "bytes_saved": saved})


def _fingerprint(values: np.ndarray) -> tuple:
    return (values.dtype.str, values.shape, hashlib.sha256(values.tobytes()).hexdigest())


def _identical(a: np.ndarray, b: np.ndarray) -> bool:
    # Bytes, not ==: NaN payloads count, and -0.0 differs from 0.0.
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
