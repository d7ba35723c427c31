"""Huffman coding (Deep Compression, step 3): weights and sparse positions entropy-coded into model.ecw."""

from __future__ import annotations

from typing import Literal

import onnx_graphsurgeon as gs

from edgec.compress import container, storage
from edgec.errors import PassError
from edgec.pass_infra import Numerics, Pass, PassContext, PassResult, option


class HuffmanPass(Pass):
    name = "huffman"
    summary = "Entropy-code weights and sparse positions into the compressed weight container (decoded at load)."
    numerics = Numerics.LOSSLESS
    # huffman: canonical Huffman codes; fixed: fixed-width codes (the pruned/shared stages' storage).
    coding: Literal["huffman", "fixed"] = "huffman"
    min_elements: int = option(storage.MIN_ELEMENTS, min=0)

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        tensors = storage.container_tensors(graph, self.min_elements)
        if not tensors:
            return PassResult(False, {"tensors": 0})
        data, summary = container.pack({name: c.values for name, c in tensors.items()}, self.coding)
        # The model from here on holds what a device will decode, so the lossless check after this
        # pass proves the codec on this very model.
        decoded = container.unpack(data, "the encoded weights")
        for name, constant in tensors.items():
            if decoded[name].tobytes() != constant.values.tobytes():
                raise PassError(f"'{name}' does not decode to its own bits")
            constant.values = decoded[name]
        ctx.metadata[storage.METADATA_KEY] = storage.describe(self.coding, self.min_elements, list(tensors))
        measured = storage.summarize(graph, tensors, len(data), summary, self.coding)
        return PassResult(
            True,
            {
                "coding": self.coding,
                "tensors": len(tensors),
                "container_bytes": len(data),
                "ratio": round(measured["dense_bytes"] / max(len(data), 1), 2),
                "storage": measured,
            },
        )
