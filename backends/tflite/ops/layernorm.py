"""LayerNormalization -> MEAN, SUB, MUL, MEAN, ADD epsilon, RSQRT, MUL, then MUL scale and ADD bias."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
from ai_edge_litert import schema_py_generated as schema

from edgec.backends.tflite.lowering import stored_axis
from edgec.backends.tflite.ops.common import present
from edgec.backends.tflite.ops.emit import binary, scalar, shape_of, unary

OP = schema.BuiltinOperator


def _mean(ctx, source: int, axes: list[int], out: int | None) -> int:
    if out is None:
        out = ctx.temporary([1 if i in axes else d for i, d in enumerate(shape_of(ctx, source))])
    options = schema.ReducerOptionsT()
    options.keepDims = True
    inputs = [source, ctx.builder.constant(ctx.name("axes"), np.array(axes, np.int32))]
    ctx.builder.operator(OP.MEAN, inputs, [out], options, schema.BuiltinOptions.ReducerOptions)
    return out


def _optional_output(ctx, node, position: int, nhwc: bool) -> int | None:
    """Mean (1) and InvStdDev (2) are intermediate results; written only where the model reads them."""
    if len(node.outputs) > position and not node.outputs[position].is_empty():
        return ctx.new(node.outputs[position], nhwc=nhwc).index
    return None


def lower_layer_normalization(ctx, node) -> None:
    """Normalizes over axes [axis, rank); an NHWC-stored input is normalized where it is stored
    (the axes remapped, scale and bias permuted like it) unless scale or bias is computed at run time."""
    x = ctx.get(node.inputs[0])
    rank = len(x.shape)
    axis = int(node.attrs.get("axis", -1)) % rank
    affine = [node.inputs[i] for i in (1, 2) if present(node, i)]
    nhwc = x.nhwc and all(isinstance(t, gs.Constant) for t in affine)
    source = x.index if nhwc else ctx.as_nchw(x)
    axes = sorted(stored_axis(a, rank, nhwc) for a in range(axis, rank))
    out = ctx.new(node.outputs[0], nhwc=nhwc)

    mean = _mean(ctx, source, axes, _optional_output(ctx, node, 1, nhwc))
    centered = binary(ctx, OP.SUB, source, mean)
    variance = _mean(ctx, binary(ctx, OP.MUL, centered, centered), axes, None)
    shifted = binary(ctx, OP.ADD, variance, scalar(ctx, float(node.attrs.get("epsilon", 1e-5))))
    inverse = unary(ctx, OP.RSQRT, shifted, _optional_output(ctx, node, 2, nhwc))

    steps = [(OP.MUL, inverse)]
    for builtin, position in ((OP.MUL, 1), (OP.ADD, 2)):
        if present(node, position):
            tensor = node.inputs[position]
            if isinstance(tensor, gs.Constant):
                operand = ctx.constant_in_layout(tensor, nhwc)
            else:
                operand = ctx.as_nchw(ctx.get(tensor))  # `source` is in ONNX layout then
            steps.append((builtin, operand))
    current = centered
    for i, (builtin, operand) in enumerate(steps):
        current = binary(ctx, builtin, current, operand, out.index if i == len(steps) - 1 else None)


LOWERINGS = {"LayerNormalization": lower_layer_normalization}
