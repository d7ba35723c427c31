"""Unary activations keep their input's layout."""

from __future__ import annotations

from typing import Callable

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from edgec.backends.tflite.flatbuffer import Quantization
from edgec.backends.tflite.lowering import stored_axis
from edgec.backends.tflite.ops.common import constant, present
from edgec.backends.tflite.ops.emit import reshape


# LiteRT's int8 kernels of these write fixed output parameters (scale, zero point) only.
FIXED_INT8_OUTPUTS = {
    schema.BuiltinOperator.SOFTMAX: (1 / 256, -128),
    schema.BuiltinOperator.LOGISTIC: (1 / 256, -128),
    schema.BuiltinOperator.TANH: (1 / 128, 0),
}


def kernel_output(ctx, out: int, builtin) -> tuple[int, Callable[[], None]]:
    """(where `builtin` writes, what to emit after it): an int8 output whose parameters are not
    the kernel's fixed ones (an imported model quantized by another tool) is written with the
    fixed ones into a temporary and requantized by a QUANTIZE into `out`."""
    fixed = FIXED_INT8_OUTPUTS.get(builtin)
    if fixed is None or not ctx.is_int8(out):
        return out, lambda: None
    params = ctx.builder.subgraph.tensors[out].quantization
    scale, zero_point = fixed
    if abs(params.scale[0] - scale) <= 1e-6 * scale and params.zeroPoint[0] == zero_point:
        return out, lambda: None
    staged = ctx.temporary(ctx.builder.subgraph.tensors[out].shape, like=out)
    ctx.builder.subgraph.tensors[staged].quantization = Quantization(np.float32(scale), np.int64(zero_point)).to_schema()
    return staged, lambda: ctx.builder.operator(schema.BuiltinOperator.QUANTIZE, [staged], [out])


def _unary(builtin):
    def lower(ctx, node) -> None:
        x = ctx.get(node.inputs[0])
        out = ctx.new(node.outputs[0], nhwc=x.nhwc)
        target, finish = kernel_output(ctx, out.index, builtin)
        ctx.builder.operator(builtin, [x.index], [target])
        finish()

    return lower


def lower_hard_swish(ctx, node) -> None:
    """HARD_SWISH. In int8 for CPUs it runs in float between DEQUANTIZE and QUANTIZE: LiteRT has
    no fast int8 kernel (56x56x64 measured 767 us int8, 8 us through float with XNNPACK). Targets
    that need every op in int8 (Edge TPU, microcontrollers) keep the int8 kernel."""
    x = ctx.get(node.inputs[0])
    out = ctx.new(node.outputs[0], nhwc=x.nhwc)
    if not ctx.is_int8(x.index) or ctx.full_int8:
        ctx.builder.operator(schema.BuiltinOperator.HARD_SWISH, [x.index], [out.index])
        return
    stored = ctx.builder.subgraph.tensors[x.index].shape
    real, swished = ctx.temporary(stored), ctx.temporary(stored)
    ctx.builder.operator(schema.BuiltinOperator.DEQUANTIZE, [x.index], [real])
    ctx.builder.operator(schema.BuiltinOperator.HARD_SWISH, [real], [swished])
    ctx.builder.operator(schema.BuiltinOperator.QUANTIZE, [swished], [out.index])


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
        target = out.index if i == len(steps) - 1 else ctx.temporary(stored, like=x.index)
        bound = ctx.builder.constant(ctx.name("bound"), ctx.quantize_value(x.index, value))
        ctx.builder.subgraph.tensors[bound].quantization = ctx.builder.subgraph.tensors[x.index].quantization
        ctx.builder.operator(op, [current, bound], [target])
        current = target
    if not steps:  # no bounds: the identity, which TFLite spells as a RESHAPE to the same shape
        reshape(ctx, x.index, stored, out=out.index)


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
    """SOFTMAX works on the last stored axis; another axis is swapped there and back (an NHWC
    tensor's channels already are last)."""
    x = ctx.get(node.inputs[0])
    rank = len(x.shape)
    axis = stored_axis(int(node.attrs.get("axis", -1)), rank, x.nhwc)
    options = schema.SoftmaxOptionsT()
    options.beta = 1.0
    out = ctx.new(node.outputs[0], nhwc=x.nhwc)
    stored = ctx.builder.subgraph.tensors[x.index].shape
    swap = list(range(rank))
    swap[axis], swap[-1] = swap[-1], swap[axis]
    source, target = x.index, out.index
    if axis != rank - 1:
        source = ctx.transpose(x.index, stored, swap)
        target = ctx.temporary([stored[p] for p in swap], like=out.index)
    written, finish = kernel_output(ctx, target, schema.BuiltinOperator.SOFTMAX)
    ctx.builder.operator(
        schema.BuiltinOperator.SOFTMAX, [source], [written], options, schema.BuiltinOptions.SoftmaxOptions
    )
    finish()
    if target != out.index:
        ctx.transpose(target, [stored[p] for p in swap], swap, out=out.index)


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
    "HardSwish": lower_hard_swish,
    "HardSigmoid": lower_hard_sigmoid,
    "Clip": lower_clip,
    "Softmax": lower_softmax,
}
