"""TFLite builtin operators -> ONNX nodes: the conversion table the TFLite frontend walks the graph with.

Each converter reads its operands through the Context (which handles layouts, constants and Q/DQ)
and writes its result with `ctx.produce`. Layout-sensitive ops (convolution, pooling, resizing)
run in NCHW; elementwise ops, PAD and CONCATENATION run in whichever layout their inputs already
have; everything that depends on the memory order (RESHAPE, SOFTMAX's last axis) sees NHWC.
"""

from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as schema
from onnx import TensorProto

from edgec.frontends.tflite_context import NCHW_TO_NHWC, NHWC_TO_NCHW, Context
from edgec.frontends.tflite_sparse import densify

INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min


def _io(op) -> tuple[list[int], int]:
    return [int(i) for i in op.inputs], int(op.outputs[0])


def _activation(op) -> int:
    return getattr(op.builtinOptions, "fusedActivationFunction", schema.ActivationFunctionType.NONE)


def _ints(ctx: Context, values, hint: str) -> str:
    return ctx.initializer(np.asarray(values, np.int64), hint)


def _same_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TFLite SAME: out = ceil(size / stride); the odd pad goes at the end."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _window(ctx: Context, options, x: int, kernel, dilations=(1, 1)) -> dict:
    """Conv/pool attributes; pads come from the static NHWC input shape."""
    strides = (options.strideH, options.strideW)
    if options.padding == schema.Padding.VALID:
        pads = [0, 0, 0, 0]
    elif options.padding == schema.Padding.SAME:
        (top, bottom), (left, right) = (
            _same_pads(size, k, s, d) for size, k, s, d in zip(ctx.shape(x)[1:3], kernel, strides, dilations)
        )
        pads = [top, left, bottom, right]
    else:
        ctx.fail(f"padding mode {options.padding} has no ONNX conversion")
    return {"kernel_shape": list(kernel), "strides": list(strides), "pads": pads}


def _convolution(weight_perm: tuple[int, ...], depthwise: bool):
    """CONV_2D (OHWI weights; grouped when the input has more channels than I) and
    DEPTHWISE_CONV_2D (1HW(C*M) weights, one group per input channel) as an NCHW Conv."""

    def convert(ctx: Context, op) -> None:
        inputs, out = _io(op)
        x, w = inputs[:2]
        o = op.builtinOptions
        channels = ctx.shape(x)[3]
        group = channels if depthwise else channels // ctx.shape(w)[3]
        dilations = (o.dilationHFactor, o.dilationWFactor)
        operands = [ctx.operand(x, nchw=True), ctx.weight(w, weight_perm)]
        operands += [ctx.operand(inputs[2])] if len(inputs) > 2 and inputs[2] >= 0 else []
        attrs = _window(ctx, o, x, ctx.shape(w)[1:3], dilations)
        activation = o.fusedActivationFunction
        ctx.produce(out, "Conv", operands, True, activation, dilations=list(dilations), group=group, **attrs)

    return convert


