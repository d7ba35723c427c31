"""Every cleanup pass, and the -O2 pipeline, on random graphs full of the patterns they rewrite."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgec import presets
from edgec.registry import BUILTIN_PASSES, Registry
from tests.helpers import GraphBuilder, apply, assert_equivalent, op_counts

CLEANUP_PASSES = sorted(name for name, ref in BUILTIN_PASSES.items() if ".cleanup." in ref)

C, H, W = 4, 6, 6


def _bn(b, x, channels):
    rng = b.rng
    params = [
        rng.uniform(0.5, 2, channels),
        rng.standard_normal(channels),
        rng.standard_normal(channels),
        rng.uniform(0.1, 2, channels),
    ]
    return b.op("BatchNormalization", [x] + [b.const(p.astype(np.float32)) for p in params])


# Each block maps a [1, C, H, W] tensor to another one, through a pattern some pass rewrites.
def conv_bn_relu(b, x):
    groups = int(b.rng.choice([1, C]))
    y = b.op("Conv", [x, b.weight(C, C // groups, 3, 3)], group=groups, pads=[1, 1, 1, 1])
    return b.op("Clip", [_bn(b, y, C), b.const(np.float32(0)), b.const(np.float32(6))])


def conv_add_bias(b, x):
    return b.op("Add", [b.op("Conv", [x, b.weight(C, C, 1, 1)]), b.weight(1, C, 1, 1)])


def identity_dropout(b, x):
    return b.op("Dropout", [b.op("Identity", [x])])


def transpose_roundtrip(b, x):
    nhwc = b.op("Transpose", [b.op("Relu", [x])], perm=[0, 2, 3, 1])
    return b.op("Transpose", [b.op("Sigmoid", [nhwc])], perm=[0, 3, 1, 2])


def transpose_pair(b, x):
    return b.op("Transpose", [b.op("Transpose", [x], perm=[0, 2, 3, 1])], perm=[0, 3, 1, 2])


def reshape_chain(b, x):
    flat = b.op("Reshape", [x, b.const(np.array([1, C * H * W], np.int64))])
    flat = b.op("Unsqueeze", [flat, b.const(np.array([0], np.int64))])
    return b.op("Reshape", [flat, b.const(np.array([1, C, H, W], np.int64))])


def shape_chain_reshape(b, x):
    batch = b.op("Gather", [b.op("Shape", [x]), b.const(np.array(0, np.int64))], axis=0)
    target = b.op(
        "Concat",
        [b.op("Unsqueeze", [batch, b.const(np.array([0], np.int64))]), b.const(np.array([C, H * W], np.int64))],
        axis=0,
    )
    flat = b.op("Reshape", [x, target])
    return b.op("Reshape", [b.op("Tanh", [flat]), b.const(np.array([1, C, H, W], np.int64))])


def constant_subgraph(b, x):
    scale = b.op("Mul", [b.const(b.rng.uniform(0.5, 1.5, (1, C, 1, 1)).astype(np.float32)), b.const(np.float32(2.0))])
    return b.op("Mul", [x, b.op("Sqrt", [scale])])


def duplicate_weights(b, x):
    values = b.rng.standard_normal((1, C, 1, 1)).astype(np.float32)
    return b.op("Sub", [b.op("Add", [x, b.const(values)]), b.const(values.copy())])


def dead_branch(b, x):
    b.op("Relu", [b.op("Conv", [x, b.weight(C, C, 1, 1)])])  # never reaches an output
    return b.op("LeakyRelu", [x], alpha=0.1)


BLOCKS = [
    conv_bn_relu,
    conv_add_bias,
    identity_dropout,
    transpose_roundtrip,
    transpose_pair,
    reshape_chain,
    shape_chain_reshape,
    constant_subgraph,
    duplicate_weights,
    dead_branch,
]


def head(b, x, kind):
    flat = b.op("Flatten", [x], axis=1)
    if kind == "gemm_bn":
        return _bn(b, b.op("Gemm", [flat, b.weight(C * H * W, 5, scale=0.1), b.weight(5)]), 5)
    if kind == "matmul_add":
        return b.op("Add", [b.op("MatMul", [flat, b.weight(C * H * W, 5, scale=0.1)]), b.weight(5)])
    return b.op("Gemm", [flat, b.weight(5, C * H * W, scale=0.1)], transB=1)


@st.composite
def random_models(draw):
    seed = draw(st.integers(0, 2**16))
    blocks = draw(st.lists(st.sampled_from(BLOCKS), min_size=1, max_size=6))
    kind = draw(st.sampled_from(["gemm_bn", "matmul_add", "gemm"]))
    b = GraphBuilder(seed=seed)
    x = b.input("x", [1, C, H, W])
    for block in blocks:
        x = block(b, x)
    b.output(head(b, x, kind))
    return b.model()


SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("name", CLEANUP_PASSES)
@given(model=random_models())
@SETTINGS
def test_each_pass_keeps_outputs_within_1e_5(name, model):
    before = model.copy()
    apply(model, Registry(entry_points=False).pass_class(name)())
    assert_equivalent(before, model, rtol=1e-5)


@given(model=random_models())
@SETTINGS
def test_o2_pipeline_keeps_outputs_and_never_grows_the_graph(model):
    before = model.copy()
    for pass_ in Registry(entry_points=False).build_pipeline(presets.expand("2")):
        apply(model, pass_)
    assert_equivalent(before, model, rtol=1e-5)
    counts, original = op_counts(model), op_counts(before)
    assert sum(counts.values()) <= sum(original.values())
    for op in ("Identity", "Dropout", "BatchNormalization", "Shape"):
        assert op not in counts, f"{op} survived -O2"
