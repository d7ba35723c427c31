"""Recovery fine-tuning (Deep Compression retrains after pruning and after sharing), with distillation."""

from __future__ import annotations

import importlib.util
from typing import Literal

import onnx_graphsurgeon as gs

from edgec.compress import FIDELITY
from edgec.errors import EdgecError
from edgec.pass_infra import Numerics, Pass, PassContext, PassResult, option


class FinetunePass(Pass):
    name = "finetune"
    summary = (
        "Train on --train data, distilling from the uncompressed model; pruning masks and shared indices stay fixed."
    )
    numerics = Numerics.LOSSY
    tolerance = FIDELITY
    requires_training = True
    recovers = True
    epochs: int = option(3, min=1)
    lr: float = option(1e-3, min=0)  # Adam
    batch_size: int = option(128, min=1)
    distill: bool = True  # learn from the uncompressed model's outputs (and the labels, if any)
    temperature: float = option(2.0, min=0.01)  # recovered more than 1 or 4 on both LeNets (bench/compress)
    alpha: float = option(0.5, min=0, max=1)  # weight of distillation against cross-entropy when labels exist
    max_samples: int = option(0, min=0)  # train on a seeded subset of this size (0: all of --train)
    seed: int = option(0, min=0)
    schedule: Literal["cosine", "constant"] = "cosine"  # learning rate over the run

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        return PassResult(True, self.train(graph, ctx, self.epochs))

    def train(self, graph: gs.Graph, ctx: PassContext, epochs: int) -> dict:
        """Fine-tune `graph` in place for `epochs` with this pass's settings; the training stats."""
        if importlib.util.find_spec("torch") is None:
            raise EdgecError(f"{self.name} needs PyTorch: pip install 'edgec[torch]'")
        if ctx.training is None:
            raise EdgecError(f"{self.name} needs training data: --train DATA")
        if epochs < 1 or self.lr <= 0 or self.batch_size < 1:
            raise EdgecError(f"{self.name}: epochs and batch_size must be >= 1 and lr > 0")
        from edgec.training import distill

        settings = distill.Settings(
            epochs,
            self.lr,
            self.batch_size,
            self.distill,
            self.temperature,
            self.alpha,
            self.seed,
            self.max_samples,
        )
        teacher = ctx.teacher.graph if ctx.teacher is not None else None
        return distill.finetune(graph, teacher, ctx.training, settings, ctx.progress)
