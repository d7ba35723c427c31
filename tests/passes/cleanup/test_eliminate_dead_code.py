import numpy as np

from edgec.passes.cleanup.eliminate_dead_code import EliminateDeadCodePass
from tests.helpers import GraphBuilder, apply, assert_equivalent, op_counts


def test_removes_dead_nodes_and_the_initializers_only_they_read():
    b = GraphBuilder()
    x = b.input("x", [2, 4])
    dead = b.op("MatMul", [x, b.weight(4, 8)])  # 128 bytes of weight nobody needs
    b.op("Relu", [dead])
    b.output(b.op("Relu", [x]))
    model = b.model()
    before = model.copy()

    result = apply(model, EliminateDeadCodePass())

    assert result.modified
    assert result.stats == {"nodes_removed": 2, "initializers_removed": 1, "bytes_removed": 128}
    assert op_counts(model) == {"Relu": 1}
    assert assert_equivalent(before, model) == 0.0


def test_keeps_unused_graph_inputs_and_live_graph():
    b = GraphBuilder()
    x = b.input("x", [2])
    b.input("unused", [3])
    b.output(b.op("Add", [x, b.const(np.ones(2, np.float32))]))
    model = b.model()
    assert not apply(model, EliminateDeadCodePass()).modified
    assert [t.name for t in model.graph.inputs] == ["x", "unused"]
