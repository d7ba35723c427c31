"""Weight sharing (Deep Compression, step 2): each layer's weights become indices into a small codebook."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import onnx_graphsurgeon as gs

from edgec.compress import FIDELITY, kmeans, shared, storage
from edgec.compress.layers import select, weighted_layers
from edgec.errors import EdgecError
from edgec.pass_infra import Numerics, Pass, PassContext, PassResult, option


class WeightSharePass(Pass):
    name = "weight-share"
    summary = "k-means weight sharing per layer: uint8 indices + codebook + Gather; pruned zeros stay exactly zero."
    numerics = Numerics.LOSSY
    tolerance = FIDELITY
    bits: int = option(5, min=1, max=16)  # codebook of 2^bits entries for fully connected layers (Gemm/MatMul)...
    conv_bits: int = option(8, min=1, max=16)  # ...and for convolutions, which the paper finds more sensitive
    init: Literal["linear", "density", "random"] = "linear"
    iterations: int = option(100, min=1)
    skip: tuple[str, ...] = ()
    min_elements: int = option(64, min=0)

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        for option in ("bits", "conv_bits"):
            if not 1 <= getattr(self, option) <= 16:
                raise EdgecError(f"{option}={getattr(self, option)}: must be between 1 and 16")
        layers = select(weighted_layers(graph, self.min_elements), self.skip)
        stats = {}
        for layer in layers:
            bits = self.conv_bits if layer.is_conv else self.bits
            values = layer.weight.values
            indices, codebook = self.cluster(values, bits)
            shared.share(graph, layer.weight, indices, codebook)
            restored = codebook[indices]
            noise = float(np.sum((restored.astype(np.float64) - values) ** 2))
            signal = float(np.sum(values.astype(np.float64) ** 2))
            stats[layer.name] = {
                "bits": bits,
                "centroids": int(len(codebook)),
                "weight_sqnr_db": round(10 * math.log10(signal / noise), 2) if noise > 0 else None,
            }
        graph.toposort()  # the new Cast/Gather nodes were appended after their readers
        # What the shared weights take stored as fixed-width indices (sparse where pruned).
        measured = storage.measure(graph, "fixed")
        return PassResult(bool(layers), {"layers": stats, "shared_layers": len(layers), "storage": measured})

    def cluster(self, values: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
        """(indices, codebook); with pruned zeros, entry 0 is exactly 0.0 and only the nonzero
        weights are clustered, so pruning survives sharing."""
        flat = values.ravel()
        zero = flat == 0
        reserve = bool(zero.any())
        k = (1 << bits) - int(reserve)
        indices = np.zeros(flat.size, np.int64)
        centroids = np.zeros(0)
        if (~zero).any():
            centroids, labels = kmeans.kmeans(flat[~zero], k, self.init, self.iterations)
            indices[~zero] = labels + int(reserve)
        codebook = np.concatenate([[0.0] if reserve else [], centroids]).astype(values.dtype)
        return indices.reshape(values.shape), codebook
