"""Structured pruning: whole output channels of Conv/Gemm/MatMul layers go, so the model really
shrinks (fewer MACs, smaller weights, lower latency) instead of holding zeros.

Coupled channels (through BatchNorm, depthwise convolutions, residual Adds, Concats, a Flatten
into a Gemm) are found by edgec.compress.channels; this pass scores each prunable group's
channels, picks the ones to keep and measures what it gained. With `compensate` (the default)
each removed channel's mean over the samples is first moved into the biases of the layers that
read it (see channels.compensate), which recovers part of what pruning without fine-tuning loses.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import onnx_graphsurgeon as gs

from edgec import ir, runner, samples
from edgec.analysis.costs import node_macs, total_macs
from edgec.compress import FIDELITY, channels
from edgec.errors import EdgecError
from edgec.graph_utils import constant_value
from edgec.pass_infra import Numerics, Pass, PassContext, PassResult, option
from edgec.quant import collect

# Latency: the median of single-threaded batch-1 runs after a few warm-up ones: up to
# TIMED_RUNS of them within about TIMING_BUDGET_S seconds (at least MIN_TIMED_RUNS), enough for
# a stable median on models that run in tens of microseconds without stalling large ones.
WARMUP_RUNS = 5
TIMED_RUNS = 300
MIN_TIMED_RUNS = 10
TIMING_BUDGET_S = 1.0
# Compensation measures removed channels' means on this many of ctx.samples: means settle fast,
# and every run copies out the input of each layer that loses a slice.
COMPENSATION_SAMPLES = 64


@dataclass
class Plan:
    """What the pass will do: the groups, and for every group the channels it keeps."""

    analysis: channels.Analysis
    kept: dict[int, np.ndarray]  # group id -> sorted kept channel indices (all of them if untouched)
    ratio: float  # the share removed from each prunable group
    unscored: list[str]  # groups that criterion=bn-gamma scored by l1 (no BatchNorm after their producers)


class PruneChannelsPass(Pass):
    name = "prune-channels"
    summary = "Remove whole output channels of Conv/Gemm/MatMul layers and the inputs that read them."
    numerics = Numerics.LOSSY
    tolerance = FIDELITY
    ratio: float = option(0.25, min=0, below=1)  # share of the channels removed from each prunable group
    # Keep this fraction of the MACs instead (e.g. 0.5): the smallest uniform ratio that gets there.
    macs_target: float | None = option(None, min=0)
    # Importance of a channel: the L1/L2 norm of its producers' weights, or |gamma| of their BatchNorm.
    criterion: Literal["l1", "l2", "bn-gamma"] = "l1"
    skip: tuple[str, ...] = ()  # layers (node or weight names) whose output channels stay
    measure: bool = True  # time onnxruntime before and after (off in tests: it costs runs)
    # Add what removed channels contribute on average (over ctx.samples) to the biases of the
    # layers reading them, heads (the last layers before an output) excepted.
    compensate: bool = True

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        if not 0.0 <= self.ratio < 1.0:
            raise EdgecError(f"ratio={self.ratio}: the share of channels removed must be in [0, 1)")
        if self.macs_target is not None and not 0.0 < self.macs_target <= 1.0:
            raise EdgecError(f"macs_target={self.macs_target}: the share of MACs kept must be in (0, 1]")
        ir.infer_shapes(graph)
        before = _costs(graph, self.measure)
        plan = self.plan(graph, ctx)
        changed = any(len(plan.kept[g.id]) < g.channels for g in plan.analysis.groups)
        compensated = None
        if changed:
            if self.compensate:
                compensated = _compensate(graph, plan, ctx)
            channels.apply(graph, plan.analysis, plan.kept)
            graph.cleanup()  # the replaced weights and shape constants
            ir.infer_shapes(graph)
        after = _costs(graph, self.measure) if changed else before
        return PassResult(changed, _stats(plan, before, after, compensated))

    def plan(self, graph: gs.Graph, ctx: PassContext) -> Plan:
        """The groups of `graph` (which needs inferred shapes) and the channels each keeps.
        Deterministic: tests call it on a copy to know what run() removes."""
        analysis = channels.analyze(graph, self.skip)
        groups = analysis.prunable()
        scores, unscored = {}, []
        for group in groups:
            scores[group.id] = _scores(group, self.criterion)
            if scores[group.id] is None:
                scores[group.id] = _scores(group, "l1")
                unscored.append(group.name)
        if unscored:
            ctx.warn(
                f"prune-channels: criterion=bn-gamma: {len(unscored)} channel groups have no BatchNormalization "
                f"after their layers (e.g. '{unscored[0]}') and were scored by l1 instead"
            )
        ratio = self.ratio
        if self.macs_target is not None:
            ratio = _ratio_for_macs(graph, analysis, self.macs_target, ctx)
        chosen = {g.id: _keep(scores[g.id], _kept_count(g.channels, ratio)) for g in groups}
        return Plan(analysis, channels.kept_channels(analysis, chosen), ratio, unscored)


# --- which channels ---------------------------------------------------------------------------


def _kept_count(count: int, ratio: float) -> int:
    """Channels left after removing round(ratio * count), half up; at least one."""
    return max(1, count - int(np.floor(ratio * count + 0.5)))


def _keep(scores: np.ndarray, count: int) -> np.ndarray:
    """The `count` best channels in their original order; ties go to the lower index."""
    return np.sort(np.argsort(-scores, kind="stable")[:count])


def _scores(group: channels.Group, criterion: str) -> np.ndarray | None:
    """Importance per channel, summed over the group's producers (None: bn-gamma without a BN)."""
    total = np.zeros(group.channels)
    if criterion == "bn-gamma":
        outputs = {id(p.outputs[0]) for p in group.producers}
        gammas = [
            constant_value(cut.node.inputs[1])
            for cut in group.cuts
            if cut.node.op == "BatchNormalization" and cut.index == 1 and id(cut.node.inputs[0]) in outputs
        ]
        if not gammas:
            return None
        for gamma in gammas:
            total += np.abs(gamma.astype(np.float64))
        return total
    for cut in group.cuts:
        if cut.role == channels.OUTPUT and cut.index == 1:  # the weight, not the bias
            weight = np.moveaxis(constant_value(cut.node.inputs[1]).astype(np.float64), cut.axis, 0)
            flat = weight.reshape(group.channels, -1)
            total += np.abs(flat).sum(axis=1) if criterion == "l1" else np.sqrt((flat**2).sum(axis=1))
    return total


