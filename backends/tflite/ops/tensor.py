"""Data movement: Concat, Transpose, Squeeze/Unsqueeze, Pad, Slice, Split, Gather, Expand.

Ops with an axis work on the layout their input is stored in (the axis is remapped) where the
result keeps that layout; the others see the tensor in ONNX order."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
from ai_edge_litert import schema_py_generated as schema

from edgec.backends.tflite.lowering import NCHW_TO_NHWC, NHWC_TO_NCHW, stored_axis
from edgec.backends.tflite.ops.common import constant, present, refuse
from edgec.backends.tflite.ops.shape import lower_reshape


def _stored(ctx, tensor, nhwc: bool) -> int:
    """`tensor` in the wanted layout (constants are permuted rather than transposed at run time)."""
    if isinstance(tensor, gs.Constant):
        return ctx.constant_in_layout(tensor, nhwc)
    value = ctx.get(tensor)
    return ctx.as_nhwc(value) if nhwc else ctx.as_nchw(value)


def lower_concat(ctx, node) -> None:
    first = node.outputs[0]
    rank = len(first.shape)
    nhwc = rank == 4 and any(not isinstance(t, gs.Constant) and ctx.get(t).nhwc for t in node.inputs)
    options = schema.ConcatenationOptionsT()
    options.axis = stored_axis(int(node.attrs["axis"]), rank, nhwc)
    inputs = [_stored(ctx, t, nhwc) for t in node.inputs]
    out = ctx.new(first, nhwc=nhwc)
    ctx.builder.operator(
        schema.BuiltinOperator.CONCATENATION, inputs, [out.index], options, schema.BuiltinOptions.ConcatenationOptions
    )


def lower_transpose(ctx, node) -> None:
    x = ctx.get(node.inputs[0])
    rank = len(x.shape)
    perm = [int(p) for p in node.attrs.get("perm", list(reversed(range(rank))))]
    if x.nhwc:  # one TRANSPOSE from the stored NHWC straight to the result
        perm = [NHWC_TO_NCHW[p] for p in perm]
    stored = ctx.builder.subgraph.tensors[x.index].shape
    ctx.transpose(x.index, stored, perm, out=ctx.new(node.outputs[0], nhwc=False).index)


def _ints(node, position: int, attr: str, default=None):
    if present(node, position):
        return [int(v) for v in constant(node, position).ravel()]
    value = node.attrs.get(attr, default)
    return None if value is None else [int(v) for v in value]


def lower_pad(ctx, node) -> None:
    x = ctx.get(node.inputs[0])
    rank = len(x.shape)
    pads = _ints(node, 1, "pads")
    mode = node.attrs.get("mode", "constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if present(node, 3):
        refuse(node, "the axes input is not supported")
    value = float(constant(node, 2).ravel()[0]) if present(node, 2) else float(node.attrs.get("value", 0.0))
    begin, end = pads[:rank], pads[rank:]
    if min(pads) < 0:
        refuse(node, "negative pads (cropping) are not supported")
    order = NCHW_TO_NHWC if x.nhwc else range(rank)
    paddings = np.array([[begin[a], end[a]] for a in order], np.int32)
    out = ctx.new(node.outputs[0], nhwc=x.nhwc)
    if mode == "constant":
        ctx.pad(x.index, paddings, value, out.index)
    elif mode == "reflect":
        options = schema.MirrorPadOptionsT()
        options.mode = schema.MirrorPadMode.REFLECT
        ctx.builder.operator(
            schema.BuiltinOperator.MIRROR_PAD,
            [x.index, ctx.builder.constant(ctx.name("paddings"), paddings)],
            [out.index],
            options,
            schema.BuiltinOptions.MirrorPadOptions,
        )
    else:
        refuse(node, f"mode={mode} is not supported")


def lower_slice(ctx, node) -> None:
    x = ctx.get(node.inputs[0])
    rank = len(x.shape)
    starts, ends = _ints(node, 1, "starts"), _ints(node, 2, "ends")
    axes = _ints(node, 3, "axes", list(range(len(starts))))
    steps = _ints(node, 4, "steps", [1] * len(starts))
    begin, stop, stride = [0] * rank, list(x.shape), [1] * rank
    to_first = set()  # axes a negative step walks down to index 0
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        axis %= rank
        size = x.shape[axis]
        if step == 0:
            refuse(node, "a step of 0")
        if step > 0:
            start = min(max(start + size if start < 0 else start, 0), size)
            end = min(max(end + size if end < 0 else end, 0), size)
            begin[axis], stop[axis], stride[axis] = start, max(end, start), step
            continue
        start = min(max(start + size if start < 0 else start, 0), size - 1)
        end = min(max(end + size if end < 0 else end, -1), size - 1)
        begin[axis], stop[axis], stride[axis] = start, min(end, start), step
        if end < 0:  # STRIDED_SLICE reads an end of -1 as the last index: the end mask means "to the start"
            to_first.add(axis)
    order = NCHW_TO_NHWC if x.nhwc else range(rank)
    options = schema.StridedSliceOptionsT()
    options.endMask = sum(1 << i for i, axis in enumerate(order) if axis in to_first)
    arrays = [np.array([values[a] for a in order], np.int32) for values in (begin, stop, stride)]
    inputs = [x.index] + [ctx.builder.constant(ctx.name(n), a) for n, a in zip(("begin", "end", "strides"), arrays)]
    out = ctx.new(node.outputs[0], nhwc=x.nhwc)
    ctx.builder.operator(
        schema.BuiltinOperator.STRIDED_SLICE, inputs, [out.index], options, schema.BuiltinOptions.StridedSliceOptions
    )


def lower_split(ctx, node) -> None:
    x = ctx.get(node.inputs[0])
    rank = len(x.shape)
    axis = int(node.attrs.get("axis", 0)) % rank
    sizes = [int(t.shape[axis]) for t in node.outputs]
    options = schema.SplitVOptionsT()
    options.numSplits = len(sizes)
    outs = [ctx.new(t, nhwc=x.nhwc).index for t in node.outputs]
    inputs = [
        x.index,
        ctx.builder.constant(ctx.name("sizes"), np.array(sizes, np.int32)),
        ctx.builder.constant(ctx.name("axis"), np.array(stored_axis(axis, rank, x.nhwc), np.int32)),
    ]
    ctx.builder.operator(schema.BuiltinOperator.SPLIT_V, inputs, outs, options, schema.BuiltinOptions.SplitVOptions)


def lower_gather(ctx, node) -> None:
    x = ctx.get(node.inputs[0])
    indices = np.asarray(constant(node, 1), np.int64)
    axis = int(node.attrs.get("axis", 0)) % len(x.shape)
    indices = np.where(indices < 0, indices + x.shape[axis], indices).astype(np.int32)
    options = schema.GatherOptionsT()
    options.axis = axis
    out = ctx.new(node.outputs[0], nhwc=False)
    inputs = [ctx.as_nchw(x), ctx.builder.constant(ctx.name("indices"), indices)]
    ctx.builder.operator(
        schema.BuiltinOperator.GATHER, inputs, [out.index], options, schema.BuiltinOptions.GatherOptions
    )


def lower_expand(ctx, node) -> None:
    """Expand -> BROADCAST_TO at the output's inferred static shape (NumPy broadcasting, as ONNX;
    a shape operand smaller than the input's broadcasts against it, so the result shape decides)."""
    x = ctx.get(node.inputs[0])
    out = ctx.new(node.outputs[0], nhwc=False)
    if len(out.shape) > 8:
        refuse(node, f"rank {len(out.shape)}: BROADCAST_TO takes at most 8 dimensions")
    shape = ctx.builder.constant(ctx.name("shape"), np.asarray(out.shape, np.int32))
    # version 2: the first LiteRT registers (1 was the Flex delegate's)
    ctx.builder.operator(schema.BuiltinOperator.BROADCAST_TO, [ctx.as_nchw(x), shape], [out.index], version=2)


LOWERINGS = {
    "Concat": lower_concat,
    "Expand": lower_expand,
    "Transpose": lower_transpose,
    "Squeeze": lower_reshape,
    "Unsqueeze": lower_reshape,
    "Pad": lower_pad,
    "Slice": lower_slice,
    "Split": lower_split,
    "Gather": lower_gather,
}
