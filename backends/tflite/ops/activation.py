"""Unary activations keep their input's layout."""

from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from edgec.backends.tflite.ops.common import constant, present, refuse


def _unary(builtin):
    def lower(ctx, node) -> None:
        x = ctx.get(node.inputs[0])
        out = ctx.new(node.outputs[0], nhwc=x.nhwc)
        ctx.builder.operator(builtin, [x.index], [out.index])

    return lower


def _bound(node, position, attr, default):
    if present(node, position):
        return float(constant(node, position))
    return float(node.attrs.get(attr, default))


def lower_clip(ctx, node) -> None:
    low = _bound(node, 1, "min", -np.inf)
    high = _bound(node, 2, "max", np.inf)
    x = ctx.get(node.inputs[0])
    out = ctx.new(node.outputs[0], nhwc=x.nhwc)
    fixed = {(0.0, 6.0): schema.BuiltinOperator.RELU6, (-1.0, 1.0): schema.BuiltinOperator.RELU_N1_TO_1}
    if (low, high) in fixed:
        ctx.builder.operator(fixed[(low, high)], [x.index], [out.index])
        return
    if (low, high) == (0.0, np.inf):
        ctx.builder.operator(schema.BuiltinOperator.RELU, [x.index], [out.index])
        return
    current = x.index
    steps = [(schema.BuiltinOperator.MAXIMUM, low), (schema.BuiltinOperator.MINIMUM, high)]
    steps = [(op, v) for op, v in steps if np.isfinite(v)]
    stored = ctx.builder.subgraph.tensors[x.index].shape
    for i, (op, value) in enumerate(steps):
        target = out.index if i == len(steps) - 1 else ctx.temporary(stored)
        bound = ctx.builder.constant(ctx.name("bound"), np.array(value, np.float32))
        ctx.builder.operator(op, [current, bound], [target])
        current = target
    if not steps:
        refuse(node, "a Clip without bounds should have been removed")


def lower_hard_sigmoid(ctx, node) -> None:
    """max(0, min(1, alpha * x + beta)): MUL, ADD, then RELU_0_TO_1."""
    x = ctx.get(node.inputs[0])
    stored = ctx.builder.subgraph.tensors[x.index].shape
    alpha = ctx.builder.constant(ctx.name("alpha"), np.array(node.attrs.get("alpha", 0.2), np.float32))
    beta = ctx.builder.constant(ctx.name("beta"), np.array(node.attrs.get("beta", 0.5), np.float32))
    scaled, shifted = ctx.temporary(stored), ctx.temporary(stored)
    ctx.builder.operator(
        schema.BuiltinOperator.MUL, [x.index, alpha], [scaled], schema.MulOptionsT(), schema.BuiltinOptions.MulOptions
    )
    ctx.builder.operator(
        schema.BuiltinOperator.ADD, [scaled, beta], [shifted], schema.AddOptionsT(), schema.BuiltinOptions.AddOptions
    )
    out = ctx.new(node.outputs[0], nhwc=x.nhwc)
    ctx.builder.operator(schema.BuiltinOperator.RELU_0_TO_1, [shifted], [out.index])


def lower_softmax(ctx, node) -> None:
    x = ctx.get(node.inputs[0])
    axis = int(node.attrs.get("axis", -1)) % len(x.shape)
    if x.nhwc or axis != len(x.shape) - 1:
        refuse(node, "only softmax over the last axis")
    options = schema.SoftmaxOptionsT()
    options.beta = 1.0
    out = ctx.new(node.outputs[0], nhwc=False)
    ctx.builder.operator(
        schema.BuiltinOperator.SOFTMAX, [x.index], [out.index], options, schema.BuiltinOptions.SoftmaxOptions
    )


def lower_leaky_relu(ctx, node) -> None:
    x = ctx.get(node.inputs[0])
    options = schema.LeakyReluOptionsT()
    options.alpha = float(node.attrs.get("alpha", 0.01))
    out = ctx.new(node.outputs[0], nhwc=x.nhwc)
    ctx.builder.operator(
        schema.BuiltinOperator.LEAKY_RELU, [x.index], [out.index], options, schema.BuiltinOptions.LeakyReluOptions
    )


LOWERINGS = {
    "LeakyRelu": lower_leaky_relu,
    "Exp": _unary(schema.BuiltinOperator.EXP),
    "Log": _unary(schema.BuiltinOperator.LOG),
    "Sqrt": _unary(schema.BuiltinOperator.SQRT),
    "Abs": _unary(schema.BuiltinOperator.ABS),
    "Neg": _unary(schema.BuiltinOperator.NEG),
    "Relu": _unary(schema.BuiltinOperator.RELU),
    "Sigmoid": _unary(schema.BuiltinOperator.LOGISTIC),
    "Tanh": _unary(schema.BuiltinOperator.TANH),
    "HardSwish": _unary(schema.BuiltinOperator.HARD_SWISH),
    "HardSigmoid": lower_hard_sigmoid,
    "Clip": lower_clip,
    "Softmax": lower_softmax,
}
