"""unroll-recurrent: GRU/LSTM written as MatMuls and gates step by step, for backends whose
importer has no recurrent operators (TVM's Relax refused PLCMOS's GRUs and ddddocr's LSTM)."""

import pytest

from edgec.pass_infra import PassContext, apply_pass
from edgec.passes.cleanup.unroll_recurrent import UnrollRecurrentPass
from tests.backends.test_tflite_ops_more import _recurrent
from tests.helpers import apply, assert_equivalent, op_counts


@pytest.mark.parametrize(
    "op, direction, initial_state, attrs",
    [("GRU", "bidirectional", True, {"linear_before_reset": 1}), ("LSTM", "forward", True, {})],
)
def test_recurrent_layers_unroll_into_the_same_function(op, direction, initial_state, attrs):
    model = _recurrent(op, direction, initial_state, **attrs)
    before = model.copy()
    result = apply(model, UnrollRecurrentPass())
    assert result.modified and result.stats == {"unrolled": 1, "left": 0}
    counts = op_counts(model)
    assert op not in counts and counts["MatMul"] >= 5 and counts["Sigmoid"] >= 5
    assert assert_equivalent(before, model) < 1e-5


def test_a_layer_without_a_static_sequence_stays_and_is_named():
    model = _recurrent("LSTM", "forward", False)
    model.graph.inputs[0].shape = ["T", 2, 6]
    for tensor in model.graph.tensors().values():  # forget what inference knew
        if tensor not in model.graph.inputs and not hasattr(tensor, "values"):
            tensor.shape = None
    ctx = PassContext()
    result = apply_pass(UnrollRecurrentPass(), model.graph, ctx)
    assert not result.modified and result.stats == {"unrolled": 0, "left": 1}
    assert op_counts(model) == {"LSTM": 1}
    assert len(ctx.warnings) == 1 and "the sequence needs a static shape" in ctx.warnings[0]
