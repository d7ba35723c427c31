"""Helpers shared by the op lowerings."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from edgec.backends.tflite.flatbuffer import Quantization
from edgec.errors import EdgecError


def constant(node: gs.Node, position: int) -> np.ndarray:
    tensor = node.inputs[position]
    if not isinstance(tensor, gs.Constant):
        raise EdgecError(f"tflite: {node.op} '{node.name}': input {position} must be a constant")
    return np.asarray(tensor.values)


def refuse(node: gs.Node, why: str):
    raise EdgecError(f"tflite: {node.op} '{node.name}': {why}")


def present(node: gs.Node, position: int) -> bool:
    return len(node.inputs) > position and not node.inputs[position].is_empty()


def bias(ctx, node, position: int, channels: int) -> int:
    """The bias operand of a conv: the node's (int32 in int8 models), or zeros; int8 kernels
    want an int32 bias even when the model has none, with scale s_in * s_w per channel."""
    if present(node, position):
        return ctx.stored(f"{node.name}/bias", constant(node, position), node.inputs[position], axis=0)
    weight = ctx.quant.get(node.inputs[1].name)
    if weight is None or weight.dequantize:  # a float layer (weight-only int8 weights are float to it)
        return ctx.builder.constant(ctx.name(f"{node.name}/bias"), np.zeros(channels, np.float32))
    scale = np.broadcast_to(ctx.quant[node.inputs[0].name].scale * weight.scale, (channels,))
    quantization = Quantization(scale.astype(np.float32), np.zeros(channels, np.int64), 0)
    return ctx.builder.constant(ctx.name(f"{node.name}/bias"), np.zeros(channels, np.int32), quantization)
