"""Add/Sub/Mul/Div with NumPy broadcasting; constants are brought into the NHWC layout."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
from ai_edge_litert import schema_py_generated as schema

from edgec.backends.tflite.ops.common import refuse

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


def _operand(ctx, node, tensor, nhwc: bool) -> int:
    if isinstance(tensor, gs.Constant):
        return ctx.constant_in_layout(tensor.name, np.asarray(tensor.values, np.float32), nhwc)
    value = ctx.get(tensor)
    if nhwc:
        if len(value.shape) != 4:
            refuse(node, "broadcasting a lower-rank activation against an NHWC one is not supported")
        return ctx.as_nhwc(value)
    return value.index


def _binary(op_type: str):
    builtin, options_class, kind = _OPS[op_type]

    def lower(ctx, node) -> None:
        if len(node.inputs) != 2:
            refuse(node, f"{len(node.inputs)} inputs: only two are lowered")
        nhwc = any(not isinstance(t, gs.Constant) and ctx.get(t).nhwc for t in node.inputs)
        operands = [_operand(ctx, node, t, nhwc) for t in node.inputs]
        out = ctx.new(node.outputs[0], nhwc=nhwc)
        options = options_class() if options_class is not None else None
        ctx.builder.operator(builtin, operands, [out.index], options, kind)

    return lower


LOWERINGS = {name: _binary(name) for name in _OPS}
