"""MatMul and Gemm that FULLY_CONNECTED cannot take -> BATCH_MATMUL (batch dims broadcast)."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
from ai_edge_litert import schema_py_generated as schema

from edgec.backends.tflite.ops.common import present, refuse
from edgec.backends.tflite.ops.emit import binary, reshape, scalar

MAX_RANK = 5  # TFLite's BATCH_MATMUL kernel takes operands of rank 2 to 5


def fits_fully_connected(ctx, node) -> bool:
    """An activation of rank >= 2 times a constant 2-D matrix: dense.py's FULLY_CONNECTED (with
    keep_num_dims above rank 2), the faster kernel and the only one taking per-channel int8 weights."""
    weight = node.inputs[1]
    return isinstance(weight, gs.Constant) and np.ndim(weight.values) == 2 and len(ctx.get(node.inputs[0]).shape) >= 2


def gemm_fits_fully_connected(ctx, node) -> bool:
    """Gemm without transA, with a constant B and a constant bias per output feature (or none)."""
    if int(node.attrs.get("transA", 0)) or not fits_fully_connected(ctx, node):
        return False
    if not present(node, 2):
        return True
    bias = node.inputs[2]
    if not isinstance(bias, gs.Constant):
        return False
    shape, units = np.shape(bias.values), int(node.outputs[0].shape[1])
    return int(np.prod(shape)) in (1, units) and not (len(shape) == 2 and shape[0] != 1)


def _operand(ctx, tensor) -> tuple[int, tuple[int, ...]]:
    """The operand in ONNX layout (BATCH_MATMUL multiplies the last two axes as ONNX orders them)."""
    value = ctx.get(tensor)
    return ctx.as_nchw(value), tuple(value.shape)


def _batch_matmul(ctx, a: int, b: int, out: int, adj_a: bool = False, adj_b: bool = False) -> int:
    options = schema.BatchMatMulOptionsT()
    options.adjX, options.adjY = adj_a, adj_b
    ctx.builder.operator(
        schema.BuiltinOperator.BATCH_MATMUL, [a, b], [out], options, schema.BuiltinOptions.BatchMatMulOptions
    )
    return out


def lower_batch_matmul(ctx, node) -> None:
    """NumPy matmul semantics: 1-D operands get a unit axis that the result drops again."""
    (a, a_shape), (b, b_shape) = (_operand(ctx, t) for t in node.inputs)
    for tensor in node.inputs:
        params = ctx.quant.get(tensor.name)
        if params is not None and params.axis is not None and not params.dequantize:
            refuse(node, f"'{tensor.name}' is int8 per channel: BATCH_MATMUL takes only per-tensor int8 operands")
    if max(len(a_shape), len(b_shape)) > MAX_RANK:
        refuse(node, f"operands of rank {max(len(a_shape), len(b_shape))}: BATCH_MATMUL takes at most {MAX_RANK}")
    if len(a_shape) == 1:
        a_shape = (1, *a_shape)
        a = reshape(ctx, a, a_shape)
    if len(b_shape) == 1:
        b_shape = (*b_shape, 1)
        b = reshape(ctx, b, b_shape)
    out = ctx.new(node.outputs[0], nhwc=False)
    product_shape = (*np.broadcast_shapes(a_shape[:-2], b_shape[:-2]), a_shape[-2], b_shape[-1])
    if product_shape == out.shape:
        _batch_matmul(ctx, a, b, out.index)
    else:
        reshape(ctx, _batch_matmul(ctx, a, b, ctx.temporary(product_shape)), out.shape, out=out.index)


def _gemm_bias(ctx, node, beta: float) -> int:
    tensor = node.inputs[2]
    if isinstance(tensor, gs.Constant):
        values = (np.asarray(tensor.values, np.float32) * np.float32(beta)).astype(np.float32)
        return ctx.builder.constant(ctx.name(f"{node.name}/bias"), values)
    index = ctx.as_nchw(ctx.get(tensor))
    return index if beta == 1.0 else binary(ctx, schema.BuiltinOperator.MUL, index, scalar(ctx, beta))


def lower_gemm(ctx, node) -> None:
    """alpha * A' B' + beta * C with the transposes as BATCH_MATMUL's adjoint flags."""
    (a, a_shape), (b, b_shape) = (_operand(ctx, t) for t in node.inputs[:2])
    if len(a_shape) != 2 or len(b_shape) != 2:
        refuse(node, "Gemm operands must be 2-D")
    alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
    with_bias = present(node, 2)
    out = ctx.new(node.outputs[0], nhwc=False)
    last = out.index if alpha == 1.0 and not with_bias else ctx.temporary(out.shape)
    adj = bool(int(node.attrs.get("transA", 0))), bool(int(node.attrs.get("transB", 0)))
    product = _batch_matmul(ctx, a, b, last, *adj)
    if alpha != 1.0:
        last = out.index if not with_bias else None
        product = binary(ctx, schema.BuiltinOperator.MUL, product, scalar(ctx, alpha), last)
    if with_bias:
        binary(ctx, schema.BuiltinOperator.ADD, product, _gemm_bias(ctx, node, beta), out.index)