def _transpose_conv(ctx: Context, x: int, w: int, b: int, out: int, padding: int, strides, activation=None):
    """A transposed convolution with OHWI weights as an NCHW ConvTranspose. TFLite crops the full
    (in - 1) * stride + kernel output to the output's size: SAME takes the odd row at the end,
    VALID crops only at the end."""
    kernel = ctx.shape(w)[1:3]
    pads = []
    for size, k, stride, wanted in zip(ctx.shape(x)[1:3], kernel, strides, ctx.shape(out)[1:3]):
        total = (size - 1) * stride + k - wanted
        if total < 0:
            ctx.fail(f"transposed convolution '{ctx.names[out]}' wants {wanted} rows/columns, more than it makes")
        pads.append((total // 2, total - total // 2) if padding == schema.Padding.SAME else (0, total))
    operands = [ctx.operand(x, nchw=True), ctx.weight(w, (3, 0, 1, 2))]  # OHWI -> (I, O, H, W)
    operands += [ctx.operand(b)] if b >= 0 else []
    attrs = {
        "kernel_shape": list(kernel),
        "strides": list(strides),
        "pads": [pads[0][0], pads[1][0], pads[0][1], pads[1][1]],
    }
    ctx.produce(out, "ConvTranspose", operands, True, activation, **attrs)


def convert_transpose_conv(ctx: Context, op) -> None:
    """TRANSPOSE_CONV(output_shape, weights OHWI, input[, bias])."""
    inputs, out = _io(op)
    o = op.builtinOptions
    bias = inputs[3] if len(inputs) > 3 else -1
    _transpose_conv(
        ctx,
        inputs[2],
        inputs[1],
        bias,
        out,
        o.padding,
        (o.strideH, o.strideW),
        getattr(o, "fusedActivationFunction", None),
    )


def convert_transpose_conv_bias(ctx: Context, op) -> None:
    """MediaPipe's custom Convolution2DTransposeBias(input, weights OHWI, bias): its options are
    TfLiteTransposeConvParams as raw int32s (padding 1 SAME / 2 VALID, stride width, stride height)."""
    inputs, out = _io(op)
    raw = bytes(bytearray(op.customOptions)) if op.customOptions is not None else b""
    if len(raw) < 12:
        ctx.fail(f"Convolution2DTransposeBias '{ctx.names[out]}' has {len(raw)} bytes of options, not 12")
    padding, stride_w, stride_h = (int(v) for v in np.frombuffer(raw[:12], "<i4"))
    if padding not in (1, 2) or stride_w < 1 or stride_h < 1:
        ctx.fail(f"Convolution2DTransposeBias '{ctx.names[out]}': padding {padding}, strides {stride_h}x{stride_w}")
    same = schema.Padding.SAME if padding == 1 else schema.Padding.VALID
    _transpose_conv(ctx, inputs[0], inputs[1], inputs[2] if len(inputs) > 2 else -1, out, same, (stride_h, stride_w))


def convert_fully_connected(ctx: Context, op) -> None:
    """Gemm(x, W, b, transB=1) on x flattened to (-1, depth); keep_num_dims restores the rank."""
    inputs, out = _io(op)
    x, w = inputs[:2]
    o = op.builtinOptions
    if o.weightsFormat != schema.FullyConnectedOptionsWeightsFormat.DEFAULT:
        ctx.fail(f"FULLY_CONNECTED '{ctx.names[out]}': shuffled weights have no ONNX conversion")
    depth = ctx.shape(w)[1]
    a = ctx.operand(x)
    if len(ctx.shape(x)) != 2 or ctx.shape(x)[1] != depth:
        a = ctx.emit("Reshape", [a, _ints(ctx, [-1, depth], "fc_shape")], f"{ctx.names[x]}_2d")
    operands = [a, ctx.operand(w)] + ([ctx.operand(inputs[2])] if len(inputs) > 2 and inputs[2] >= 0 else [])
    out_shape = ctx.shape(out)
    if len(out_shape) == 2:
        ctx.produce(out, "Gemm", operands, activation=o.fusedActivationFunction, transB=1)
        return
    y = ctx.emit("Gemm", operands, f"{ctx.names[out]}_2d", transB=1)
    ctx.produce(out, "Reshape", [y, _ints(ctx, out_shape, "fc_out_shape")], activation=o.fusedActivationFunction)


def _pool(onnx_op: str):
    def convert(ctx: Context, op) -> None:
        inputs, out = _io(op)
        o = op.builtinOptions
        attrs = _window(ctx, o, inputs[0], (o.filterHeight, o.filterWidth))
        # AveragePool's default count_include_pad=0 matches TFLite, which averages real pixels only.
        ctx.produce(out, onnx_op, [ctx.operand(inputs[0], nchw=True)], True, o.fusedActivationFunction, **attrs)

    return convert


def _binary(onnx_op: str):
    def convert(ctx: Context, op) -> None:
        inputs, out = _io(op)
        nchw = ctx.prefers_nchw(inputs) and len(ctx.shape(out)) == 4
        operands = [ctx.operand(i, nchw) for i in inputs]
        ctx.produce(out, onnx_op, operands, nchw, _activation(op))

    return convert


def convert_squared_difference(ctx: Context, op) -> None:
    inputs, out = _io(op)
    nchw = ctx.prefers_nchw(inputs) and len(ctx.shape(out)) == 4
    diff = ctx.emit("Sub", [ctx.operand(i, nchw) for i in inputs], f"{ctx.names[out]}_diff")
    ctx.produce(out, "Mul", [diff, diff], nchw)


def _unary(onnx_op: str, bounds: tuple[float, float] | None = None, **fixed):
    def convert(ctx: Context, op) -> None:
        inputs, out = _io(op)
        nchw = ctx.prefers_nchw(inputs[:1])
        operands = [ctx.operand(inputs[0], nchw)]
        if bounds is not None:
            operands += [
                ctx.initializer(np.array(b, np.float32), f"{ctx.names[out]}_{k}") for b, k in zip(bounds, "lh")
            ]
        attrs = {key: getter(op.builtinOptions) for key, getter in fixed.items()}
        ctx.produce(out, onnx_op, operands, nchw, **attrs)

    return convert


def convert_rsqrt(ctx: Context, op) -> None:
    inputs, out = _io(op)
    nchw = ctx.prefers_nchw(inputs)
    root = ctx.emit("Sqrt", [ctx.operand(inputs[0], nchw)], f"{ctx.names[out]}_sqrt")
    ctx.produce(out, "Reciprocal", [root], nchw)


def convert_softmax(ctx: Context, op) -> None:
    inputs, out = _io(op)
    nchw = ctx.prefers_nchw(inputs[:1])
    x = ctx.operand(inputs[0], nchw)
    beta = float(op.builtinOptions.beta)
    if beta != 1.0:
        x = ctx.emit("Mul", [x, ctx.initializer(np.array(beta, np.float32), "beta")], f"{ctx.names[out]}_scaled")
    ctx.produce(out, "Softmax", [x], nchw, axis=1 if nchw else -1)  # TFLite: the last (channel) axis


def _reduce(onnx_op: str):
    def convert(ctx: Context, op) -> None:
        inputs, out = _io(op)
        x = inputs[0]
        rank, keep = len(ctx.shape(x)), bool(op.builtinOptions.keepDims)
        axes = sorted({int(a) % rank for a in ctx.array(inputs[1]).ravel()})
        if not axes:
            ctx.fail(f"{onnx_op} '{ctx.names[out]}' reduces no axis")
        # Dropping axes of an NCHW view yields the TFLite order only when the kept axes keep theirs.
        kept = [a for a in NHWC_TO_NCHW if a not in axes]
        nchw = ctx.prefers_nchw([x]) and (keep or kept == sorted(kept))
        if nchw:
            axes = sorted(NHWC_TO_NCHW.index(a) for a in axes)
        operands = [ctx.operand(x, nchw)]
        if onnx_op == "ReduceSum":  # the one reduction that takes axes as an input at opset 13-17
            operands.append(_ints(ctx, axes, "axes"))
            attrs = {}
        else:
            attrs = {"axes": axes}
        ctx.produce(out, onnx_op, operands, nchw and keep, keepdims=int(keep), **attrs)

    return convert


def convert_pad(ctx: Context, op) -> None:
    inputs, out = _io(op)
    x = inputs[0]
    pads = ctx.array(inputs[1]).reshape(-1, 2).astype(np.int64)
    nchw = ctx.prefers_nchw([x])
    if nchw:
        pads = pads[list(NHWC_TO_NCHW)]
    operands = [ctx.operand(x, nchw), _ints(ctx, np.concatenate([pads[:, 0], pads[:, 1]]), "pads")]
    attrs = {}
    if op.builtinOptionsType == schema.BuiltinOptions.MirrorPadOptions:
        if op.builtinOptions.mode != schema.MirrorPadMode.REFLECT:
            ctx.fail(f"MIRROR_PAD '{ctx.names[out]}': SYMMETRIC mode has no ONNX Pad equivalent")
        attrs["mode"] = "reflect"
    elif len(inputs) > 2 and inputs[2] >= 0:  # PADV2's fill value (dequantized in int8 models)
        fill = np.float32(ctx.real(inputs[2]).reshape(()))
        operands.append(ctx.initializer(fill, f"{ctx.names[out]}_fill"))
    ctx.produce(out, "Pad", operands, nchw, **attrs)


def convert_reshape(ctx: Context, op) -> None:
    """RESHAPE, SQUEEZE, EXPAND_DIMS: the output's static shape says where every element goes."""
    inputs, out = _io(op)
    shape = ctx.shape(out)
    if any(d < 0 for d in shape) or int(np.prod(shape)) != int(np.prod(ctx.shape(inputs[0]))):
        ctx.fail(f"'{ctx.names[out]}' has no static shape matching its input; dynamic shapes are not supported")
    ctx.produce(out, "Reshape", [ctx.operand(inputs[0]), _ints(ctx, shape, f"{ctx.names[out]}_shape")])


def convert_concatenation(ctx: Context, op) -> None:
    inputs, out = _io(op)
    rank = len(ctx.shape(out))
    nchw = ctx.prefers_nchw(inputs) and rank == 4
    axis = int(op.builtinOptions.axis) % rank
    axis = NHWC_TO_NCHW.index(axis) if nchw else axis
    if _activation(op) != schema.ActivationFunctionType.NONE:
        # LiteRT's reference kernel refuses it and its optimized one ignores it: no one meaning.
        ctx.fail(f"CONCATENATION '{ctx.names[out]}' has a fused activation, which LiteRT does not apply")
    ctx.produce(out, "Concat", [ctx.operand(i, nchw) for i in inputs], nchw, axis=axis)


def convert_transpose(ctx: Context, op) -> None:
    inputs, out = _io(op)
    x = inputs[0]
    rank = len(ctx.shape(x))
    perm = [int(p) % rank for p in ctx.array(inputs[1]).ravel()]
    if ctx.prefers_nchw([x]):  # one Transpose straight from the NCHW view, or none
        perm = [NCHW_TO_NHWC[p] for p in perm]
        if perm == sorted(perm):
            ctx.define(out, ctx.operand(x, True))
        else:
            ctx.produce(out, "Transpose", [ctx.operand(x, True)], perm=perm)
    else:
        ctx.produce(out, "Transpose", [ctx.operand(x)], perm=perm)


def convert_dequantize(ctx: Context, op) -> None:
    """A dequantized constant stays a constant (folded, or int8 + DequantizeLinear where used);
    a quantized activation already has its float view, which becomes the output."""
    inputs, out = _io(op)
    x = inputs[0]
    if ctx.is_constant(x):
        ctx.aliases[out] = ctx.aliases.get(x, x)
        return
    nchw = ctx.prefers_nchw([x])
    ctx.define(out, ctx.operand(x, nchw), nchw)


def convert_quantize(ctx: Context, op) -> None:
    """float -> int8, or a requantization: the input's float view, quantized as the output says."""
    inputs, out = _io(op)
    nchw = ctx.prefers_nchw(inputs[:1])
    ctx.define(out, ctx.operand(inputs[0], nchw), nchw)


def _resize(mode: str):
    def convert(ctx: Context, op) -> None:
        inputs, out = _io(op)
        x = inputs[0]
        o = op.builtinOptions
        n, _, _, c = ctx.shape(x)
        height, width = (int(v) for v in ctx.array(inputs[1]).ravel())
        if o.alignCorners:
            coordinates = "align_corners"
        elif o.halfPixelCenters:
            coordinates = "half_pixel"
        else:
            coordinates = "asymmetric"
        attrs = {"mode": mode, "coordinate_transformation_mode": coordinates}
        if mode == "nearest":  # TFLite floors, or rounds half up with aligned or half-pixel centers
            attrs["nearest_mode"] = "floor" if coordinates == "asymmetric" else "round_prefer_ceil"
        sizes = _ints(ctx, [n, c, height, width], f"{ctx.names[out]}_sizes")
        ctx.produce(out, "Resize", [ctx.operand(x, True), "", "", sizes], True, **attrs)

    return convert


def _block_op(onnx_op: str, **fixed):
    def convert(ctx: Context, op) -> None:
        inputs, out = _io(op)
        blocksize = int(op.builtinOptions.blockSize)
        ctx.produce(out, onnx_op, [ctx.operand(inputs[0], True)], True, blocksize=blocksize, **fixed)

    return convert


def convert_slice(ctx: Context, op) -> None:
    inputs, out = _io(op)
    shape = ctx.shape(inputs[0])
    begin = [int(b) for b in ctx.array(inputs[1]).ravel()]
    size = [int(s) for s in ctx.array(inputs[2]).ravel()]
    ends = [b + s if s >= 0 else shape[k] for k, (b, s) in enumerate(zip(begin, size))]
    operands = [ctx.operand(inputs[0]), _ints(ctx, begin, "starts"), _ints(ctx, ends, "ends")]
    ctx.produce(out, "Slice", operands + [_ints(ctx, range(len(begin)), "axes")])


def convert_strided_slice(ctx: Context, op) -> None:
    inputs, out = _io(op)
    o = op.builtinOptions
    if o.ellipsisMask or o.newAxisMask or o.offset:
        ctx.fail(f"STRIDED_SLICE '{ctx.names[out]}': ellipsis, new-axis and offset forms are not supported")
    shape = ctx.shape(inputs[0])
    begin, end, steps = ([int(v) for v in ctx.array(i).ravel()] for i in inputs[1:4])
    for k, step in enumerate(steps):
        if o.beginMask >> k & 1:
            begin[k] = 0 if step > 0 else INT64_MAX  # ONNX clamps to the first/last element
        if o.endMask >> k & 1:
            end[k] = INT64_MAX if step > 0 else INT64_MIN
        if o.shrinkAxisMask >> k & 1:
            begin[k] = begin[k] % shape[k]
            end[k], steps[k] = begin[k] + 1, 1
    operands = [ctx.operand(inputs[0]), _ints(ctx, begin, "starts"), _ints(ctx, end, "ends")]
    operands += [_ints(ctx, range(len(begin)), "axes"), _ints(ctx, steps, "steps")]
    if not o.shrinkAxisMask:
        ctx.produce(out, "Slice", operands)
        return
    sliced = ctx.emit("Slice", operands, f"{ctx.names[out]}_sliced")
    ctx.produce(out, "Reshape", [sliced, _ints(ctx, ctx.shape(out), f"{ctx.names[out]}_shape")])


def convert_densify(ctx: Context, op) -> None:
    """A sparse constant made dense at import: its consumers see an ordinary constant."""
    inputs, out = _io(op)
    sparsity = ctx.tensor(inputs[0]).sparsity
    if sparsity is None or not ctx.is_constant(inputs[0]):
        ctx.fail(f"DENSIFY '{ctx.names[out]}' reads no sparse constant")
    ctx.folded[out] = densify(ctx.stored(inputs[0]), sparsity, ctx.shape(out))


def convert_cast(ctx: Context, op) -> None:
    inputs, out = _io(op)
    to = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int32): TensorProto.INT32}.get(ctx.dtype(out))
    if to is None or ctx.quant(inputs[0]) is not None:
        ctx.fail(f"CAST '{ctx.names[out]}' to {ctx.dtype(out)} is not supported")
    ctx.produce(out, "Cast", [ctx.operand(inputs[0])], to=to)


