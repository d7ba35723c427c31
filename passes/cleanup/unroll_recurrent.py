"""Unroll GRU/LSTM over their static sequence length (see edgec.recurrent): for backends whose
importer has no recurrent operators (TVM's Relax). Exact: the same arithmetic, step by step."""

from __future__ import annotations

import onnx_graphsurgeon as gs

from edgec import ir, recurrent
from edgec.pass_infra import Pass, PassContext, PassResult


class UnrollRecurrentPass(Pass):
    name = "unroll-recurrent"
    summary = "Unroll GRU/LSTM with a static sequence length into MatMuls and elementwise gates."

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        ir.infer_shapes(graph)  # the sequence length
        left = []
        count = recurrent.unroll(graph, lambda node, why: left.append(f"{node.name or node.op}: {why}"))
        if left:  # the backend then refuses the layer by name
            ctx.warn(f"{self.name}: left {len(left)} recurrent layer(s): {'; '.join(left[:3])}")
        return PassResult(count > 0, {"unrolled": count, "left": len(left)})
