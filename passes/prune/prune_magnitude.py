"""Unstructured magnitude pruning: the smallest weights become exactly zero (Deep Compression, step 1)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import onnx_graphsurgeon as gs

from edgec import ir
from edgec.compress import FIDELITY, storage
from edgec.compress.layers import Layer, select, weighted_layers
from edgec.errors import EdgecError
from edgec.pass_infra import Numerics, Pass, PassContext, PassResult, option
from edgec.quant import evaluation


class PruneMagnitudePass(Pass):
    name = "prune-magnitude"
    summary = "Zero the smallest-magnitude weights of Conv/Gemm/MatMul layers, per layer or with one global threshold."
    numerics = Numerics.LOSSY
    tolerance = FIDELITY
    sparsity: float = option(0.5, min=0, below=1)  # share of each layer's weights (scope=layer) or of all of them (global)
    # global: one magnitude threshold over all layers, so layers with many small weights (large
    # fully connected ones) lose more than small, sensitive ones.
    scope: Literal["layer", "global"] = "layer"
    skip: tuple[str, ...] = ()  # layers (node or weight names) left dense
    first: float | None = option(None, min=0, below=1)  # sparsity of the model's first layer (default: like the rest)
    last: float | None = option(None, min=0, below=1)  # ... and of its last layer
    min_elements: int = option(64, min=0)  # smaller weights stay dense: nothing to gain
    # Without retraining, how far pruning can go depends on the model: when set, `sparsity` is
    # an upper bound and the pass bisects for the largest sparsity whose top-1 agreement with the
    # unpruned model, on the check samples, stays at least this.
    min_agreement: float | None = option(None, min=0, max=1)

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        for option in ("sparsity", "first", "last"):
            value = getattr(self, option)
            if value is not None and not 0.0 <= value < 1.0:
                raise EdgecError(f"{option}={value}: a sparsity must be in [0, 1)")
        every = weighted_layers(graph, self.min_elements)
        layers = select(every, self.skip)
        if not layers:
            return PassResult(False, {"layers": {}})
        before = sum(int(np.count_nonzero(layer.weight.values)) for layer in layers)
        stats = {}
        sparsity = self.sparsity
        if self.min_agreement is not None:
            sparsity, stats["search"] = self._search(graph, ctx, every, layers)
        self._prune(every, layers, sparsity)
        stats |= {
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
        if self.min_agreement is not None:
            stats["chosen_sparsity"] = sparsity
        # What the pruned weights take stored sparse (fixed-width positions, float values).
        stats["storage"] = storage.measure(graph, "fixed")
        return PassResult(nonzeros != before, stats)

    def _prune(self, every: list[Layer], layers: list[Layer], sparsity: float) -> None:
        chosen = {id(layer) for layer in layers}
        fixed = {}  # id(layer) -> its own sparsity
        for ends, own in ((every[:1], self.first), (every[-1:], self.last)):
            if own is not None and id(ends[0]) in chosen:
                fixed[id(ends[0])] = own
        for layer in layers:
            if id(layer) in fixed:
                _prune_jointly([layer], fixed[id(layer)])
        free = [layer for layer in layers if id(layer) not in fixed]
        if self.scope == "global":
            _prune_jointly(free, sparsity)
        else:
            for layer in free:
                _prune_jointly([layer], sparsity)

    def _search(self, graph: gs.Graph, ctx: PassContext, every, layers) -> tuple[float, list]:
        """Bisect [0, sparsity] for the largest sparsity that keeps top-1 agreement >= min_agreement
        (agreement falls as sparsity grows, up to noise), to 1/2^SEARCH_STEPS of the range."""
        if not 0.0 < self.min_agreement <= 1.0:
            raise EdgecError(f"min_agreement={self.min_agreement}: must be in (0, 1]")
        if not ctx.samples:
            raise EdgecError("min_agreement needs check samples (--inputs, --eval, --train or --calib data)")
        originals = [layer.weight.values for layer in layers]
        reference = _top1(graph, ctx.samples)
        tried = []

        def agreement(sparsity: float) -> float:
            self._prune(every, layers, sparsity)
            value = float(np.mean(_top1(graph, ctx.samples) == reference))
            for layer, values in zip(layers, originals):
                layer.weight.values = values
            tried.append({"sparsity": round(sparsity, 4), "top1_agreement": round(value, 4)})
            return value

        if agreement(self.sparsity) >= self.min_agreement:
            return self.sparsity, tried
        low, high = 0.0, self.sparsity
        for _ in range(SEARCH_STEPS):
            middle = (low + high) / 2
            low, high = (middle, high) if agreement(middle) >= self.min_agreement else (low, middle)
        return round(low, 4), tried


SEARCH_STEPS = 6


def _top1(graph: gs.Graph, samples: list[dict]) -> np.ndarray:
    """The class each sample's first output picks, as onnxruntime computes it."""
    data = evaluation.EvalSet(samples, None, "check samples")
    return evaluation.top1(evaluation.predict(ir.Model(graph), data, optimize=True))


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
