"""Small TFLite operator emitters that several op lowerings build on (RESHAPE, arithmetic)."""

from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as schema

_ARITHMETIC = {
    schema.BuiltinOperator.ADD: (schema.AddOptionsT, schema.BuiltinOptions.AddOptions),
    schema.BuiltinOperator.SUB: (schema.SubOptionsT, schema.BuiltinOptions.SubOptions),
    schema.BuiltinOperator.MUL: (schema.MulOptionsT, schema.BuiltinOptions.MulOptions),
    schema.BuiltinOperator.DIV: (schema.DivOptionsT, schema.BuiltinOptions.DivOptions),
}


def shape_of(ctx, index: int) -> list[int]:
    """The stored shape of TFLite tensor `index`."""
    return list(ctx.builder.subgraph.tensors[index].shape)


def reshape(ctx, index: int, shape, out: int | None = None) -> int:
    """A RESHAPE of tensor `index` to `shape` (same element order) into `out`, or a new tensor."""
    shape = [int(d) for d in shape]
    if out is None:
        out = ctx.temporary(shape, like=index)
    options = schema.ReshapeOptionsT()
    options.newShape = shape
    target = ctx.builder.constant(ctx.name("shape"), np.array(shape, np.int32))
    ctx.builder.operator(
        schema.BuiltinOperator.RESHAPE, [index, target], [out], options, schema.BuiltinOptions.ReshapeOptions
    )
    return out


def binary(ctx, builtin: int, a: int, b: int, out: int | None = None) -> int:
    """ADD/SUB/MUL/DIV (NumPy broadcasting) or another two-input builtin without options."""
    if out is None:
        out = ctx.temporary(list(np.broadcast_shapes(tuple(shape_of(ctx, a)), tuple(shape_of(ctx, b)))))
    options_class, kind = _ARITHMETIC.get(builtin, (None, 0))
    ctx.builder.operator(builtin, [a, b], [out], options_class() if options_class else None, kind)
    return out


def unary(ctx, builtin: int, a: int, out: int | None = None) -> int:
    if out is None:
        out = ctx.temporary(shape_of(ctx, a))
    ctx.builder.operator(builtin, [a], [out])
    return out


def scalar(ctx, value: float) -> int:
    return ctx.builder.constant(ctx.name("scalar"), np.array(value, np.float32))
