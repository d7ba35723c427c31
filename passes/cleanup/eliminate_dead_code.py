"""Remove nodes that no graph output depends on, and the initializers only they used."""

from __future__ import annotations

import onnx_graphsurgeon as gs

from edgec.ir import constants, iter_nodes
from edgec.pass_infra import Pass, PassContext, PassResult


class EliminateDeadCodePass(Pass):
    name = "eliminate-dead-code"
    summary = "Remove nodes no output depends on and initializers nothing reads."

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        nodes_before = sum(1 for _ in iter_nodes(graph))
        consts_before = constants(graph)
        # Graph inputs are the model's interface: an unused one is kept, not silently dropped.
        graph.cleanup(remove_unused_node_outputs=False, recurse_subgraphs=True, remove_unused_graph_inputs=False)
        nodes_removed = nodes_before - sum(1 for _ in iter_nodes(graph))
        consts_after = constants(graph)
        dropped = [c for key, c in consts_before.items() if key not in consts_after]
        stats = {
            "nodes_removed": nodes_removed,
            "initializers_removed": len(dropped),
            "bytes_removed": int(sum(c.values.nbytes for c in dropped)),
        }
        return PassResult(nodes_removed > 0 or bool(dropped), stats)
