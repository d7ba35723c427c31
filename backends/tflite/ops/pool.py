"""MaxPool/AveragePool -> MAX_POOL_2D/AVERAGE_POOL_2D; GlobalAveragePool -> MEAN over H, W."""

from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from edgec.backends.tflite.ops.common import refuse

LOWEST_FLOAT32 = float(np.finfo(np.float32).min)


def padding_mode(node):
    """SAME or VALID when the ONNX padding is one of those, else None (explicit pads needed)."""
    auto = node.attrs.get("auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto == "SAME_UPPER":  # TFLite's SAME puts the odd pixel at the end too
        return schema.Padding.SAME
    if auto == "SAME_LOWER":
        refuse(node, "auto_pad=SAME_LOWER has no TFLite equivalent")
    if auto == "VALID" or not any(node.attrs.get("pads", [])):
        return schema.Padding.VALID
    return None


def explicit_pads(ctx, node, source: int, nchw_shape, value: float) -> int:
    """A PAD (or PADV2 with `value`) of the NHWC tensor `source` by the node's ONNX pads."""
    top, left, bottom, right = (int(p) for p in node.attrs["pads"])
    n, c, h, w = nchw_shape
    out = ctx.temporary([n, h + top + bottom, w + left + right, c])
    ctx.pad(source, [[0, 0], [top, bottom], [left, right], [0, 0]], value, out)
    return out


def _pool(builtin, fill):
    def lower(ctx, node) -> None:
        x = ctx.get(node.inputs[0])
        kernel = list(node.attrs["kernel_shape"])
        if len(kernel) != 2:
            refuse(node, "only 2-D pooling has a TFLite kernel")
        if int(node.attrs.get("ceil_mode", 0)):
            refuse(node, "ceil_mode=1 is not supported")
        if any(d != 1 for d in node.attrs.get("dilations", [1, 1])):
            refuse(node, "dilated pooling is not supported")
        source, mode = ctx.as_nhwc(x), padding_mode(node)
        if mode is None:
            if fill is None and not int(node.attrs.get("count_include_pad", 0)):
                refuse(node, "explicit pads that are not SAME, with count_include_pad=0")
            source, mode = explicit_pads(ctx, node, source, x.shape, fill or 0.0), schema.Padding.VALID
        options = schema.Pool2DOptionsT()
        options.padding = mode
        options.filterHeight, options.filterWidth = (int(k) for k in kernel)
        strides = list(node.attrs.get("strides", [1, 1]))
        options.strideH, options.strideW = int(strides[0]), int(strides[1])
        out = ctx.new(node.outputs[0], nhwc=True)
        ctx.builder.operator(builtin, [source], [out.index], options, schema.BuiltinOptions.Pool2DOptions)

    return lower


def lower_global_average_pool(ctx, node) -> None:
    x = ctx.get(node.inputs[0])
    if len(x.shape) != 4:
        refuse(node, "only 4-D inputs")
    options = schema.ReducerOptionsT()
    options.keepDims = True
    out = ctx.new(node.outputs[0], nhwc=True)
    axes = ctx.builder.constant(ctx.name("axes"), np.array([1, 2], np.int32))
    ctx.builder.operator(
        schema.BuiltinOperator.MEAN, [ctx.as_nhwc(x), axes], [out.index], options, schema.BuiltinOptions.ReducerOptions
    )


LOWERINGS = {
    "MaxPool": _pool(schema.BuiltinOperator.MAX_POOL_2D, LOWEST_FLOAT32),
    "AveragePool": _pool(schema.BuiltinOperator.AVERAGE_POOL_2D, None),
    "GlobalAveragePool": lower_global_average_pool,
}
