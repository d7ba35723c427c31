"""The float op lowerings refuse integer, float64 and other ONNX tensor types with a clear error."""

from __future__ import annotations

import functools

import numpy as np
import onnx_graphsurgeon as gs

from edgec.backends.tflite.ops.common import refuse


# Ops that only move elements: TFLite's kernels take bool and int32 tensors too (an If's condition).
MOVEMENT = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Expand"}


def _unsupported_dtype(ctx, node) -> str | None:
    quantized = getattr(ctx, "quant", {})
    allowed = (np.float32, np.float16) + ((np.bool_, np.int32) if node.op in MOVEMENT else ())
    for tensor in [*node.inputs, *node.outputs]:
        if isinstance(tensor, gs.Constant) or tensor.is_empty() or tensor.dtype is None:
            continue  # constants are converted (or checked) by the lowering that reads them
        try:
            dtype = np.dtype(tensor.dtype)
        except TypeError:  # bfloat16 and other ONNX types NumPy has no name for
            return f"'{tensor.name}' has ONNX type {tensor.dtype}"
        # float16 activations are computed in float32 (TFLite's float16 format halves only weights)
        if dtype not in allowed and tensor.name not in quantized:
            return f"'{tensor.name}' is {dtype}"
    return None


def float32_only(lower):
    """`lower` behind a check that every activation it reads or writes is float32, float16, or an
    int8 tensor the Q/DQ folding gave quantization parameters: integer and float64 tensors would
    otherwise reach float kernels that abort or compute wrong numbers in the interpreter."""

    @functools.wraps(lower)
    def checked(ctx, node) -> None:
        why = _unsupported_dtype(ctx, node)
        if why:
            refuse(node, f"{why}: only float32 (or float16) tensors are lowered")
        lower(ctx, node)

    return checked
