"""Weight sharing with recovery, fitted to the model: share at the requested bit widths, fine-tune
the centroids, and widen the codebooks a bit at a time until the result meets the fidelity budget."""

from __future__ import annotations

import onnx_graphsurgeon as gs

from edgec.compress import FIDELITY, fitting, storage
from edgec.pass_infra import Numerics, PassContext, PassResult, option
from edgec.passes.finetune.finetune import FinetunePass
from edgec.passes.share.weight_share import WeightSharePass


class ShareFinetunePass(FinetunePass):
    name = "share-finetune"
    summary = (
        "k-means weight sharing then centroid fine-tuning; codebooks widen a bit at a time (up to max_bits) "
        "until the result meets the fidelity budget."
    )
    numerics = Numerics.LOSSY
    tolerance = FIDELITY
    recovers = False
    epochs: int = option(3, min=1)
    bits: int = option(4, min=1, max=16)  # fully connected layers' codebook: 2^bits entries...
    conv_bits: int = option(6, min=1, max=16)  # ...and convolutions'
    max_bits: int = option(8, min=1, max=16)  # widest codebook tried before leaving the weights unshared
    skip: tuple[str, ...] = ()
    min_elements: int = option(64, min=0)

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        probe = fitting.FidelityProbe(ctx, self.check_tolerance(), self.name)
        tried, widen = [], 0
        while True:
            bits = min(self.bits + widen, self.max_bits)
            conv_bits = min(self.conv_bits + widen, self.max_bits)
            candidate = graph.copy()
            share = WeightSharePass(bits=bits, conv_bits=conv_bits, skip=self.skip, min_elements=self.min_elements)
            shared = share.run(candidate, ctx)
            if not shared.modified:
                return PassResult(False, {"tried": tried})
            self.train(candidate, ctx, self.epochs)
            check = probe.check(candidate)
            tried.append({"bits": bits, "conv_bits": conv_bits, **fitting.summary(check)})
            if check:
                fitting.adopt(graph, candidate)
                return PassResult(True, {
                    "tried": tried, "bits": bits, "conv_bits": conv_bits, "layers": shared.stats["layers"],
                    "shared_layers": shared.stats["shared_layers"], "storage": storage.measure(graph, "fixed"),
                })
            if bits >= self.max_bits and conv_bits >= self.max_bits:
                ctx.warn(f"{self.name}: no codebook up to {self.max_bits} bits meets the budget after fine-tuning "
                         f"({tried[-1]['failed']}); the weights stay unshared")
                return PassResult(False, {"tried": tried})
            widen += 1
