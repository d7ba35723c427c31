"""Flatten/Reshape -> RESHAPE in ONNX element order (an NHWC input is transposed back first)."""

from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as schema


def lower_reshape(ctx, node) -> None:
    x = ctx.get(node.inputs[0])
    out = ctx.new(node.outputs[0], nhwc=False)
    shape = ctx.builder.constant(ctx.name("shape"), np.array(out.shape, np.int32))
    options = schema.ReshapeOptionsT()
    options.newShape = list(out.shape)
    ctx.builder.operator(
        schema.BuiltinOperator.RESHAPE,
        [ctx.as_nchw(x), shape],
        [out.index],
        options,
        schema.BuiltinOptions.ReshapeOptions,
    )


LOWERINGS = {"Flatten": lower_reshape, "Reshape": lower_reshape}
