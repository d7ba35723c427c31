import numpy as np

from edgec import ir
from edgec.passes.cleanup.simplify_shapes import SimplifyShapesPass
from tests.helpers import GraphBuilder, apply, assert_equivalent, op_counts


def _flatten_by_shape_chain(b: GraphBuilder, x: str) -> str:
    """Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), [-1])): how exporters spell Flatten."""
    batch = b.op("Gather", [b.op("Shape", [x]), b.const(np.array(0, np.int64))], axis=0)
    target = b.op(
        "Concat",
        [b.op("Unsqueeze", [batch, b.const(np.array([0], np.int64))]), b.const(np.array([-1], np.int64))],
        axis=0,
    )
    return b.op("Reshape", [x, target])


def test_static_shape_chain_folds_to_a_constant():
    b = GraphBuilder()
    x = b.input("x", [2, 3, 4])
    b.output(_flatten_by_shape_chain(b, x))
    model = b.model()
    before = model.copy()

    result = apply(model, SimplifyShapesPass())

    assert result.stats == {"shape_ops_replaced": 1, "chain_nodes_folded": 3, "rounds": 2}
    assert op_counts(model) == {"Reshape": 1}
    np.testing.assert_array_equal(model.graph.nodes[0].inputs[1].values, [2, -1])
    assert assert_equivalent(before, model) == 0.0


def test_gather_of_a_static_dim_folds_even_when_batch_is_dynamic():
    b = GraphBuilder()
    x = b.input("x", ["N", 3, 4])
    channels = b.op("Gather", [b.op("Shape", [x]), b.const(np.array([1], np.int64))], axis=0)
    b.output(b.op("Reshape", [x, b.op("Concat", [b.const(np.array([-1], np.int64)), channels], axis=0)]))
    model = b.model()
    before = model.copy()

    assert apply(model, SimplifyShapesPass()).stats["shape_ops_replaced"] == 1
    assert op_counts(model) == {"Reshape": 1}
    assert assert_equivalent(before, model) == 0.0


def test_dynamic_dimension_stays_computed():
    b = GraphBuilder()
    x = b.input("x", ["N", 3])
    b.output(_flatten_by_shape_chain(b, x))
    model = b.model()
    assert not apply(model, SimplifyShapesPass()).modified
    assert op_counts(model)["Shape"] == 1


def test_input_shape_fixed_at_load_makes_the_chain_static():
    b = GraphBuilder()
    x = b.input("x", ["N", 3])
    b.output(_flatten_by_shape_chain(b, x))
    model = ir.from_proto(b.proto(), input_shapes={"x": [5, 3]})
    assert apply(model, SimplifyShapesPass()).modified
    assert op_counts(model) == {"Reshape": 1}


def test_size_of_static_tensor():
    b = GraphBuilder()
    x = b.input("x", [2, 5])
    b.output(b.op("Mul", [b.op("Cast", [b.op("Size", [x])], to=1), x]))
    model = b.model()
    before = model.copy()
    assert apply(model, SimplifyShapesPass()).modified
    assert op_counts(model) == {"Mul": 1}
    assert assert_equivalent(before, model) == 0.0
