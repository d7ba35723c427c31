"""QuantizeLinear/DequantizeLinear left after folding -> QUANTIZE/DEQUANTIZE; Cast -> CAST or nothing."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
from ai_edge_litert import schema_py_generated as schema

from edgec.backends.tflite.flatbuffer import TENSOR_TYPES
from edgec.backends.tflite.ops.common import refuse


def _convert(builtin):
    """Layout-preserving conversions; the int8 side's parameters come from ctx.quant."""

    def lower(ctx, node) -> None:
        scale = node.inputs[1]
        if not isinstance(node.inputs[0], gs.Constant) and np.size(getattr(scale, "values", 1)) > 1:
            refuse(node, "per-axis quantization of an activation: TFLite quantizes activations per tensor")
        x = ctx.get(node.inputs[0])
        out = ctx.new(node.outputs[0], nhwc=x.nhwc)
        ctx.builder.operator(builtin, [x.index], [out.index])

    return lower


def lower_cast(ctx, node) -> None:
    """Between float types the cast is only where the IR switched precision: TFLite's float16
    format computes in float32 throughout, so the output is the input."""
    source, target = node.inputs[0], node.outputs[0]
    floats = [np.issubdtype(np.dtype(t.dtype), np.floating) for t in (source, target)]
    x = ctx.get(source)
    if all(floats):
        ctx.values[target.name] = x
        return
    unknown = [np.dtype(t.dtype) for t in (source, target) if np.dtype(t.dtype) not in TENSOR_TYPES]
    if unknown:
        refuse(node, f"TFLite has no tensor type for {unknown[0]}")
    out = ctx.new(target, nhwc=x.nhwc)
    ctx.builder.operator(
        schema.BuiltinOperator.CAST, [x.index], [out.index], schema.CastOptionsT(), schema.BuiltinOptions.CastOptions
    )


LOWERINGS = {
    "QuantizeLinear": _convert(schema.BuiltinOperator.QUANTIZE),
    "DequantizeLinear": _convert(schema.BuiltinOperator.DEQUANTIZE),
    "Cast": lower_cast,
}
