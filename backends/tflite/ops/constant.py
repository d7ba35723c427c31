"""Constant nodes become constants: their readers see a gs.Constant, as if the value were an initializer."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from edgec.backends.tflite.ops.common import refuse

_VALUE_ATTRS = {
    "value_float": np.float32,
    "value_floats": np.float32,
    "value_int": np.int64,
    "value_ints": np.int64,
}


def _value(node) -> np.ndarray:
    if isinstance(node.attrs.get("value"), gs.Constant):
        return np.asarray(node.attrs["value"].values)
    for attr, dtype in _VALUE_ATTRS.items():
        if attr in node.attrs:
            return np.asarray(node.attrs[attr], dtype)
    refuse(node, f"a value given as {', '.join(node.attrs) or 'nothing'} is not supported")


def lower_constant(ctx, node) -> None:
    """Readers are rewired to a gs.Constant (lower() works on a copy of the graph), so lowerings
    that take weights, shapes or axes as constants accept the value; a Constant that nothing reads
    is a graph output and gets its buffer."""
    output = node.outputs[0]
    value = gs.Constant(output.name, _value(node))
    readers = list(output.outputs)
    for reader in readers:
        for position, tensor in enumerate(reader.inputs):
            if tensor is output:
                reader.inputs[position] = value
    if not readers:
        ctx.get(value)


LOWERINGS = {"Constant": lower_constant}
