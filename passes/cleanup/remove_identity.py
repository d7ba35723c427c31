"""Remove Identity nodes and inference-mode Dropout, which pass their input through unchanged."""

from __future__ import annotations

import onnx_graphsurgeon as gs

from edgec.graph_utils import bypass, constant_value, is_graph_output
from edgec.ir import iter_graphs
from edgec.pass_infra import Pass, PassContext, PassResult


class RemoveIdentityPass(Pass):
    name = "remove-identity"
    summary = "Remove Identity nodes and Dropout nodes that run in inference mode."

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        removed = {"Identity": 0, "Dropout": 0}
        for g in list(iter_graphs(graph)):
            for node in list(g.nodes):
                if node.op in removed and _is_passthrough(g, node) and bypass(g, node, node.inputs[0]):
                    removed[node.op] += 1
        return PassResult(
            any(removed.values()), {"identity_removed": removed["Identity"], "dropout_removed": removed["Dropout"]}
        )


def _is_passthrough(graph: gs.Graph, node: gs.Node) -> bool:
    if node.op == "Identity":
        return len(node.inputs) == 1 and len(node.outputs) == 1
    # Dropout is a pass-through unless training_mode is set, and its mask output must be unused.
    if len(node.outputs) > 1 and (node.outputs[1].outputs or is_graph_output(graph, node.outputs[1])):
        return False
    if len(node.inputs) > 2 and not node.inputs[2].is_empty():
        training = constant_value(node.inputs[2])
        if training is None or bool(training):
            return False
    return True
