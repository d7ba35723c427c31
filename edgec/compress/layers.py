"""The layers compression works on: Conv, ConvTranspose, Gemm and MatMul with a float constant weight."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass
class Layer:
    node: gs.Node
    weight: gs.Constant

    @property
    def name(self) -> str:
        return self.node.name or self.weight.name

    @property
    def is_conv(self) -> bool:
        return self.node.op in ("Conv", "ConvTranspose")


def weighted_layers(graph: gs.Graph, min_elements: int = 1) -> list[Layer]:
    """In graph order; a weight read by several layers is listed once (with its first reader)."""
    layers, seen = [], set()
    for node in graph.nodes:
        if node.op not in WEIGHTED_OPS or len(node.inputs) < 2:
            continue
        weight = node.inputs[1]
        if not isinstance(weight, gs.Constant) or id(weight) in seen:
            continue
        if not np.issubdtype(weight.values.dtype, np.floating) or weight.values.size < min_elements:
            continue
        seen.add(id(weight))
        layers.append(Layer(node, weight))
    return layers


def select(layers: list[Layer], skip: tuple[str, ...]) -> list[Layer]:
    """Layers not named (by node or weight name) in `skip`."""
    return [layer for layer in layers if layer.node.name not in skip and layer.weight.name not in skip]
