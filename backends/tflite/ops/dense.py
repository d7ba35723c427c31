"""Gemm and MatMul with a constant 2-D weight -> FULLY_CONNECTED (weights as (out, in); MatMul's
leading activation axes kept with keep_num_dims)."""

from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from edgec.backends.tflite.ops import matmul
from edgec.backends.tflite.ops.common import constant, present, refuse


def _fully_connected(ctx, node, x, weight: np.ndarray, bias: np.ndarray | None) -> None:
    """`weight` (out, in) and `bias` as stored (float32, float16, or int8 / int32 with the IR's
    quantization, per output channel on axis 0 after the transposes)."""
    if x.columns is not None:  # flattened from NHWC: the weights follow the stored order instead
        weight, source = weight[:, x.columns], x.index
    else:
        source = ctx.as_nchw(x)
    # The same IR weight read the same way is stored once (keyed by what the node made of it).
    layout = (node.op, int(node.attrs.get("transB", 0)), float(node.attrs.get("alpha", 1.0)),
              None if x.columns is None else x.columns.tobytes())
    inputs = [source, ctx.stored_once((node.inputs[1].name, *layout), f"{node.name}/weights", weight, node.inputs[1], axis=0)]
    inputs.append(ctx.stored(f"{node.name}/bias", bias, node.inputs[2], axis=0) if bias is not None else -1)
    out = ctx.new(node.outputs[0], nhwc=False)
    options = schema.FullyConnectedOptionsT()
    options.keepNumDims = len(x.shape) > 2  # (..., in) -> (..., out) as MatMul; else FC flattens to 2-D
    ctx.builder.operator(
        schema.BuiltinOperator.FULLY_CONNECTED,
        inputs,
        [out.index],
        options,
        schema.BuiltinOptions.FullyConnectedOptions,
    )


def lower_gemm(ctx, node) -> None:
    if not matmul.gemm_fits_fully_connected(ctx, node):
        matmul.lower_gemm(ctx, node)
        return
    weight = constant(node, 1)
    if not int(node.attrs.get("transB", 0)):
        weight = weight.T  # FULLY_CONNECTED wants (out, in)
    alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
    if (alpha, beta) != (1.0, 1.0):
        if not np.issubdtype(weight.dtype, np.floating):
            refuse(node, "alpha/beta other than 1 on int8 weights")
        weight = (weight * alpha).astype(weight.dtype)
    bias = None
    if present(node, 2):
        c = constant(node, 2)
        c = (c * beta).astype(c.dtype) if beta != 1.0 else c
        if c.size not in (1, weight.shape[0]) or (c.ndim == 2 and c.shape[0] != 1):
            refuse(node, f"bias of shape {c.shape} is not per output feature")
        bias = np.broadcast_to(c.reshape(-1), (weight.shape[0],))
    _fully_connected(ctx, node, ctx.get(node.inputs[0]), weight, bias)


def lower_matmul(ctx, node) -> None:
    if not matmul.fits_fully_connected(ctx, node):
        matmul.lower_batch_matmul(ctx, node)
        return
    weight = constant(node, 1)
    if weight.ndim != 2:
        refuse(node, "only a constant 2-D right operand is lowered")
    _fully_connected(ctx, node, ctx.get(node.inputs[0]), weight.T, None)


LOWERINGS = {"Gemm": lower_gemm, "MatMul": lower_matmul}
