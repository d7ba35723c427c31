"""Weight sharing in the IR: a uint8 index tensor, a codebook, and Cast + Gather that decode them.

    indices (uint8 initializer) -> Cast(to=int32) -> Gather(codebook, ·) -> the layer's weight

onnxruntime runs this unchanged (it folds the two constant nodes into the float weight when the
session starts), the file stores one byte per weight, and the container can entropy-code the
indices. fold-constants keeps these nodes, as it keeps DequantizeLinear.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs


INDEX_TYPES = (np.uint8, np.uint16)


@dataclass
class SharedWeight:
    gather: gs.Node
    cast: gs.Node
    indices: gs.Constant
    codebook: gs.Constant

    @property
    def values(self) -> np.ndarray:
        return self.codebook.values[self.indices.values.astype(np.int64)]


def _shared_from_gather(node: gs.Node) -> SharedWeight | None:
    if node.op != "Gather" or len(node.inputs) != 2 or int(node.attrs.get("axis", 0)) != 0:
        return None
    codebook, decoded = node.inputs
    if not isinstance(codebook, gs.Constant) or codebook.values.ndim != 1:
        return None
    if not np.issubdtype(codebook.values.dtype, np.floating) or len(decoded.inputs) != 1:
        return None
    cast = decoded.inputs[0]
    if cast.op != "Cast" or not isinstance(cast.inputs[0], gs.Constant):
        return None
    indices = cast.inputs[0]
    if indices.values.dtype not in INDEX_TYPES:
        return None
    return SharedWeight(node, cast, indices, codebook)


def shared_weights(graph: gs.Graph) -> list[SharedWeight]:
    return [s for s in (_shared_from_gather(n) for n in graph.nodes) if s is not None]


def is_decode_node(node: gs.Node) -> bool:
    """The Cast or Gather of a shared weight: a storage format, never to be folded into floats."""
    if node.op == "Gather":
        return _shared_from_gather(node) is not None
    if node.op == "Cast" and node.inputs and isinstance(node.inputs[0], gs.Constant):
        if node.inputs[0].values.dtype in INDEX_TYPES:
            return bool(node.outputs[0].outputs) and all(
                _shared_from_gather(reader) is not None for reader in node.outputs[0].outputs
            )
    return False


def share(graph: gs.Graph, weight: gs.Constant, indices: np.ndarray, codebook: np.ndarray) -> SharedWeight:
    """Replace the constant `weight` by its shared form, for every node that reads it."""
    base = weight.name
    dtype = np.uint8 if len(codebook) <= 256 else np.uint16
    stored = gs.Constant(f"{base}_idx", np.ascontiguousarray(indices.astype(dtype)))
    book = gs.Constant(f"{base}_codebook", np.asarray(codebook, weight.values.dtype))
    as_int = gs.Variable(f"{base}_idx_i32", dtype=np.int32, shape=list(indices.shape))
    restored = gs.Variable(f"{base}_shared", dtype=weight.values.dtype, shape=list(indices.shape))
    cast = gs.Node("Cast", f"{base}_cast", {"to": onnx.TensorProto.INT32}, [stored], [as_int])
    gather = gs.Node("Gather", f"{base}_gather", {"axis": 0}, [book, as_int], [restored])
    for reader in list(weight.outputs):
        for i, tensor in enumerate(reader.inputs):
            if tensor is weight:
                reader.inputs[i] = restored
    graph.nodes.extend([cast, gather])
    return SharedWeight(gather, cast, stored, book)
