import random

import numpy as np

from edgec.passes.cleanup.topological_sort import TopologicalSortPass, sort_nodes
from tests.helpers import GraphBuilder, apply, assert_equivalent


def _chain_model():
    b = GraphBuilder()
    x = b.input("x", [4])
    y = x
    for _ in range(8):
        y = b.op("Add", [y, b.const(np.ones(4, np.float32))])
    b.output(y)
    return b.model()


def test_sorted_graph_is_left_as_is():
    model = _chain_model()
    order = list(model.graph.nodes)
    assert not apply(model, TopologicalSortPass()).modified
    assert all(a is b for a, b in zip(order, model.graph.nodes))


def test_shuffled_graph_is_restored_to_dependency_order():
    model = _chain_model()
    before = model.copy()
    original = list(model.graph.nodes)
    nodes = list(model.graph.nodes)
    random.Random(0).shuffle(nodes)
    model.graph.nodes = nodes
    result = apply(model, TopologicalSortPass())
    assert result.modified and result.stats["nodes_moved"] > 0
    assert all(a is b for a, b in zip(original, model.graph.nodes))  # a chain has one valid order
    assert assert_equivalent(before, model) == 0.0


def test_stable_for_independent_nodes():
    b = GraphBuilder()
    x = b.input("x", [2])
    outs = [b.op(op, [x]) for op in ("Relu", "Sigmoid", "Tanh", "Abs")]
    for out in outs:
        b.output(out)
    model = b.model()
    assert [n.op for n in sort_nodes(model.graph)] == ["Relu", "Sigmoid", "Tanh", "Abs"]
