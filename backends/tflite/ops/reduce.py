"""ReduceMean/Max/Min/Sum -> MEAN/REDUCE_MAX/REDUCE_MIN/SUM; with keepdims the result keeps an NHWC layout."""

from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from edgec.backends.tflite.lowering import stored_axis
from edgec.backends.tflite.ops.common import constant, present, refuse


def _reduce(builtin):
    def lower(ctx, node) -> None:
        x = ctx.get(node.inputs[0])
        rank = len(x.shape)
        if present(node, 1):
            axes = [int(a) for a in constant(node, 1).ravel()]
        else:
            axes = [int(a) for a in node.attrs.get("axes", range(rank))]
        if not axes:  # opset 18 / ReduceSum-13: no axes means all of them, unless noop_with_empty_axes
            if int(node.attrs.get("noop_with_empty_axes", 0)):
                refuse(node, "noop_with_empty_axes with no axes (an identity) is not lowered")
            axes = list(range(rank))
        keep = bool(node.attrs.get("keepdims", 1))
        nhwc = x.nhwc and keep  # dropping axes of an NHWC tensor: reduce in ONNX order instead
        source = x.index if nhwc else ctx.as_nchw(x)
        stored = sorted(stored_axis(a, rank, nhwc) for a in axes)
        options = schema.ReducerOptionsT()
        options.keepDims = keep
        out = ctx.new(node.outputs[0], nhwc=nhwc)
        inputs = [source, ctx.builder.constant(ctx.name("axes"), np.array(stored, np.int32))]
        ctx.builder.operator(builtin, inputs, [out.index], options, schema.BuiltinOptions.ReducerOptions)

    return lower


LOWERINGS = {
    "ReduceMean": _reduce(schema.BuiltinOperator.MEAN),
    "ReduceMax": _reduce(schema.BuiltinOperator.REDUCE_MAX),
    "ReduceMin": _reduce(schema.BuiltinOperator.REDUCE_MIN),
    "ReduceSum": _reduce(schema.BuiltinOperator.SUM),
}