# --- macs-target: the smallest uniform ratio that gets under the budget ----------------------


def _ratio_for_macs(graph: gs.Graph, analysis: channels.Analysis, target: float, ctx: PassContext) -> float:
    """Bisection on one ratio for every group. MACs only depend on how many channels each group
    keeps, and every weighted layer's MACs scale with the kept share of the group it writes and
    of the group it reads, so candidates are counted without building them."""
    estimate = _macs_estimator(graph, analysis)
    budget = target * total_macs(graph)

    def macs(ratio: float) -> float:
        return estimate({g.id: _kept_count(g.channels, ratio) for g in analysis.prunable()})

    if macs(0.0) <= budget:
        return 0.0
    low, high = 0.0, 1.0  # macs(low) > budget >= macs(high), while the budget is reachable
    if macs(high) > budget:
        ctx.warn(f"prune-channels: macs_target={target} is out of reach; one channel per group is the most it removes")
        return high
    for _ in range(30):  # the kept counts are integers: this is far finer than any step
        middle = (low + high) / 2
        low, high = (low, middle) if macs(middle) <= budget else (middle, high)
    return high


def _macs_estimator(graph: gs.Graph, analysis: channels.Analysis):
    shares: dict[int, set[tuple[int, str]]] = {}  # id(node) -> the (group, side) its MACs scale with
    for group in analysis.groups:
        for cut in group.cuts:
            if cut.role in (channels.INPUT, channels.OUTPUT):
                shares.setdefault(id(cut.node), set()).add((group.id, cut.role))
        for node in group.depthwise:
            shares.setdefault(id(node), set()).add((group.id, "depthwise"))
    by_id = {g.id: g for g in analysis.groups}
    layers = [(node_macs(node), shares[id(node)]) for node in graph.nodes if id(node) in shares]
    total = total_macs(graph)

    def kept_count(group_id: int, counts: dict[int, int]) -> int:
        group = by_id[group_id]
        if group.segments is not None:  # a Concat output keeps what its inputs keep
            return sum(count if seg is None else kept_count(seg.id, counts) for seg, count in group.segments)
        return counts.get(group_id, group.channels)

    def estimate(counts: dict[int, int]) -> float:
        saved = 0.0
        for macs, sides in layers:
            share = 1.0
            for group_id, _ in sides:
                share *= kept_count(group_id, counts) / by_id[group_id].channels
            saved += macs * (1.0 - share)
        return total - saved

    return estimate


