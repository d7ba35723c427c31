"""Which constants go into the compressed weight container, and what they cost there.

The container holds every top-level constant of at least `min_elements` elements; smaller ones
(biases, codebooks, shape constants) stay in the ONNX file, where they cost little. The huffman
pass records the container in the model's metadata under METADATA_KEY; the ONNX backend then
writes `model.ecw` beside a `model.onnx` without those tensors, and edgec.runtime joins them.
"""

from __future__ import annotations

import json

import numpy as np
import onnx_graphsurgeon as gs

from edgec.compress import container

METADATA_KEY = "edgec.weight_container"
FILE_NAME = "model.ecw"
MIN_ELEMENTS = 256


def container_tensors(graph: gs.Graph, min_elements: int = MIN_ELEMENTS) -> dict[str, gs.Constant]:
    found = {}
    for node in graph.nodes:
        for tensor in node.inputs:
            if isinstance(tensor, gs.Constant) and tensor.values.size >= min_elements:
                if np.issubdtype(tensor.values.dtype, np.number):
                    found[tensor.name] = tensor
    return found


def measure(graph: gs.Graph, coding: str, min_elements: int = MIN_ELEMENTS) -> dict:
    """Bytes of the weights if this graph were written now with `coding`: the container plus the
    constants left in the ONNX file. The container is really built, not estimated."""
    tensors = container_tensors(graph, min_elements)
    data, summary = container.pack({name: c.values for name, c in tensors.items()}, coding)
    return summarize(graph, tensors, len(data), summary, coding)


def summarize(graph: gs.Graph, tensors: dict[str, gs.Constant], container_bytes: int, summary, coding: str) -> dict:
    others = {
        id(t): t.values.nbytes
        for n in graph.nodes
        for t in n.inputs
        if isinstance(t, gs.Constant) and t.name not in tensors
    }
    return {
        "coding": coding,
        "container_bytes": container_bytes,
        "other_constant_bytes": int(sum(others.values())),
        "weight_bytes": container_bytes + int(sum(others.values())),
        "dense_bytes": int(sum(c.values.nbytes for c in tensors.values())),
        "elements": int(sum(c.values.size for c in tensors.values())),
        "nonzeros": int(sum(np.count_nonzero(c.values) for c in tensors.values())),
        "tensors": summary,
    }


def describe(coding: str, min_elements: int, names: list[str]) -> str:
    return json.dumps({"file": FILE_NAME, "coding": coding, "min_elements": min_elements, "tensors": sorted(names)})
