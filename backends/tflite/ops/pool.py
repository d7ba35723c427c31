"""MaxPool/AveragePool -> MAX_POOL_2D/AVERAGE_POOL_2D; GlobalAveragePool/GlobalMaxPool -> MEAN/REDUCE_MAX
over the spatial axes (H, W of an NHWC 4-D tensor; axes 2.. of any other rank, in ONNX layout)."""

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
    if auto == "SAME_LOWER":  # the odd pixel at the start: explicit pads
        return None
    if auto == "VALID" or not any(node.attrs.get("pads", [])):
        return schema.Padding.VALID
    return None


def onnx_pads(node, nchw_shape) -> list[int]:
    """[top, left, bottom, right]: the node's pads, or what its auto_pad SAME_* works out to."""
    auto = node.attrs.get("auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto == "VALID":
        return [0, 0, 0, 0]
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        return [int(p) for p in node.attrs.get("pads", [0, 0, 0, 0])]
    kernel = node.attrs.get("kernel_shape") or np.shape(node.inputs[1].values)[2:]  # Conv: from its weights
    strides, dilations = node.attrs.get("strides", [1, 1]), node.attrs.get("dilations", [1, 1])
    begin, end = [], []
    for size, k, s, d in zip(nchw_shape[2:], kernel, strides, dilations, strict=True):
        total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        begin.append(large if auto == "SAME_LOWER" else small)
        end.append(small if auto == "SAME_LOWER" else large)
    return begin + end


def explicit_pads(ctx, node, source: int, nchw_shape, value: float, extra=(0, 0)) -> int:
    """A PAD (or PADV2 with `value`) of the NHWC tensor `source` by the node's ONNX pads, plus
    `extra` rows and columns at the end (the windows ceil_mode adds)."""
    top, left, bottom, right = onnx_pads(node, nchw_shape)
    bottom, right = bottom + extra[0], right + extra[1]
    n, c, h, w = nchw_shape
    out = ctx.temporary([n, h + top + bottom, w + left + right, c], like=source)
    ctx.pad(source, [[0, 0], [top, bottom], [left, right], [0, 0]], value, out)
    return out


def _tflite_same(sizes, outs, kernel, strides, pads) -> bool:
    """Whether TFLite's SAME padding gives these output sizes and these [top, left, bottom, right] pads."""
    begin, end = [], []
    for n, k, s in zip(sizes, kernel, strides, strict=True):
        total = max((-(-n // s) - 1) * s + k - n, 0)
        begin.append(total // 2)
        end.append(total - total // 2)
    return list(outs) == [-(-n // s) for n, s in zip(sizes, strides, strict=True)] and list(pads) == begin + end


def _window_counts(out: int, kernel: int, stride: int, begin: int, low: int, high: int) -> np.ndarray:
    """How many positions of each output's window fall inside [low, high) of the unpadded axis."""
    starts = np.arange(out) * stride - begin
    return np.minimum(starts + kernel, high) - np.maximum(starts, low)


def _average_correction(node, sizes, outs, kernel, strides, pads) -> np.ndarray | None:
    """AVERAGE_POOL over an explicitly padded input divides by the whole window; ONNX divides by
    the window's positions inside the input (count_include_pad=0) or inside input and pads, never
    the ceil_mode overhang. The factor window / count per output pixel, None when it is all ones."""
    counted = int(node.attrs.get("count_include_pad", 0))
    counts = np.ones((1,), np.int64)
    for axis in range(2):
        begin, end = pads[axis], pads[axis + 2]
        low, high = (-begin, sizes[axis] + end) if counted else (0, sizes[axis])
        counts = np.multiply.outer(counts, _window_counts(outs[axis], kernel[axis], strides[axis], begin, low, high))
    if (counts <= 0).any():
        refuse(node, "a pooling window that covers no input pixel")
    window = kernel[0] * kernel[1]
    return None if (counts == window).all() else (window / counts).astype(np.float32).reshape(1, *outs, 1)


def _check_ceil_mode_sizes(node, sizes, outs, kernel, strides, pads) -> None:
    """onnxruntime drops a last window that would start in the end padding; ONNX shape inference
    keeps it, and the graph's shapes downstream were inferred with it."""
    for i in range(2):
        padded = sizes[i] + pads[i] + pads[i + 2]
        count = -(-(padded - kernel[i]) // strides[i]) + 1
        if (count - 1) * strides[i] >= sizes[i] + pads[i]:
            count -= 1
        if count != outs[i]:
            refuse(node, f"ceil_mode=1: the inferred output size {outs[i]} keeps a window that starts in the padding")


def _pool(builtin, fill):
    def lower(ctx, node) -> None:
        x = ctx.get(node.inputs[0])
        kernel = [int(k) for k in node.attrs["kernel_shape"]]
        if len(kernel) != 2:
            refuse(node, "only 2-D pooling has a TFLite kernel")
        if any(d != 1 for d in node.attrs.get("dilations", [1, 1])):
            refuse(node, "dilated pooling: TFLite pools have no dilation")
        strides = [int(s) for s in node.attrs.get("strides", [1, 1])]
        out = ctx.new(node.outputs[0], nhwc=True)
        sizes, outs, pads = x.shape[2:], out.shape[2:], onnx_pads(node, x.shape)
        if int(node.attrs.get("ceil_mode", 0)):
            _check_ceil_mode_sizes(node, sizes, outs, kernel, strides, pads)
        # ceil_mode: the last windows may run past the padded input
        extra = [max((outs[i] - 1) * strides[i] + kernel[i] - (sizes[i] + pads[i] + pads[i + 2]), 0) for i in range(2)]
        average = fill is None
        counted = average and int(node.attrs.get("count_include_pad", 0))
        source, mode, correction = ctx.as_nhwc(x), schema.Padding.VALID, None
        if not counted and not any(extra) and _tflite_same(sizes, outs, kernel, strides, pads):
            mode = schema.Padding.SAME  # TFLite's SAME averages over the pixels inside the input too
        elif any(pads) or any(extra):
            source = explicit_pads(ctx, node, source, x.shape, fill or 0.0, extra)
            if average:
                correction = _average_correction(node, sizes, outs, kernel, strides, pads)
        if correction is not None and ctx.is_int8(source):
            refuse(node, "int8 average pooling whose divisor ONNX shrinks at the borders")
        options = schema.Pool2DOptionsT()
        options.padding = mode
        options.filterHeight, options.filterWidth = kernel
        options.strideH, options.strideW = strides
        stored = ctx.builder.subgraph.tensors[out.index].shape
        target = out.index if correction is None else ctx.temporary(stored)
        ctx.builder.operator(builtin, [source], [target], options, schema.BuiltinOptions.Pool2DOptions)
        if correction is not None:
            factor = ctx.builder.constant(ctx.name("count_correction"), correction)
            ctx.builder.operator(
                schema.BuiltinOperator.MUL,
                [target, factor],
                [out.index],
                schema.MulOptionsT(),
                schema.BuiltinOptions.MulOptions,
            )

    return lower


def _global_pool(builtin):
    def lower(ctx, node) -> None:
        x = ctx.get(node.inputs[0])
        if len(x.shape) < 3:
            refuse(node, "inputs need a spatial axis (rank 3 or more)")
        options = schema.ReducerOptionsT()
        options.keepDims = True
        nhwc = len(x.shape) == 4
        out = ctx.new(node.outputs[0], nhwc=nhwc)
        axes = [1, 2] if nhwc else list(range(2, len(x.shape)))
        source = ctx.as_nhwc(x) if nhwc else x.index
        axes_tensor = ctx.builder.constant(ctx.name("axes"), np.array(axes, np.int32))
        ctx.builder.operator(builtin, [source, axes_tensor], [out.index], options, schema.BuiltinOptions.ReducerOptions)

    return lower


LOWERINGS = {
    "MaxPool": _pool(schema.BuiltinOperator.MAX_POOL_2D, LOWEST_FLOAT32),
    "AveragePool": _pool(schema.BuiltinOperator.AVERAGE_POOL_2D, None),
    "GlobalAveragePool": _global_pool(schema.BuiltinOperator.MEAN),
    "GlobalMaxPool": _global_pool(schema.BuiltinOperator.REDUCE_MAX),
}
