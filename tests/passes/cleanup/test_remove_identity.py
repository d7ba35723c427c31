import numpy as np

from edgec.passes.cleanup.remove_identity import RemoveIdentityPass
from tests.helpers import GraphBuilder, apply, assert_equivalent, op_counts


def test_removes_identity_and_inference_dropout_keeping_output_names():
    b = GraphBuilder()
    x = b.input("x", [2, 3])
    y = b.op("Identity", [b.op("Relu", [x])])
    z = b.op("Dropout", [y, b.const(np.float32(0.5)), b.const(np.bool_(False))])
    out = b.op("Identity", [b.op("Sigmoid", [z])])  # graph output comes from an Identity
    b.output(out)
    model = b.model()
    before = model.copy()

    result = apply(model, RemoveIdentityPass())

    assert result.stats == {"identity_removed": 2, "dropout_removed": 1}
    assert op_counts(model) == {"Relu": 1, "Sigmoid": 1}
    assert [t.name for t in model.graph.outputs] == [out]
    assert assert_equivalent(before, model) == 0.0


def test_keeps_dropout_in_training_mode_or_with_used_mask():
    b = GraphBuilder()
    x = b.input("x", [4])
    train = b.op("Dropout", [x, b.const(np.float32(0.5)), b.const(np.bool_(True))])
    y, mask = b.op("Dropout", [x], n_out=2)
    b.output(train)
    b.output(b.op("Cast", [mask], to=1))
    b.output(y)
    model = b.model()
    assert not apply(model, RemoveIdentityPass()).modified
    assert op_counts(model)["Dropout"] == 2


def test_identity_between_graph_input_and_output_must_stay():
    b = GraphBuilder()
    x = b.input("x", [2])
    b.output(b.op("Identity", [x]))
    model = b.model()
    assert not apply(model, RemoveIdentityPass()).modified
