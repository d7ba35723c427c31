"""Gemm and MatMul with a constant 2-D weight -> FULLY_CONNECTED (weights as (out, in))."""

from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from edgec.backends.tflite.ops.common import constant, present, refuse


def _fully_connected(ctx, node, x, weight: np.ndarray, bias: np.ndarray | None) -> None:
    if len(x.shape) != 2:
        refuse(node, f"input of rank {len(x.shape)}: only 2-D inputs are lowered")
    inputs = [ctx.as_nchw(x), ctx.builder.constant(ctx.name(f"{node.name}/weights"), np.ascontiguousarray(weight))]
    inputs.append(ctx.builder.constant(ctx.name(f"{node.name}/bias"), bias) if bias is not None else -1)
    out = ctx.new(node.outputs[0], nhwc=False)
    ctx.builder.operator(
        schema.BuiltinOperator.FULLY_CONNECTED,
        inputs,
        [out.index],
        schema.FullyConnectedOptionsT(),
        schema.BuiltinOptions.FullyConnectedOptions,
    )


def lower_gemm(ctx, node) -> None:
    if int(node.attrs.get("transA", 0)):
        refuse(node, "transA=1 is not supported")
    weight = constant(node, 1).astype(np.float32)
    if not int(node.attrs.get("transB", 0)):
        weight = weight.T  # FULLY_CONNECTED wants (out, in)
    weight = weight * np.float32(node.attrs.get("alpha", 1.0))
    bias = None
    if present(node, 2):
        c = constant(node, 2).astype(np.float32) * np.float32(node.attrs.get("beta", 1.0))
        if c.size not in (1, weight.shape[0]) or (c.ndim == 2 and c.shape[0] != 1):
            refuse(node, f"bias of shape {c.shape} is not per output feature")
        bias = np.broadcast_to(c.reshape(-1), (weight.shape[0],)).astype(np.float32)
    _fully_connected(ctx, node, ctx.get(node.inputs[0]), weight, bias)


def lower_matmul(ctx, node) -> None:
    weight = constant(node, 1)
    if weight.ndim != 2:
        refuse(node, "only a constant 2-D right operand is lowered")
    _fully_connected(ctx, node, ctx.get(node.inputs[0]), weight.T.astype(np.float32), None)


LOWERINGS = {"Gemm": lower_gemm, "MatMul": lower_matmul}
