"""Unstructured magnitude pruning: the smallest weights become exactly zero (Deep Compression, step 1)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import onnx_graphsurgeon as gs

from edgec.compress import FIDELITY, storage
from edgec.compress.layers import Layer, select, weighted_layers
from edgec.errors import EdgecError
from edgec.pass_infra import Numerics, Pass, PassContext, PassResult


class PruneMagnitudePass(Pass):
    name = "prune-magnitude"
    summary = "Zero the smallest-magnitude weights of Conv/Gemm/MatMul layers, per layer or with one global threshold."
    numerics = Numerics.LOSSY
    tolerance = FIDELITY
    sparsity: float = 0.5  # share of each layer's weights (scope=layer) or of all of them (global)
    # global: one magnitude threshold over all layers, so layers with many small weights (large
    # fully connected ones) lose more than small, sensitive ones.
    scope: Literal["layer", "global"] = "layer"
    skip: tuple[str, ...] = ()  # layers (node or weight names) left dense
    first: float | None = None  # sparsity of the model's first layer (default: like the rest)
    last: float | None = None  # ... and of its last layer
    min_elements: int = 64  # smaller weights stay dense: nothing to gain

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        for option in ("sparsity", "first", "last"):
            value = getattr(self, option)
            if value is not None and not 0.0 <= value < 1.0:
                raise EdgecError(f"{option}={value}: a sparsity must be in [0, 1)")
        every = weighted_layers(graph, self.min_elements)
        layers = select(every, self.skip)
        if not layers:
            return PassResult(False, {"layers": {}})
        chosen = {id(layer) for layer in layers}
        fixed = {}  # id(layer) -> its own sparsity
        for ends, sparsity in ((every[:1], self.first), (every[-1:], self.last)):
            if sparsity is not None and id(ends[0]) in chosen:
                fixed[id(ends[0])] = sparsity
        free = [layer for layer in layers if id(layer) not in fixed]
        before = sum(int(np.count_nonzero(layer.weight.values)) for layer in layers)
        for layer in layers:
            if id(layer) in fixed:
                _prune_jointly([layer], fixed[id(layer)])
        if self.scope == "global":
            _prune_jointly(free, self.sparsity)
        else:
            for layer in free:
                _prune_jointly([layer], self.sparsity)
        stats = {
            "layers": {
                layer.name: {
                    "elements": int(layer.weight.values.size),
                    "sparsity": round(1 - np.count_nonzero(layer.weight.values) / layer.weight.values.size, 4),
                }
                for layer in layers
            }
        }
        total = sum(layer.weight.values.size for layer in layers)
        nonzeros = sum(int(np.count_nonzero(layer.weight.values)) for layer in layers)
        stats.update({"elements": int(total), "nonzeros": nonzeros, "sparsity": round(1 - nonzeros / total, 4)})
        # What the pruned weights take stored sparse (fixed-width positions, float values).
        stats["storage"] = storage.measure(graph, "fixed")
        return PassResult(nonzeros != before, stats)


def _prune_jointly(layers: list[Layer], sparsity: float) -> None:
    """Zero exactly floor(sparsity * n) of the layers' n weights, smallest magnitudes first
    (weights already zero count among them)."""
    if not layers:
        return
    values = [layer.weight.values for layer in layers]
    magnitudes = np.concatenate([np.abs(v).ravel() for v in values])
    count = int(sparsity * magnitudes.size)
    if count == 0:
        return
    chosen = np.zeros(magnitudes.size, bool)
    chosen[np.argpartition(magnitudes, count - 1, kind="introselect")[:count]] = True
    start = 0
    for layer, value in zip(layers, values):
        mask = chosen[start : start + value.size].reshape(value.shape)
        start += value.size
        pruned = np.where(mask, np.zeros((), value.dtype), value)
        layer.weight.values = pruned.astype(value.dtype)
