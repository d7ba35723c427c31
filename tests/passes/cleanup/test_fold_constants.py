import numpy as np
import onnx_graphsurgeon as gs

from edgec.passes.cleanup.fold_constants import FoldConstantsPass
from tests.helpers import GraphBuilder, apply, assert_equivalent, op_counts


def test_folds_constant_chain_and_constant_nodes():
    b = GraphBuilder()
    x = b.input("x", [2, 3])
    c = b.op("Constant", [], value=__import__("onnx").numpy_helper.from_array(np.full((3,), 2.0, np.float32)))
    scaled = b.op("Mul", [b.const(np.arange(3, dtype=np.float32)), c])  # constant * constant
    shifted = b.op("Add", [scaled, b.const(np.ones(3, np.float32))])
    b.output(b.op("Add", [x, shifted]))
    model = b.model()
    before = model.copy()

    result = apply(model, FoldConstantsPass())

    assert result.modified
    assert result.stats["constant_nodes"] == 1 and result.stats["folded_nodes"] == 2
    assert op_counts(model) == {"Add": 1}
    folded = [t for t in model.graph.nodes[0].inputs if isinstance(t, gs.Constant)][0]
    np.testing.assert_array_equal(folded.values, np.array([1.0, 3.0, 5.0], np.float32))
    assert assert_equivalent(before, model) == 0.0


def test_keeps_results_that_would_grow_the_file():
    b = GraphBuilder()
    x = b.input("x", [1000, 1000])
    big = b.op(
        "ConstantOfShape",
        [b.const(np.array([1000, 1000], np.int64))],
        value=__import__("onnx").numpy_helper.from_array(np.array([1.0], np.float32)),
    )
    b.output(b.op("Add", [x, big]))
    model = b.model()

    result = apply(model, FoldConstantsPass(max_growth_bytes=1024))

    assert result.stats["kept_for_size"] == 1
    assert op_counts(model) == {"ConstantOfShape": 1, "Add": 1}


def test_keeps_dequantize_linear_so_weights_stay_int8():
    b = GraphBuilder()
    x = b.input("x", [1, 4])
    w = b.op("DequantizeLinear", [b.const(np.arange(16, dtype=np.int8).reshape(4, 4)), b.const(np.float32(0.1))])
    b.output(b.op("MatMul", [x, w]))
    model = b.model()

    assert not apply(model, FoldConstantsPass()).modified
    assert op_counts(model) == {"DequantizeLinear": 1, "MatMul": 1}


def test_never_folds_random_ops():
    b = GraphBuilder()
    x = b.input("x", [2, 2])
    noise = b.op("RandomUniform", [], shape=[2, 2], dtype=1)
    b.output(b.op("Add", [x, noise]))
    model = b.model()
    assert not apply(model, FoldConstantsPass()).modified


def test_graph_outputs_stay_produced_by_nodes():
    b = GraphBuilder()
    b.input("x", [1])
    out = b.op("Add", [b.const(np.ones(2, np.float32)), b.const(np.ones(2, np.float32))])
    b.output(out)
    model = b.model()
    apply(model, FoldConstantsPass())
    assert [t.name for t in model.graph.outputs] == [out]
    assert op_counts(model) == {"Add": 1}
