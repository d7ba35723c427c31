"""Equal/Greater/Less(OrEqual) -> EQUAL/GREATER/LESS(_EQUAL) (bool tensors) and Where -> SELECT_V2,
with NumPy broadcasting in either layout."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
from ai_edge_litert import schema_py_generated as schema

from edgec.backends.tflite.ops.common import refuse
from edgec.backends.tflite.ops.elementwise import _operand

# What LiteRT's EQUAL and SELECT_V2 kernels take (int8 ones only with quantization, via Q/DQ folding).
COMPARABLE = (np.float32, np.int32, np.int64, np.bool_)


def _dtype(tensor) -> np.dtype | None:
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values).dtype
    return None if tensor.dtype is None else np.dtype(tensor.dtype)


def _check(ctx, node, positions, allowed) -> None:
    for position in positions:
        tensor = node.inputs[position]
        dtype = _dtype(tensor)
        if dtype is not None and dtype not in allowed and tensor.name not in ctx.quant:
            names = ", ".join(np.dtype(a).name for a in allowed)
            refuse(node, f"input {position} '{tensor.name}' is {dtype}; LiteRT's kernel takes {names}")


_COMPARISONS = {
    "Equal": (schema.BuiltinOperator.EQUAL, schema.EqualOptionsT, schema.BuiltinOptions.EqualOptions),
    "Greater": (schema.BuiltinOperator.GREATER, schema.GreaterOptionsT, schema.BuiltinOptions.GreaterOptions),
    "GreaterOrEqual": (schema.BuiltinOperator.GREATER_EQUAL, schema.GreaterEqualOptionsT,
                       schema.BuiltinOptions.GreaterEqualOptions),
    "Less": (schema.BuiltinOperator.LESS, schema.LessOptionsT, schema.BuiltinOptions.LessOptions),
    "LessOrEqual": (schema.BuiltinOperator.LESS_EQUAL, schema.LessEqualOptionsT,
                    schema.BuiltinOptions.LessEqualOptions),
}  # fmt: skip


def _comparison(op_type: str):
    builtin, options, kind = _COMPARISONS[op_type]

    def lower(ctx, node) -> None:
        if len(node.inputs) != 2:
            refuse(node, f"{len(node.inputs)} inputs: {op_type} takes two")
        _check(ctx, node, (0, 1), COMPARABLE if op_type == "Equal" else (np.float32, np.int32, np.int64))
        nhwc = any(not isinstance(t, gs.Constant) and ctx.get(t).nhwc for t in node.inputs)
        operands = [_operand(ctx, node, t, nhwc) for t in node.inputs]
        out = ctx.new(node.outputs[0], nhwc=nhwc)
        ctx.builder.operator(builtin, operands, [out.index], options(), kind)

    return lower


def lower_where(ctx, node) -> None:
    if len(node.inputs) != 3:
        refuse(node, f"{len(node.inputs)} inputs: Where takes condition, x and y")
    _check(ctx, node, (0,), (np.bool_,))
    _check(ctx, node, (1, 2), (np.float32, np.int32, np.int64))
    nhwc = any(not isinstance(t, gs.Constant) and ctx.get(t).nhwc for t in node.inputs)
    operands = [_operand(ctx, node, t, nhwc) for t in node.inputs]
    out = ctx.new(node.outputs[0], nhwc=nhwc)
    ctx.builder.operator(
        schema.BuiltinOperator.SELECT_V2,
        operands,
        [out.index],
        schema.SelectV2OptionsT(),
        schema.BuiltinOptions.SelectV2Options,
    )


LOWERINGS = {name: _comparison(name) for name in _COMPARISONS} | {"Where": lower_where}
