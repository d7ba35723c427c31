import pytest

from edgec.passes.cleanup.fuse_bias_add import FuseBiasAddPass
from tests.helpers import GraphBuilder, apply, assert_equivalent, op_counts


@pytest.mark.parametrize("bias_shape", [(1, 6, 1, 1), (6, 1, 1), (1, 1, 1, 1), (1,)])
@pytest.mark.parametrize("has_bias", [True, False])
def test_conv_add(bias_shape, has_bias):
    b = GraphBuilder(seed=1)
    x = b.input("x", [1, 3, 5, 5])
    conv = b.op("Conv", [x, b.weight(6, 3, 3, 3)] + ([b.weight(6)] if has_bias else []))
    out = b.op("Add", [b.weight(*bias_shape), conv])  # constant first: either order fuses
    b.output(out)
    model = b.model()
    before = model.copy()
    assert apply(model, FuseBiasAddPass()).stats["conv"] == 1
    assert op_counts(model) == {"Conv": 1}
    assert [t.name for t in model.graph.outputs] == [out]
    assert assert_equivalent(before, model) < 1e-6


def test_conv_add_varying_spatially_is_not_a_bias():
    b = GraphBuilder(seed=2)
    x = b.input("x", [1, 3, 5, 5])
    b.output(b.op("Add", [b.op("Conv", [x, b.weight(6, 3, 3, 3)]), b.weight(1, 6, 3, 3)]))
    model = b.model()
    assert not apply(model, FuseBiasAddPass()).modified


def test_gemm_add_merges_into_c():
    b = GraphBuilder(seed=3)
    x = b.input("x", [4, 5])
    b.output(b.op("Add", [b.op("Gemm", [x, b.weight(5, 3), b.weight(3)], beta=0.5), b.weight(1, 3)]))
    model = b.model()
    before = model.copy()
    assert apply(model, FuseBiasAddPass()).stats["gemm"] == 1
    assert op_counts(model) == {"Gemm": 1}
    assert assert_equivalent(before, model) < 1e-6


def test_matmul_add_becomes_gemm():
    b = GraphBuilder(seed=4)
    x = b.input("x", [4, 5])
    b.output(b.op("Add", [b.op("MatMul", [x, b.weight(5, 3)]), b.weight(3)]))
    model = b.model()
    before = model.copy()
    assert apply(model, FuseBiasAddPass()).stats["matmul_to_gemm"] == 1
    assert op_counts(model) == {"Gemm": 1}
    assert assert_equivalent(before, model) < 1e-6


def test_add_that_would_broadcast_the_output_up_is_left_alone():
    b = GraphBuilder(seed=5)
    x = b.input("x", [1, 5])
    b.output(b.op("Add", [b.op("MatMul", [x, b.weight(5, 3)]), b.weight(4, 3)]))  # [1,3] + [4,3] -> [4,3]
    model = b.model()
    assert not apply(model, FuseBiasAddPass()).modified


def test_batched_matmul_has_no_gemm_form():
    b = GraphBuilder(seed=6)
    x = b.input("x", [2, 4, 5])
    b.output(b.op("Add", [b.op("MatMul", [x, b.weight(5, 3)]), b.weight(3)]))
    model = b.model()
    assert not apply(model, FuseBiasAddPass()).modified
