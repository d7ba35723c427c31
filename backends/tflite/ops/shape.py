"""Flatten/Reshape -> RESHAPE in ONNX element order (an NHWC input is transposed back first,
unless only fully connected layers read the result: they take the NHWC order by permuting their
weights' columns, the transpose onnx2tf and TFLite's converter also fold away)."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
from ai_edge_litert import schema_py_generated as schema

from edgec.backends.tflite.lowering import Lowered
from edgec.backends.tflite.ops.common import refuse


def _read_only_by_fully_connected(ctx, tensor: gs.Variable) -> bool:
    """Every reader is a Gemm/MatMul that dense.py lowers to FULLY_CONNECTED from this tensor."""
    if tensor.name in ctx.graph_outputs or not tensor.outputs:
        return False
    for reader in tensor.outputs:
        weight = reader.inputs[1] if len(reader.inputs) > 1 else None
        if reader.op not in ("Gemm", "MatMul") or reader.inputs[0] is not tensor:
            return False
        if not isinstance(weight, gs.Constant) or np.ndim(weight.values) != 2:
            return False
        if reader.op == "Gemm" and int(reader.attrs.get("transA", 0)):
            return False
        if reader.op == "Gemm" and len(reader.inputs) > 2 and not isinstance(reader.inputs[2], (gs.Constant,)):
            return False
    return True


def lower_reshape(ctx, node) -> None:
    x = ctx.get(node.inputs[0])
    target = node.outputs[0]
    if 0 in x.shape or 0 in tuple(target.shape):
        refuse(node, "zero-size tensors: LiteRT's RESHAPE counts their elements wrongly")
    flat = x.nhwc and len(target.shape) == 2 and target.shape[0] == x.shape[0]
    if flat and _read_only_by_fully_connected(ctx, target):
        n, c, h, w = x.shape
        out = ctx.new(target, nhwc=False)
        _reshape(ctx, x.index, out)
        columns = np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).ravel()
        ctx.values[target.name] = Lowered(out.index, out.shape, columns=columns)
        return
    out = ctx.new(target, nhwc=False)
    _reshape(ctx, ctx.as_nchw(x), out)


def _reshape(ctx, source: int, out) -> None:
    shape = ctx.builder.constant(ctx.name("shape"), np.array(out.shape, np.int32))
    options = schema.ReshapeOptionsT()
    options.newShape = list(out.shape)
    ctx.builder.operator(
        schema.BuiltinOperator.RESHAPE, [source, shape], [out.index], options, schema.BuiltinOptions.ReshapeOptions
    )


LOWERINGS = {"Flatten": lower_reshape, "Reshape": lower_reshape}
