"""Helpers shared by the op lowerings."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

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
