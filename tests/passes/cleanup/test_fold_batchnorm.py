import numpy as np
import pytest

from edgec.passes.cleanup.fold_batchnorm import FoldBatchNormPass
from tests.helpers import GraphBuilder, apply, assert_equivalent, op_counts


def _bn(b: GraphBuilder, x: str, channels: int) -> str:
    rng = b.rng
    params = [
        rng.uniform(0.5, 2.0, channels),
        rng.standard_normal(channels),
        rng.standard_normal(channels),
        rng.uniform(0.1, 3.0, channels),
    ]
    return b.op("BatchNormalization", [x] + [b.const(p.astype(np.float32)) for p in params], epsilon=1e-3)


@pytest.mark.parametrize("groups,bias", [(1, True), (1, False), (4, True)])
def test_conv(groups, bias):
    b = GraphBuilder(seed=groups)
    x = b.input("x", [1, 4, 9, 9])
    inputs = [x, b.weight(8, 4 // groups, 3, 3)] + ([b.weight(8)] if bias else [])
    b.output(b.op("Relu", [_bn(b, b.op("Conv", inputs, group=groups, pads=[1, 1, 1, 1]), 8)]))
    model = b.model()
    before = model.copy()
    assert apply(model, FoldBatchNormPass()).stats["into_conv"] == 1
    assert op_counts(model) == {"Conv": 1, "Relu": 1}
    assert assert_equivalent(before, model) < 1e-6


@pytest.mark.parametrize("groups", [1, 2])
def test_conv_transpose(groups):
    b = GraphBuilder(seed=3)
    x = b.input("x", [1, 4, 5, 5])
    conv = b.op("ConvTranspose", [x, b.weight(4, 6 // groups, 3, 3)], group=groups, strides=[2, 2])
    b.output(_bn(b, conv, 6))
    model = b.model()
    before = model.copy()
    assert apply(model, FoldBatchNormPass()).stats["into_convtranspose"] == 1
    assert op_counts(model) == {"ConvTranspose": 1}
    assert assert_equivalent(before, model) < 1e-6


@pytest.mark.parametrize("trans_b,with_c", [(0, True), (1, True), (1, False)])
def test_gemm(trans_b, with_c):
    b = GraphBuilder(seed=4)
    x = b.input("x", [3, 5])
    w = b.weight(*((7, 5) if trans_b else (5, 7)))
    inputs = [x, w] + ([b.weight(7)] if with_c else [])
    b.output(_bn(b, b.op("Gemm", inputs, transB=trans_b, alpha=0.7, beta=1.3), 7))
    model = b.model()
    before = model.copy()
    assert apply(model, FoldBatchNormPass()).stats["into_gemm"] == 1
    assert op_counts(model) == {"Gemm": 1}
    assert assert_equivalent(before, model) < 1e-6


def test_matmul_becomes_matmul_plus_add():
    b = GraphBuilder(seed=5)
    x = b.input("x", [3, 5])
    out = _bn(b, b.op("MatMul", [x, b.weight(5, 6)]), 6)
    b.output(out)
    model = b.model()
    before = model.copy()
    assert apply(model, FoldBatchNormPass()).stats["into_matmul"] == 1
    assert op_counts(model) == {"MatMul": 1, "Add": 1}
    assert [t.name for t in model.graph.outputs] == [out]
    assert assert_equivalent(before, model) < 1e-6


def test_bn_whose_input_has_other_readers_becomes_mul_add():
    b = GraphBuilder(seed=6)
    x = b.input("x", [1, 2, 4, 4])
    conv = b.op("Conv", [x, b.weight(2, 2, 1, 1)])
    b.output(_bn(b, conv, 2))
    b.output(b.op("Relu", [conv]))
    model = b.model()
    before = model.copy()
    result = apply(model, FoldBatchNormPass())
    assert result.modified and result.stats["to_mul_add"] == 1 and result.stats["into_conv"] == 0
    assert sorted(n.op for n in model.graph.nodes) == ["Add", "Conv", "Mul", "Relu"]
    assert assert_equivalent(before, model) < 1e-6


def test_bn_on_a_graph_input_becomes_mul_add():
    b = GraphBuilder(seed=8)
    x = b.input("x", [1, 3, 5, 5])
    b.output(_bn(b, x, 3))
    model = b.model()
    before = model.copy()
    assert apply(model, FoldBatchNormPass()).stats["to_mul_add"] == 1
    assert sorted(n.op for n in model.graph.nodes) == ["Add", "Mul"]
    assert assert_equivalent(before, model) < 1e-6


def test_shared_weight_is_not_edited_in_place():
    b = GraphBuilder(seed=7)
    x = b.input("x", [1, 2, 4, 4])
    w = b.weight(2, 2, 1, 1)
    b.output(_bn(b, b.op("Conv", [x, w]), 2))
    b.output(b.op("Conv", [x, w]))  # a second conv reads the same weight, without BN
    model = b.model()
    before = model.copy()
    assert apply(model, FoldBatchNormPass()).modified
    assert assert_equivalent(before, model) < 1e-6
