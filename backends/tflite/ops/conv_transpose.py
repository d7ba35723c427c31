"""ConvTranspose -> TRANSPOSE_CONV (weights IOHW -> OHWI), cropped by a STRIDED_SLICE where TFLite's
own padding cannot express the ONNX pads."""

from __future__ import annotations

import math

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from edgec.backends.tflite.ops.common import bias, constant, present, refuse

BIAS_VERSION = 3  # TRANSPOSE_CONV takes a bias input from version 3 on


def _onnx_pads_before(node, in_size: int, out_size: int, kernel: int, stride: int, extra: int, pads) -> int:
    """Rows (or columns) ONNX crops from the start of the full transposed-conv output."""
    auto = node.attrs.get("auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto not in ("SAME_UPPER", "SAME_LOWER") and "output_shape" not in node.attrs:
        return pads
    # An output_shape longer than the transposed conv makes grows at the end (bias only there).
    total = max(stride * (in_size - 1) + extra + kernel - out_size, 0)
    # The ONNX spec and onnxruntime: SAME_UPPER crops the smaller half at the start; SAME_LOWER
    # and an explicit output_shape without auto_pad crop the larger half there.
    return total // 2 if auto == "SAME_UPPER" else total - total // 2


def _tflite_fits(same: bool, size: int, kernel: int, stride: int, in_size: int, before: int) -> bool:
    """Whether TRANSPOSE_CONV accepts an output `size` long for this input and crops `before` from
    its start. TFLite treats the output as the input of the matching conv: that conv's output
    size must be the input's, and its leading padding is what the transposed conv crops."""
    steps = math.ceil(size / stride) if same else int((size + stride - kernel) / stride)
    return steps == in_size and max(int(((steps - 1) * stride + kernel - size) / 2), 0) == before


def _dilated(weight: np.ndarray, dilations) -> np.ndarray:
    """TRANSPOSE_CONV has no dilation; a kernel with zeros between its taps computes the same."""
    if all(d == 1 for d in dilations):
        return weight
    dh, dw = dilations
    kh, kw = weight.shape[2:]
    spread = np.zeros((*weight.shape[:2], (kh - 1) * dh + 1, (kw - 1) * dw + 1), weight.dtype)
    spread[:, :, ::dh, ::dw] = weight
    return spread


def _slice(ctx, source: int, begin, size, out: int) -> None:
    stop = [b + s for b, s in zip(begin, size, strict=True)]
    inputs = [source] + [
        ctx.builder.constant(ctx.name(n), np.array(v, np.int32))
        for n, v in (("begin", begin), ("end", stop), ("strides", [1] * len(begin)))
    ]
    ctx.builder.operator(
        schema.BuiltinOperator.STRIDED_SLICE,
        inputs,
        [out],
        schema.StridedSliceOptionsT(),
        schema.BuiltinOptions.StridedSliceOptions,
    )


def lower_conv_transpose(ctx, node) -> None:
    x = ctx.get(node.inputs[0])
    weight = constant(node, 1)  # (C_in, C_out / group, kH, kW)
    if len(x.shape) != 4 or weight.ndim != 4:
        refuse(node, "only 2-D transposed convolutions (4-D tensors) have a TFLite kernel")
    if int(node.attrs.get("group", 1)) != 1:
        refuse(node, f"group={node.attrs['group']}: TRANSPOSE_CONV has no groups")
    weight = _dilated(weight, [int(d) for d in node.attrs.get("dilations", [1, 1])])
    out = ctx.new(node.outputs[0], nhwc=True)
    n, c_out, h_out, w_out = out.shape
    kernel = weight.shape[2:]
    strides = [int(s) for s in node.attrs.get("strides", [1, 1])]
    extra = [int(p) for p in node.attrs.get("output_padding", [0, 0])]
    pads = [int(p) for p in node.attrs.get("pads", [0, 0, 0, 0])]
    before = [
        _onnx_pads_before(node, x.shape[2 + i], out.shape[2 + i], kernel[i], strides[i], extra[i], pads[i])
        for i in range(2)
    ]
    sizes = [h_out, w_out]
    for mode in (schema.Padding.SAME, schema.Padding.VALID):
        same = mode == schema.Padding.SAME
        if all(_tflite_fits(same, sizes[i], kernel[i], strides[i], x.shape[2 + i], before[i]) for i in range(2)):
            full, target = sizes, out.index
            break
    else:  # a VALID output long enough to hold the ONNX window (output_padding < stride), then the crop
        mode = schema.Padding.VALID
        full = [max(before[i] + sizes[i], (x.shape[2 + i] - 1) * strides[i] + kernel[i]) for i in range(2)]
        if not all(_tflite_fits(False, full[i], kernel[i], strides[i], x.shape[2 + i], 0) for i in range(2)):
            refuse(node, f"an output of {sizes} needs more rows past the end than TRANSPOSE_CONV writes")
        target = ctx.temporary([n, *full, c_out], like=out.index)
    options = schema.TransposeConvOptionsT()
    options.padding = mode
    options.strideH, options.strideW = strides
    inputs = [
        ctx.builder.constant(ctx.name("output_shape"), np.array([n, *full, c_out], np.int32)),
        ctx.stored(f"{node.name}/kernel", weight.transpose(1, 2, 3, 0), node.inputs[1], axis=0),  # OHWI
        ctx.as_nhwc(x),
    ]
    version = 1
    if present(node, 2):
        inputs.append(bias(ctx, node, 2, c_out))
        version = BIAS_VERSION
    ctx.builder.operator(
        schema.BuiltinOperator.TRANSPOSE_CONV,
        inputs,
        [target],
        options,
        schema.BuiltinOptions.TransposeConvOptions,
        version=version,
    )
    if target != out.index:
        _slice(ctx, target, [0, before[0], before[1], 0], [n, h_out, w_out, c_out], out.index)


LOWERINGS = {"ConvTranspose": lower_conv_transpose}
