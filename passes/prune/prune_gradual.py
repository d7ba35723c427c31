"""Gradual magnitude pruning with recovery, fitted to the model: prune a step further, fine-tune,
and stop at the last step that keeps the fidelity budget (Deep Compression's iterative pruning,
which on a model smaller or harder than the one a schedule was tuned on would otherwise fail)."""

from __future__ import annotations

from typing import Literal

import onnx_graphsurgeon as gs

from edgec.compress import FIDELITY, fitting, storage
from edgec.errors import PipelineError
from edgec.pass_infra import Numerics, PassContext, PassResult, option
from edgec.passes.finetune.finetune import FinetunePass
from edgec.passes.prune.prune_magnitude import PruneMagnitudePass


class PruneGradualPass(FinetunePass):
    name = "prune-gradual"
    summary = (
        "Prune step by step (global magnitude), fine-tuning after each; keeps the largest step whose "
        "result still meets the fidelity budget."
    )
    numerics = Numerics.LOSSY
    tolerance = FIDELITY
    recovers = False  # it recovers its own steps; earlier lossy passes are not its to excuse
    sparsities: tuple[float, ...] = option((0.5, 0.7, 0.8, 0.9, 0.94), min=0, below=1)
    epochs: tuple[int, ...] = option((2, 2, 3, 3, 6), min=1)  # fine-tuning after each step
    scope: Literal["layer", "global"] = "global"
    skip: tuple[str, ...] = ()
    min_elements: int = option(64, min=0)

    def check_options(self) -> None:
        super().check_options()
        if len(self.epochs) != len(self.sparsities) or not self.sparsities:
            raise PipelineError(f"pass '{self.name}': give one epochs value per step ({len(self.sparsities)} sparsities)")
        if list(self.sparsities) != sorted(self.sparsities):
            raise PipelineError(f"pass '{self.name}': sparsities must not decrease")

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        probe = fitting.FidelityProbe(ctx, self.check_tolerance(), self.name)
        steps, chosen = [], 0.0
        for sparsity, epochs in zip(self.sparsities, self.epochs):
            kept = fitting.constant_values(graph)
            prune = PruneMagnitudePass(sparsity=sparsity, scope=self.scope, skip=self.skip, min_elements=self.min_elements)
            if not prune.run(graph, ctx).modified:
                break  # nothing prunable
            self.train(graph, ctx, epochs)
            check = probe.check(graph)
            steps.append({"sparsity": sparsity, "epochs": epochs, **fitting.summary(check)})
            if not check:
                fitting.restore_values(graph, kept)  # back to the last step that held
                break
            chosen = sparsity
        if chosen == 0.0 and steps:
            ctx.warn(f"{self.name}: even sparsity {steps[0]['sparsity']:g} misses the budget after fine-tuning "
                     f"({steps[0].get('failed', '')}); the weights stay dense")
        elif steps and not steps[-1]["ok"]:
            ctx.warn(f"{self.name}: stopped at sparsity {chosen:g}; {steps[-1]['sparsity']:g} missed the "
                     f"budget after fine-tuning ({steps[-1]['failed']})")
        stats = {"steps": steps, "chosen_sparsity": chosen, "storage": storage.measure(graph, "fixed")}
        return PassResult(chosen > 0.0, stats)
