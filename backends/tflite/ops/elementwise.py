"""Add/Sub/Mul/Div with NumPy broadcasting; constants are brought into the NHWC layout."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
from ai_edge_litert import schema_py_generated as schema

from edgec.backends.tflite.lowering import Lowered
from edgec.backends.tflite.ops.common import refuse
from edgec.backends.tflite.ops.emit import reshape, shape_of

_OPS = {
    "Add": (schema.BuiltinOperator.ADD, schema.AddOptionsT, schema.BuiltinOptions.AddOptions),
    "Sub": (schema.BuiltinOperator.SUB, schema.SubOptionsT, schema.BuiltinOptions.SubOptions),
    "Mul": (schema.BuiltinOperator.MUL, schema.MulOptionsT, schema.BuiltinOptions.MulOptions),
    "Div": (schema.BuiltinOperator.DIV, schema.DivOptionsT, schema.BuiltinOptions.DivOptions),
    "Pow": (schema.BuiltinOperator.POW, schema.PowOptionsT, schema.BuiltinOptions.PowOptions),
    "PRelu": (schema.BuiltinOperator.PRELU, None, 0),
    "Max": (schema.BuiltinOperator.MAXIMUM, None, 0),
    "Min": (schema.BuiltinOperator.MINIMUM, None, 0),
}
VARIADIC = {"Max", "Min"}  # ONNX takes one or more inputs


def _operand(ctx, node, tensor, nhwc: bool) -> int:
    if isinstance(tensor, gs.Constant):
        return ctx.constant_in_layout(tensor, nhwc)
    value = ctx.get(tensor)
    if nhwc:
        if len(value.shape) < 4:  # NumPy broadcasting left-pads with unit axes; then permute like the other
            padded = (1,) * (4 - len(value.shape)) + tuple(value.shape)
            value = Lowered(reshape(ctx, value.index, padded), padded)
        return ctx.as_nhwc(value)
    return value.index


def _binary(op_type: str):
    builtin, options_class, kind = _OPS[op_type]

    def lower(ctx, node) -> None:
        if len(node.inputs) != 2 and not (op_type in VARIADIC and node.inputs):
            refuse(node, f"{len(node.inputs)} inputs: only two are lowered")
        nhwc = any(not isinstance(t, gs.Constant) and ctx.get(t).nhwc for t in node.inputs)
        operands = [_operand(ctx, node, t, nhwc) for t in node.inputs]
        out = ctx.new(node.outputs[0], nhwc=nhwc)
        if len(operands) == 1:  # max(x) = max(x, x): TFLite has no identity op
            operands *= 2
        current = operands[0]
        for i, operand in enumerate(operands[1:], start=2):  # a chain of pairs for Max/Min of many
            shape = np.broadcast_shapes(tuple(shape_of(ctx, current)), tuple(shape_of(ctx, operand)))
            target = out.index if i == len(operands) else ctx.temporary(shape, like=out.index)
            options = options_class() if options_class is not None else None
            ctx.builder.operator(builtin, [current, operand], [target], options, kind)
            current = target

    return lower


def lower_reciprocal(ctx, node) -> None:
    """1 / x as DIV (TFLite has no reciprocal operator)."""
    x = ctx.get(node.inputs[0])
    out = ctx.new(node.outputs[0], nhwc=x.nhwc)
    one = ctx.builder.constant(ctx.name("one"), np.ones((1,) * len(x.shape), np.float32))
    ctx.builder.operator(
        schema.BuiltinOperator.DIV, [one, x.index], [out.index], schema.DivOptionsT(), schema.BuiltinOptions.DivOptions
    )


LOWERINGS = {name: _binary(name) for name in _OPS} | {"Reciprocal": lower_reciprocal}