# --- compensation ----------------------------------------------------------------------------


def _compensate(graph: gs.Graph, plan: Plan, ctx: PassContext) -> int | None:
    """Measure the removed channels where their readers read them and move their means into
    those readers' biases (see channels.compensate); the number of layers changed (None: no
    samples to measure on)."""
    if not ctx.samples:
        ctx.warn("prune-channels: no samples to measure the removed channels on; compensate skipped")
        return None
    reads = channels.compensation_reads(graph, plan.analysis, plan.kept)
    if not reads:
        return 0  # only heads read removed channels
    means = _feature_means(graph, reads, ctx.samples[:COMPENSATION_SAMPLES])
    return len(channels.compensate(graph, plan.analysis, plan.kept, means))


def _feature_means(graph: gs.Graph, reads: dict[str, int], samples: list[dict]) -> dict[str, np.ndarray]:
    """The mean of every feature of each tensor in `reads` (name -> its feature axis) over the
    samples and every other axis: one run per batch of a copy of the model that outputs them."""
    model = collect.expose(ir.Model(graph), list(reads))
    # Optimizations on: every tensor read is a graph output, which fusions keep.
    session = runner.make_session(model, optimize=True)
    fetch = [o.name for o in session.get_outputs() if o.name in reads]
    inputs = [i.name for i in session.get_inputs()]
    sums, counts = {}, dict.fromkeys(fetch, 0)
    for feeds, _ in collect.batches(samples, model):
        for name, value in zip(fetch, session.run(fetch, {k: feeds[k] for k in inputs})):
            rows = np.moveaxis(value, reads[name], -1)
            rows = rows.reshape(-1, rows.shape[-1])
            sums[name] = sums.get(name, 0.0) + rows.sum(axis=0, dtype=np.float64)
            counts[name] += len(rows)
    return {name: sums[name] / counts[name] for name in sums if counts[name]}


# --- measuring -------------------------------------------------------------------------------


def _costs(graph: gs.Graph, measure: bool) -> dict:
    costs = {"macs": total_macs(graph), "params": ir.param_count(graph)}
    if measure:
        costs["latency_ms"] = _latency_ms(graph)
    return costs


def _latency_ms(graph: gs.Graph) -> float:
    """Median onnxruntime latency at batch 1 on one thread, with graph optimizations on (as deployed)."""
    model = ir.Model(graph)
    session = runner.make_session(model, optimize=True, threads=1)
    feeds = samples.random_samples(model, count=1)[0]
    for _ in range(WARMUP_RUNS):
        session.run(None, feeds)
    times = []
    while len(times) < TIMED_RUNS and (len(times) < MIN_TIMED_RUNS or sum(times) < TIMING_BUDGET_S):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1000, 4)


def _stats(plan: Plan, before: dict, after: dict, compensated: int | None) -> dict:
    layers, channels_before, channels_after = {}, 0, 0
    pruned = pinned = 0
    for group in plan.analysis.groups:
        if not group.producers:
            continue
        kept = len(plan.kept[group.id])
        channels_before += group.channels
        channels_after += kept
        pruned += kept < group.channels
        pinned += bool(group.pinned)
        for node in group.producers:
            entry = {"channels_before": group.channels, "channels_after": kept, "group": group.name}
            if group.pinned:
                entry["pinned"] = group.pinned[0]
            layers[node.name or node.outputs[0].name] = entry
    stats = {
        "ratio": round(plan.ratio, 6),
        "groups_pruned": pruned,
        "groups_pinned": pinned,
        "channels_before": channels_before,
        "channels_after": channels_after,
        "macs_before": before["macs"],
        "macs_after": after["macs"],
        "params_before": before["params"],
        "params_after": after["params"],
    }
    if "latency_ms" in before:
        stats.update({"latency_ms_before": before["latency_ms"], "latency_ms_after": after["latency_ms"]})
    if plan.unscored:
        stats["scored_by_l1"] = len(plan.unscored)
    if compensated is not None:
        stats["layers_compensated"] = compensated
    stats["layers"] = layers
    return stats
