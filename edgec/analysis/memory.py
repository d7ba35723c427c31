"""Peak activation memory from a liveness analysis of the dataflow graph (networkx)."""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx
import onnx_graphsurgeon as gs

from edgec.analysis.costs import tensor_bytes


@dataclass
class PeakMemory:
    bytes: int
    node: str  # the node running when the peak is reached
    live: list[str] = field(default_factory=list)  # tensors resident then, largest first

    def to_json(self) -> dict:
        return {"bytes": self.bytes, "node": self.node, "live": self.live}


def dataflow_graph(graph: gs.Graph) -> nx.DiGraph:
    """Nodes are ops (by position); an edge carries each activation tensor from producer to reader."""
    dag = nx.DiGraph()
    producer = {}
    for index, node in enumerate(graph.nodes):
        dag.add_node(index, op=node.op, name=node.name or f"{node.op}_{index}")
        for tensor in node.outputs:
            producer[id(tensor)] = index
    for index, node in enumerate(graph.nodes):
        for tensor in _activations(node):
            if id(tensor) in producer and producer[id(tensor)] != index:
                dag.add_edge(producer[id(tensor)], index)
    return dag


def _activations(node: gs.Node) -> list[gs.Tensor]:
    """Non-constant tensors a node reads, including those its subgraphs read from outside."""
    tensors = [t for t in node.inputs if not isinstance(t, gs.Constant) and not t.is_empty()]
    for sub in node.subgraphs():
        for inner in sub.nodes:
            tensors.extend(_activations(inner))
    return tensors


def peak_activation_memory(graph: gs.Graph) -> PeakMemory:
    """Each activation lives from its producer's step to its last reader's step (graph inputs from
    the start, graph outputs to the end); the peak is the largest total alive at any one step.
    Assumes no buffer sharing between a node's inputs and outputs, as simple arena planners do."""
    dag = dataflow_graph(graph)
    order = list(nx.lexicographical_topological_sort(dag))  # the model's own order when valid
    step_of = {node_index: step for step, node_index in enumerate(order)}
    end = len(order)
    lifetimes: dict[int, tuple[int, int, gs.Tensor]] = {}
    for t in graph.inputs:
        lifetimes[id(t)] = (0, 0, t)
    for index, node in enumerate(graph.nodes):
        for t in node.outputs:
            if not t.is_empty():
                lifetimes[id(t)] = (step_of[index], step_of[index], t)
    for index, node in enumerate(graph.nodes):
        for t in _activations(node):
            if id(t) in lifetimes:
                born, dies, tensor = lifetimes[id(t)]
                lifetimes[id(t)] = (born, max(dies, step_of[index]), tensor)
    for t in graph.outputs:
        if id(t) in lifetimes:
            born, _, tensor = lifetimes[id(t)]
            lifetimes[id(t)] = (born, end, tensor)
    best = PeakMemory(0, "")
    for step, node_index in enumerate(order or [None]):
        alive = [(tensor_bytes(t), t.name) for born, dies, t in lifetimes.values() if born <= step <= dies]
        node = graph.nodes[node_index] if node_index is not None else None
        inner = max((peak_activation_memory(sub).bytes for sub in node.subgraphs()), default=0) if node else 0
        total = sum(size for size, _ in alive) + inner
        if total > best.bytes:
            name = (node.name or node.op) if node else "(inputs)"
            best = PeakMemory(total, name, [n for _, n in sorted(alive, reverse=True)[:8]])
    return best
