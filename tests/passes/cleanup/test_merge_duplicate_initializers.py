import numpy as np
import onnx_graphsurgeon as gs
from onnx import helper

from edgec import ir
from edgec.passes.cleanup.merge_duplicate_initializers import MergeDuplicateInitializersPass
from tests.helpers import GraphBuilder, apply, assert_equivalent


def test_merges_identical_data_only():
    b = GraphBuilder()
    x = b.input("x", [3])
    values = np.array([1.0, 2.0, 3.0], np.float32)
    y = b.op("Add", [x, b.const(values)])
    y = b.op("Mul", [y, b.const(values.copy())])  # same bytes: merged
    y = b.op("Sub", [y, b.const(values.reshape(3, 1).reshape(3).astype(np.float64).astype(np.float32))])  # same
    y = b.op("Add", [y, b.const(np.array([1.0, 2.0, 3.5], np.float32))])  # different: kept
    b.output(b.op("Add", [y, b.const(np.array(1.0, np.float32))]))  # scalar [] vs [1] differ in shape
    model = b.model()
    before = model.copy()

    result = apply(model, MergeDuplicateInitializersPass())

    assert result.stats == {"merged": 2, "bytes_saved": 24}
    assert len(ir.constants(model.graph)) == 3
    assert assert_equivalent(before, model) == 0.0


def test_weights_shared_by_both_if_branches_are_written_once():
    weight = np.arange(64, dtype=np.float32)

    def branch(name):
        w = helper.make_tensor(f"{name}_w", 1, [64], weight)
        node = helper.make_node("Add", ["x", f"{name}_w"], [f"{name}_out"])
        return helper.make_graph([node], name, [], [helper.make_tensor_value_info(f"{name}_out", 1, [64])], [w])

    cond = helper.make_tensor_value_info("cond", 9, [])
    x = helper.make_tensor_value_info("x", 1, [64])
    node = helper.make_node("If", ["cond"], ["y"], then_branch=branch("then"), else_branch=branch("else"))
    graph = helper.make_graph([node], "g", [cond, x], [helper.make_tensor_value_info("y", 1, [64])])
    model = ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    size_before = model.to_onnx().ByteSize()

    assert apply(model, MergeDuplicateInitializersPass()).stats["merged"] == 1

    proto = model.to_onnx()
    assert proto.ByteSize() < size_before - 200
    assert len(proto.graph.initializer) == 1  # hoisted to the graph enclosing both branches
    for feeds in ({"cond": np.array(True), "x": weight}, {"cond": np.array(False), "x": weight}):
        from tests.helpers import run

        np.testing.assert_array_equal(run(model, feeds)[0], 2 * weight)
    assert all(isinstance(c, gs.Constant) for c in ir.constants(model.graph).values())
