import numpy as np
import pytest

from edgec.passes.cleanup.cancel_transpose_reshape import CancelTransposeReshapePass
from tests.helpers import GraphBuilder, apply, assert_equivalent, op_counts


def test_inverse_transposes_cancel():
    b = GraphBuilder()
    x = b.input("x", [1, 3, 4, 5])
    nhwc = b.op("Transpose", [b.op("Relu", [x])], perm=[0, 2, 3, 1])
    b.output(b.op("Sigmoid", [b.op("Transpose", [nhwc], perm=[0, 3, 1, 2])]))
    model = b.model()
    before = model.copy()
    assert apply(model, CancelTransposeReshapePass()).stats["transposes_removed"] == 2
    assert op_counts(model) == {"Relu": 1, "Sigmoid": 1}
    assert assert_equivalent(before, model) == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_transpose_chains_merge_into_one(seed):
    rng = np.random.default_rng(seed)
    b = GraphBuilder()
    x = b.input("x", [2, 3, 4, 5])
    y = b.op("Relu", [x])
    for _ in range(3):
        y = b.op("Transpose", [y], perm=rng.permutation(4).tolist())
    b.output(b.op("Relu", [y]))
    model = b.model()
    before = model.copy()
    assert apply(model, CancelTransposeReshapePass()).modified
    assert op_counts(model).get("Transpose", 0) <= 1
    assert assert_equivalent(before, model) == 0.0


def test_reshape_chain_collapses_and_identity_reshape_disappears():
    b = GraphBuilder()
    x = b.input("x", [2, 3, 4])
    y = b.op("Flatten", [b.op("Relu", [x])], axis=1)  # [2, 12]
    y = b.op("Unsqueeze", [y, b.const(np.array([1], np.int64))])  # [2, 1, 12]
    y = b.op("Reshape", [y, b.const(np.array([2, 3, 4], np.int64))])  # back to x's shape
    b.output(b.op("Relu", [y]))
    model = b.model()
    before = model.copy()
    stats = apply(model, CancelTransposeReshapePass()).stats
    assert stats["reshapes_merged"] == 2 and stats["reshapes_removed"] == 1
    assert op_counts(model) == {"Relu": 2}
    assert assert_equivalent(before, model) == 0.0


def test_transpose_read_twice_is_kept():
    b = GraphBuilder()
    x = b.input("x", [2, 3])
    t = b.op("Transpose", [b.op("Relu", [x])], perm=[1, 0])
    b.output(b.op("Transpose", [t], perm=[1, 0]))
    b.output(b.op("Relu", [t]))
    model = b.model()
    before = model.copy()
    apply(model, CancelTransposeReshapePass())
    assert op_counts(model)["Transpose"] >= 1
    assert assert_equivalent(before, model) == 0.0
