"""Conv -> CONV_2D, or DEPTHWISE_CONV_2D when every input channel has its own group."""

from __future__ import annotations

from ai_edge_litert import schema_py_generated as schema

from edgec.backends.tflite.ops.common import bias, constant, refuse
from edgec.backends.tflite.ops.pool import explicit_pads, padding_mode


def lower_conv(ctx, node) -> None:
    x = ctx.get(node.inputs[0])
    if len(x.shape) != 4:
        refuse(node, "only 2-D convolutions (4-D tensors) have a TFLite kernel")
    weight = constant(node, 1)  # as stored: float32, float16 or int8
    out_channels, in_per_group, kh, kw = weight.shape
    group = int(node.attrs.get("group", 1))
    strides = list(node.attrs.get("strides", [1, 1]))
    dilations = list(node.attrs.get("dilations", [1, 1]))
    source, mode = ctx.as_nhwc(x), padding_mode(node)
    if mode is None:
        source, mode = explicit_pads(ctx, node, source, x.shape, 0.0), schema.Padding.VALID
    channels = x.shape[1]
    if group == 1:
        kernel, axis = weight.transpose(0, 2, 3, 1), 0  # OIHW -> OHWI, channels first
        options = schema.Conv2DOptionsT()
        builtin, kind = schema.BuiltinOperator.CONV_2D, schema.BuiltinOptions.Conv2DOptions
    elif group == channels and in_per_group == 1:
        kernel, axis = weight.transpose(1, 2, 3, 0), 3  # (C*M, 1, H, W) -> (1, H, W, C*M)
        options = schema.DepthwiseConv2DOptionsT()
        options.depthMultiplier = out_channels // channels
        builtin, kind = schema.BuiltinOperator.DEPTHWISE_CONV_2D, schema.BuiltinOptions.DepthwiseConv2DOptions
    else:
        refuse(node, f"group={group} is neither 1 nor depthwise ({channels} channels)")
    options.padding = mode
    options.strideH, options.strideW = int(strides[0]), int(strides[1])
    options.dilationHFactor, options.dilationWFactor = int(dilations[0]), int(dilations[1])
    out = ctx.new(node.outputs[0], nhwc=True)
    inputs = [source, ctx.stored(f"{node.name}/kernel", kernel, node.inputs[1], axis), bias(ctx, node, 2, out_channels)]
    ctx.builder.operator(builtin, inputs, [out.index], options, kind)


LOWERINGS = {"Conv": lower_conv}