def convert_square(ctx: Context, op) -> None:
    inputs, out = _io(op)
    nchw = ctx.prefers_nchw(inputs[:1])
    x = ctx.operand(inputs[0], nchw)
    ctx.produce(out, "Mul", [x, x], nchw)


COMPARISONS = {"EQUAL": "Equal", "LESS": "Less", "LESS_EQUAL": "LessOrEqual", "GREATER": "Greater",
               "GREATER_EQUAL": "GreaterOrEqual"}  # fmt: skip


def convert_comparison(ctx: Context, op) -> None:
    """EQUAL, NOT_EQUAL, LESS... on the operands' real values (a bool result has no quantization)."""
    inputs, out = _io(op)
    nchw = ctx.prefers_nchw(inputs) and len(ctx.shape(out)) == 4
    operands = [ctx.operand(i, nchw) for i in inputs]
    name = _name(ctx, op)
    if name == "NOT_EQUAL":
        ctx.produce(out, "Not", [ctx.emit("Equal", operands, f"{ctx.names[out]}_eq")], nchw)
    else:
        ctx.produce(out, COMPARISONS[name], operands, nchw)


def _name(ctx: Context, op) -> str:
    from edgec.frontends.tflite import op_name

    return op_name(ctx.model, op)


def convert_select(ctx: Context, op) -> None:
    """SELECT_V2 broadcasts all three operands (NumPy rules), as ONNX Where does. SELECT (v1)
    also takes a rank-1 condition choosing whole rows of higher-rank operands."""
    inputs, out = _io(op)
    cond, x, y = inputs[:3]
    nchw = ctx.prefers_nchw([cond, x, y]) and len(ctx.shape(out)) == 4
    condition = ctx.operand(cond, nchw)
    rank = len(ctx.shape(out))
    if _name(ctx, op) == "SELECT" and len(ctx.shape(cond)) == 1 and rank > 1:
        shape = [ctx.shape(cond)[0]] + [1] * (rank - 1)
        condition = ctx.emit("Reshape", [condition, _ints(ctx, shape, "rows")], f"{ctx.names[out]}_rows")
    ctx.produce(out, "Where", [condition, ctx.operand(x, nchw), ctx.operand(y, nchw)], nchw)


