"""ReduceMean/ReduceMax -> MEAN/REDUCE_MAX; with keepdims the result keeps an NHWC layout."""

from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from edgec.backends.tflite.lowering import stored_axis
from edgec.backends.tflite.ops.common import constant, present


def _reduce(builtin):
    def lower(ctx, node) -> None:
        x = ctx.get(node.inputs[0])
        rank = len(x.shape)
        if present(node, 1):
            axes = [int(a) for a in constant(node, 1).ravel()]
        else:
            axes = [int(a) for a in node.attrs.get("axes", range(rank))]
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
}
