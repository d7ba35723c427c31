"""Recovery fine-tuning (Deep Compression retrains after pruning and after sharing), with distillation."""

from __future__ import annotations

import importlib.util
from typing import Literal

import onnx_graphsurgeon as gs

from edgec.compress import FIDELITY
from edgec.errors import EdgecError
from edgec.pass_infra import Numerics, Pass, PassContext, PassResult


class FinetunePass(Pass):
    name = "finetune"
    summary = (
        "Train on --train data, distilling from the uncompressed model; pruning masks and shared indices stay fixed."
    )
    numerics = Numerics.LOSSY
    tolerance = FIDELITY
    requires_training = True
    recovers = True
    epochs: int = 3
    lr: float = 1e-3  # Adam
    batch_size: int = 128
    distill: bool = True  # learn from the uncompressed model's outputs (and the labels, if any)
    temperature: float = 2.0  # recovered more than 1 or 4 on both LeNets (bench/compress)
    alpha: float = 0.5  # weight of distillation against cross-entropy when labels exist
    max_samples: int = 0  # train on a seeded subset of this size (0: all of --train)
    seed: int = 0
    schedule: Literal["cosine", "constant"] = "cosine"  # learning rate over the run

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        if importlib.util.find_spec("torch") is None:
            raise EdgecError("finetune needs PyTorch: pip install 'edgec[torch]'")
        if ctx.training is None:
            raise EdgecError("finetune needs training data: --train DATA")
        if self.epochs < 1 or self.lr <= 0 or self.batch_size < 1:
            raise EdgecError("finetune: epochs and batch_size must be >= 1 and lr > 0")
        from edgec.training import distill

        settings = distill.Settings(
            self.epochs,
            self.lr,
            self.batch_size,
            self.distill,
            self.temperature,
            self.alpha,
            self.seed,
            self.max_samples,
        )
        teacher = ctx.teacher.graph if ctx.teacher is not None else None
        stats = distill.finetune(graph, teacher, ctx.training, settings, ctx.progress)
        return PassResult(True, stats)
