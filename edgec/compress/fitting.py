"""Fitting compression to the model at hand: apply a step, fine-tune, and keep it only while the
result still meets the fidelity budget against the uncompressed model on the check samples.

The pass manager checks the pass's final result on the same samples with the same budget, so a
step kept here passes that check too."""

from __future__ import annotations

import onnx_graphsurgeon as gs

from edgec import ir, quantities, runner
from edgec.compare import Comparison, Tolerance
from edgec.errors import EdgecError
from edgec.pass_infra import PassContext


class FidelityProbe:
    """The uncompressed model's outputs on the check samples, and the budget to judge steps by."""

    def __init__(self, ctx: PassContext, tolerance: Tolerance, who: str):
        if ctx.teacher is None or not ctx.samples:
            raise EdgecError(f"{who} needs the uncompressed model and check samples (--train DATA)")
        self.samples = ctx.samples
        self.tolerance = tolerance
        self.reference = runner.run_model(ctx.teacher, self.samples)

    def check(self, graph: gs.Graph) -> Comparison:
        outputs = runner.run_model(ir.Model(graph), self.samples)
        return quantities.compare_lossy(self.reference, outputs, self.tolerance, "original")


def summary(check: Comparison) -> dict:
    return {
        "ok": bool(check),
        "cosine": round(check.cosine, 5),
        "top1_agreement": None if check.top1_agreement is None else round(check.top1_agreement, 4),
        **({"failed": "; ".join(check.failures)} if not check else {}),
    }


def constant_values(graph: gs.Graph) -> dict[str, object]:
    """Every constant's array: passes and fine-tuning assign new arrays, so this restores them."""
    return {t.name: t.values for t in graph.tensors().values() if isinstance(t, gs.Constant)}


def restore_values(graph: gs.Graph, saved: dict[str, object]) -> None:
    for tensor in graph.tensors().values():
        if isinstance(tensor, gs.Constant) and tensor.name in saved:
            tensor.values = saved[tensor.name]


def adopt(graph: gs.Graph, other: gs.Graph) -> None:
    """Make `graph` (the object the pass manager holds) the graph `other` is."""
    graph.nodes, graph.inputs, graph.outputs = other.nodes, other.inputs, other.outputs
