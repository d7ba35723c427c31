"""Order nodes so each comes after the producers of everything it reads, stably."""

from __future__ import annotations

import heapq

import onnx_graphsurgeon as gs

from edgec.errors import EdgecError
from edgec.ir import iter_graphs
from edgec.pass_infra import Pass, PassContext, PassResult


class TopologicalSortPass(Pass):
    name = "topological-sort"
    summary = "Sort nodes topologically, keeping the existing order wherever it is already valid."

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        moved = 0
        for g in list(iter_graphs(graph)):
            order = sort_nodes(g)
            moved += sum(1 for a, b in zip(order, g.nodes) if a is not b)
            g.nodes = order
        return PassResult(moved > 0, {"nodes_moved": moved})


def sort_nodes(graph: gs.Graph) -> list[gs.Node]:
    """Kahn's algorithm, always emitting the ready node that came first (so sorted graphs stay put)."""
    position = {id(n): i for i, n in enumerate(graph.nodes)}
    producer = {id(t): n for n in graph.nodes for t in n.outputs}
    users: dict[int, list[gs.Node]] = {id(n): [] for n in graph.nodes}
    pending = {}
    for node in graph.nodes:
        deps = {id(producer[id(t)]) for t in _reads(node) if id(t) in producer} - {id(node)}
        pending[id(node)] = len(deps)
        for dep in deps:
            users[dep].append(node)
    ready = [(position[id(n)], id(n), n) for n in graph.nodes if pending[id(n)] == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, _, node = heapq.heappop(ready)
        order.append(node)
        for user in users[id(node)]:
            pending[id(user)] -= 1
            if pending[id(user)] == 0:
                heapq.heappush(ready, (position[id(user)], id(user), user))
    if len(order) != len(graph.nodes):
        stuck = [n.name or n.op for n in graph.nodes if pending[id(n)] > 0][:5]
        raise EdgecError(f"the graph has a cycle through {', '.join(stuck)}")
    return order


def _reads(node: gs.Node) -> list[gs.Tensor]:
    """A node's inputs plus every outer-scope tensor its subgraphs read."""
    tensors = list(node.inputs)
    for sub in node.subgraphs():
        for inner in sub.nodes:
            tensors.extend(_reads(inner))
    return tensors