def convert_shape(ctx: Context, op) -> None:
    """Shapes are static in an import: SHAPE is the constant it would compute."""
    inputs, out = _io(op)
    ctx.folded[out] = np.asarray(ctx.shape(inputs[0]), ctx.dtype(out))


def convert_pack(ctx: Context, op) -> None:
    """PACK stacks N tensors of one shape along a new axis: Unsqueeze each, then Concat."""
    inputs, out = _io(op)
    rank = len(ctx.shape(out))
    axis = int(op.builtinOptions.axis) % rank if op.builtinOptions is not None else 0
    if all(ctx.is_constant(i) for i in inputs):
        values = [ctx.real(i) if ctx.dtype(i).kind == "f" else ctx.array(i) for i in inputs]
        if ctx.quant(out) is None:
            ctx.folded[out] = np.stack(values, axis).astype(ctx.dtype(out))
            return
    axes = _ints(ctx, [axis], "pack_axis")
    parts = [ctx.emit("Unsqueeze", [ctx.operand(i), axes], f"{ctx.names[out]}_part") for i in inputs]
    ctx.produce(out, "Concat", parts, axis=axis)


def convert_split(ctx: Context, op) -> None:
    """SPLIT (axis, x) and SPLIT_V (x, sizes with at most one -1, axis) as one ONNX Split."""
    inputs, outs = [int(i) for i in op.inputs], [int(o) for o in op.outputs]
    if _name(ctx, op) == "SPLIT":
        axis_index, x = inputs[0], inputs[1]
        sizes = None
    else:
        x, axis_index = inputs[0], inputs[2]
        sizes = [int(s) for s in ctx.array(inputs[1]).ravel()]
    shape = ctx.shape(x)
    axis = int(ctx.array(axis_index).ravel()[0]) % len(shape)
    if sizes is None:
        if shape[axis] % len(outs):
            ctx.fail(f"SPLIT '{ctx.names[outs[0]]}': {shape[axis]} does not split into {len(outs)} parts")
        sizes = [shape[axis] // len(outs)] * len(outs)
    if sizes.count(-1) > 1 or len(sizes) != len(outs):
        ctx.fail(f"SPLIT_V '{ctx.names[outs[0]]}': sizes {sizes} do not describe {len(outs)} outputs")
    if -1 in sizes:
        sizes[sizes.index(-1)] = shape[axis] - sum(s for s in sizes if s >= 0)
    if sum(sizes) != shape[axis] or min(sizes) < 0:
        ctx.fail(f"SPLIT_V '{ctx.names[outs[0]]}': sizes {sizes} do not add up to {shape[axis]}")
    nchw = ctx.prefers_nchw([x])
    onnx_axis = NHWC_TO_NCHW.index(axis) if nchw else axis
    results = [ctx.fresh(f"{ctx.names[o]}_split") for o in outs]
    from onnx import helper

    ctx.nodes.append(
        helper.make_node("Split", [ctx.operand(x, nchw), _ints(ctx, sizes, "split")], results, axis=onnx_axis)
    )
    for out, result in zip(outs, results):
        ctx.define(out, result, nchw)


def convert_batch_matmul(ctx: Context, op) -> None:
    """BATCH_MATMUL(x, y) with adj_x/adj_y (transpose the last two axes first): ONNX MatMul."""
    inputs, out = _io(op)
    o = op.builtinOptions
    operands = []
    for index, adjoint in zip(inputs[:2], (getattr(o, "adjX", False), getattr(o, "adjY", False))):
        value = ctx.operand(index)
        if adjoint:
            rank = len(ctx.shape(index))
            perm = list(range(rank - 2)) + [rank - 1, rank - 2]
            value = ctx.emit("Transpose", [value], f"{ctx.names[index]}_adj", perm=perm)
        operands.append(value)
    ctx.produce(out, "MatMul", operands)


def convert_if(ctx: Context, op) -> None:
    """IF(cond, operands...) runs one of two subgraphs: an ONNX If whose branches read the operands
    from the enclosing graph (each branch subgraph is converted like the main one)."""
    from onnx import helper

    inputs, outs = [int(i) for i in op.inputs], [int(o) for o in op.outputs]
    o = op.builtinOptions
    if o is None:
        ctx.fail(f"IF '{ctx.names[outs[0]] if outs else '?'}' has no branch subgraphs")
    condition = ctx.emit(
        "Reshape", [ctx.operand(inputs[0]), _ints(ctx, [1], "if_cond_shape")], f"{ctx.names[inputs[0]]}_1"
    )
    branches = {}
    for attribute, index in (("then_branch", int(o.thenSubgraphIndex)), ("else_branch", int(o.elseSubgraphIndex))):
        branches[attribute] = _branch(ctx, index, inputs[1:], outs)
    results = [ctx.fresh(f"{ctx.names[out]}_if") for out in outs]
    ctx.nodes.append(helper.make_node("If", [condition], results, **branches))
    for out, result in zip(outs, results):
        ctx.define(out, result)


def _branch(ctx: Context, index: int, operands: list[int], outs: list[int]):
    """Subgraph `index` as an ONNX graph without inputs: its inputs are the enclosing values of
    `operands`; its outputs are float (quantized results get their Q/DQ in the enclosing graph)."""
    from onnx import helper

    from edgec.frontends.tflite import op_name

    if not 0 < index < len(ctx.model.subgraphs):
        ctx.fail(f"IF names subgraph {index}, which the model does not have")
    branch = Context(ctx.model, ctx.data, ctx.source, subgraph=index, parent=ctx)
    graph = branch.graph
    inputs = [] if graph.inputs is None else [int(i) for i in graph.inputs]
    outputs = [] if graph.outputs is None else [int(i) for i in graph.outputs]
    if len(inputs) != len(operands) or len(outputs) != len(outs):
        ctx.fail(
            f"IF subgraph {index} takes {len(inputs)} inputs and gives {len(outputs)} outputs; the IF "
            f"passes {len(operands)} and expects {len(outs)}"
        )
    branch.check_quantization()
    for inner, outer in zip(inputs, operands):
        branch.views[(inner, False)] = ctx.operand(outer)
    for inner_op in graph.operators or []:
        name = op_name(ctx.model, inner_op)
        if name not in CONVERTERS or name in ("CALL_ONCE", "VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE"):
            ctx.fail(f"IF subgraph {index}: {name} has no ONNX conversion inside a branch")
        CONVERTERS[name](branch, inner_op)
    results = []
    for inner, out in zip(outputs, outs):
        value = branch.fresh(f"{branch.names[inner]}_out")
        branch.emit("Identity", [branch.operand(inner)], "", value)
        dtype = np.dtype(np.float32) if ctx.quant(out) is not None else ctx.dtype(out)
        results.append(
            helper.make_tensor_value_info(value, helper.np_dtype_to_tensor_dtype(dtype), list(ctx.shape(out)))
        )
    label = graph.name.decode(errors="replace") if graph.name else f"subgraph{index}"
    return helper.make_graph(branch.nodes, label, [], results, branch.initializers)


def convert_call_once(ctx: Context, op) -> None:
    ctx.state.call_once(op)


def convert_var_handle(ctx: Context, op) -> None:
    ctx.state.var_handle(op)


def convert_read_variable(ctx: Context, op) -> None:
    ctx.state.read(op)


def convert_assign_variable(ctx: Context, op) -> None:
    ctx.state.assign(op)


CONVERTERS = {
    "CONV_2D": _convolution((0, 3, 1, 2), depthwise=False),  # OHWI -> OIHW
    "DEPTHWISE_CONV_2D": _convolution((3, 0, 1, 2), depthwise=True),  # 1HW(C*M) -> (C*M)1HW
    "FULLY_CONNECTED": convert_fully_connected,
    "MAX_POOL_2D": _pool("MaxPool"),
    "AVERAGE_POOL_2D": _pool("AveragePool"),
    "ADD": _binary("Add"),
    "SUB": _binary("Sub"),
    "MUL": _binary("Mul"),
    "DIV": _binary("Div"),
    "MAXIMUM": _binary("Max"),
    "MINIMUM": _binary("Min"),
    "PRELU": _binary("PRelu"),
    "SQUARED_DIFFERENCE": convert_squared_difference,
    "RELU": _unary("Relu"),
    "RELU6": _unary("Clip", (0.0, 6.0)),
    "RELU_N1_TO_1": _unary("Clip", (-1.0, 1.0)),
    "RELU_0_TO_1": _unary("Clip", (0.0, 1.0)),
    "LOGISTIC": _unary("Sigmoid"),
    "TANH": _unary("Tanh"),
    "HARD_SWISH": _unary("HardSwish"),
    "LEAKY_RELU": _unary("LeakyRelu", alpha=lambda o: float(o.alpha)),
    "ELU": _unary("Elu"),
    "EXP": _unary("Exp"),
    "LOG": _unary("Log"),
    "ABS": _unary("Abs"),
    "NEG": _unary("Neg"),
    "SQRT": _unary("Sqrt"),
    "RSQRT": convert_rsqrt,
    "SOFTMAX": convert_softmax,
    "MEAN": _reduce("ReduceMean"),
    "SUM": _reduce("ReduceSum"),
    "REDUCE_MAX": _reduce("ReduceMax"),
    "REDUCE_MIN": _reduce("ReduceMin"),
    "PAD": convert_pad,
    "PADV2": convert_pad,
    "MIRROR_PAD": convert_pad,
    "RESHAPE": convert_reshape,
    "SQUEEZE": convert_reshape,
    "EXPAND_DIMS": convert_reshape,
    "CONCATENATION": convert_concatenation,
    "TRANSPOSE": convert_transpose,
    "DEQUANTIZE": convert_dequantize,
    "QUANTIZE": convert_quantize,
    "RESIZE_BILINEAR": _resize("linear"),
    "RESIZE_NEAREST_NEIGHBOR": _resize("nearest"),
    "DEPTH_TO_SPACE": _block_op("DepthToSpace", mode="DCR"),  # TF's channel order is DCR
    "SPACE_TO_DEPTH": _block_op("SpaceToDepth"),
    "SLICE": convert_slice,
    "STRIDED_SLICE": convert_strided_slice,
    "CAST": convert_cast,
    "DENSIFY": convert_densify,
    "SQUARE": convert_square,
    "EQUAL": convert_comparison,
    "NOT_EQUAL": convert_comparison,
    "LESS": convert_comparison,
    "LESS_EQUAL": convert_comparison,
    "GREATER": convert_comparison,
    "GREATER_EQUAL": convert_comparison,
    "ROUND": _unary("Round"),
    "SELECT": convert_select,
    "SELECT_V2": convert_select,
    "SHAPE": convert_shape,
    "PACK": convert_pack,
    "SPLIT": convert_split,
    "SPLIT_V": convert_split,
    "BATCH_MATMUL": convert_batch_matmul,
    "TRANSPOSE_CONV": convert_transpose_conv,
    "CUSTOM:Convolution2DTransposeBias": convert_transpose_conv_bias,
    "IF": convert_if,
    "CALL_ONCE": convert_call_once,
    "VAR_HANDLE": convert_var_handle,
    "READ_VARIABLE": convert_read_variable,
    "ASSIGN_VARIABLE": convert_assign_variable,
}
