"""One pass over calibration data with onnxruntime exposing intermediate tensors."""

from __future__ import annotations

from typing import Collection, Iterable, Sequence

import numpy as np
import onnx_graphsurgeon as gs

from edgec import ir, runner
from edgec.progress import Progress
from edgec.graph_utils import NameGen, reduce_node
from edgec.quant.observers import HistogramObserver

BATCH = 32
# Samples per run are also capped so that BATCH_LIVE_TENSORS copies of the model's largest
# activation, at that batch, fit in this: 32 images of a 608x800 detector hold GBs at once.
BATCH_BYTES = 256 << 20
BATCH_LIVE_TENSORS = 4


def expose(model: ir.Model, names: Sequence[str]) -> ir.Model:
    """A copy of the model whose outputs also include the named tensors (main graph only)."""
    exposed = model.copy()
    tensors = exposed.graph.tensors()
    present = {t.name for t in exposed.graph.outputs}
    for name in names:
        tensor = tensors.get(name)
        if isinstance(tensor, gs.Variable) and name not in present and tensor.dtype is not None:
            exposed.graph.outputs.append(tensor)
            present.add(name)
    return exposed


def batch_size(model: ir.Model) -> int:
    """Samples per run: 1 unless every input's first dimension is dynamic; then up to BATCH, as
    many as keep the largest activation's copies within BATCH_BYTES."""
    if not all(t.shape and not isinstance(t.shape[0], int) for t in model.graph.inputs):
        return 1
    largest = max((_per_sample_bytes(t) for t in model.graph.tensors().values()), default=0)
    return int(max(1, min(BATCH, BATCH_BYTES // max(1, largest * BATCH_LIVE_TENSORS))))


def _per_sample_bytes(tensor: gs.Tensor) -> int:
    shape = getattr(tensor, "shape", None)
    if not shape or isinstance(tensor, gs.Constant):
        return 0
    elements = 1
    for dim in shape[1:]:
        elements *= dim if isinstance(dim, int) and dim > 0 else 1
    return elements * 4


def batches(samples: Iterable[dict], model: ir.Model, size: int | None = None) -> Iterable[tuple[dict, int]]:
    """(feeds, number of samples in them): samples stacked along the batch axis when every
    input's first dimension is dynamic (fewer, larger runs; batch_size() per run unless `size`
    is given), one at a time otherwise."""
    size = size or batch_size(model)
    dynamic = size > 1
    pending: list[dict] = []
    for sample in samples:
        if not dynamic:
            yield sample, 1
            continue
        pending.append(sample)
        if len(pending) == size:
            yield {k: np.concatenate([s[k] for s in pending]) for k in pending[0]}, len(pending)
            pending = []
    if pending:
        yield {k: np.concatenate([s[k] for s in pending]) for k in pending[0]}, len(pending)


def observe(
    model: ir.Model,
    calibration,
    names: Sequence[str],
    progress: bool = False,
    label: str = "calibrating",
    exact_extremes: bool = True,
    channelwise: Collection[str] = (),
) -> dict:
    """Run the calibration set once and return a histogram observer per named tensor.

    The histogram takes a strided sample of each tensor per run (in the graph when the size is
    static, so only the sample is copied out), with a prime stride so it does not alias with
    channel or spatial periods: about 2^20 values per tensor over the set. With
    `exact_extremes`, onnxruntime also reduces every tensor to its exact min and max (what the
    minmax method needs; the reductions cost as much as the model itself on PP-LCNet).

    The `channelwise` tensors also get their per-channel (axis 1) extremes, reduced in the graph.
    """
    per_batch = batch_size(model)
    runs = max(1, -(-len(calibration) // per_batch))
    # About 2^20 sampled values per tensor over the whole set, never fewer than 4096 per run.
    per_run = max(4096, (1 << 20) // runs)
    summarized, outputs = _summarizing(model, names, per_run, exact_extremes)
    channels = _channel_extremes(summarized, [n for n in channelwise if n in outputs])
    # Graph optimizations on: every observed tensor is a graph output, which fusions preserve.
    session = runner.make_session(summarized, optimize=True, arena=runner.arena_pays(summarized.graph, per_batch))
    available = {o.name for o in session.get_outputs()}
    wanted = [n for n in names if n in outputs and all(o in available for o in outputs[n][:3] if o)]
    fetch = [o for n in wanted for o in outputs[n][:3] if o]
    channels = {n: pair for n, pair in channels.items() if n in wanted and all(o in available for o in pair)}
    fetch += [o for pair in channels.values() for o in pair]
    observers = {name: HistogramObserver() for name in wanted}
    feeds_names = [i.name for i in session.get_inputs()]
    with Progress(len(calibration), label, enabled=progress) as bar:
        position = 0
        for feeds, count in batches(calibration, model, per_batch):
            options = runner.run_options(session, last=position + count >= len(calibration))
            values = dict(zip(fetch, session.run(fetch, {k: feeds[k] for k in feeds_names}, options)))
            for name in wanted:
                tensor, lo, hi = (values.get(o) for o in outputs[name][:3])
                size = outputs[name][3]  # static element count when the graph already sampled it
                flat = tensor.reshape(-1)
                sample = flat if size else _strided_sample(flat, per_run)
                if hi is None:  # extremes of the sample: enough for every method but minmax
                    lo, hi = sample.min(initial=np.inf), sample.max(initial=-np.inf)
                elif lo is None:  # a NON_NEGATIVE_OPS output: every range starts at 0 anyway
                    lo = 0.0
                observers[name].update_summary(float(lo), float(hi), sample, size or flat.size)
                if name in channels:
                    observers[name].update_channels(*(values[o] for o in channels[name]))
            position += count
            bar.update(count)
    return observers


# Ops whose outputs are never negative: their exact minimum is not reduced in the graph, since
# every calibration range includes 0 (observers.HistogramObserver.range) and so starts at 0 for
# them whatever it is. ResNet-50: 49 of its 73 observed tensors, one ReduceMin each per run
# (same bytes).
NON_NEGATIVE_OPS = frozenset(("Relu", "Sigmoid", "Softmax", "HardSigmoid", "Abs", "Exp"))


def _strided_sample(flat: np.ndarray, target: int) -> np.ndarray:
    if flat.size <= target:
        return flat
    stride = next(p for p in _PRIMES if p >= flat.size // target)
    return flat[stride // 2 :: stride]


# Strides for sampling: primes share no factor with tensor dimensions (powers of two, 7, 14 ...)
# unless a dimension is that prime itself.
_PRIMES = [
    2,
    3,
    5,
    11,
    17,
    29,
    53,
    101,
    197,
    389,
    769,
    1523,
    3049,
    6089,
    12163,
    24329,
    48649,
    97301,
    194591,
    389173,
    778327,
    1556651,
    3113267,
    6226553,
    12453103,
]


def _summarizing(
    model: ir.Model, names: Sequence[str], per_run: int, exact_extremes: bool
) -> tuple[ir.Model, dict[str, tuple]]:
    """A copy of the model that also outputs, per named tensor: the tensor (or, when its size is
    static and large, a strided sample taken in the graph, which saves copying it out) and, when
    asked, its exact min and max (reductions in the graph). Values: (tensor or sample name, min
    name or None, max name or None, static size or None)."""
    summarized = model.copy()
    graph = summarized.graph
    tensors = graph.tensors()
    fresh = NameGen(graph)
    outputs = {}
    present = {t.name for t in graph.outputs}
    flat_shape = gs.Constant(fresh("observe_flat_shape"), np.array([-1], np.int64))
    for name in names:
        tensor = tensors.get(name)
        if not isinstance(tensor, gs.Variable) or tensor.dtype is None:
            continue
        extremes = (None, None)
        if exact_extremes:
            hi = gs.Variable(fresh(f"{name}__max"), dtype=tensor.dtype, shape=[])
            graph.nodes.append(gs.Node("ReduceMax", attrs={"keepdims": 0}, inputs=[tensor], outputs=[hi]))
            graph.outputs.append(hi)
            extremes = (None, hi.name)
            if not (tensor.inputs and tensor.inputs[0].op in NON_NEGATIVE_OPS):
                lo = gs.Variable(fresh(f"{name}__min"), dtype=tensor.dtype, shape=[])
                graph.nodes.append(gs.Node("ReduceMin", attrs={"keepdims": 0}, inputs=[tensor], outputs=[lo]))
                graph.outputs.append(lo)
                extremes = (lo.name, hi.name)
        size = _static_size(tensor)
        if size and size > per_run:
            stride = next(p for p in _PRIMES if p >= size // per_run)
            flat = gs.Variable(fresh(f"{name}__flat"), dtype=tensor.dtype, shape=[size])
            sampled = len(range(stride // 2, size, stride))
            sample = gs.Variable(fresh(f"{name}__sample"), dtype=tensor.dtype, shape=[sampled])
            steps = [
                gs.Constant(fresh(f"{name}__{k}"), np.array([v], np.int64))
                for k, v in (("start", stride // 2), ("end", size), ("axes", 0), ("step", stride))
            ]
            graph.nodes += [
                gs.Node("Reshape", inputs=[tensor, flat_shape], outputs=[flat]),
                gs.Node("Slice", inputs=[flat, *steps], outputs=[sample]),
            ]
            graph.outputs.append(sample)
            outputs[name] = (sample.name, *extremes, size)
            continue
        if name not in present:
            graph.outputs.append(tensor)
            present.add(name)
        outputs[name] = (name, *extremes, None)
    return summarized, outputs


def _channel_extremes(summarized: ir.Model, names: Sequence[str]) -> dict[str, tuple[str, str]]:
    """Adds ReduceMin/ReduceMax over every axis but 1 of each named tensor (of known rank) to
    the summarizing model's outputs: name -> (per-channel min output, per-channel max output)."""
    graph = summarized.graph
    tensors = graph.tensors()
    fresh = NameGen(graph)
    found = {}
    for name in names:
        tensor = tensors[name]
        if tensor.shape is None or len(tensor.shape) < 2:
            continue
        axes = [a for a in range(len(tensor.shape)) if a != 1]
        pair = []
        for op in ("ReduceMin", "ReduceMax"):
            out = gs.Variable(fresh(f"{name}__channel_{op[6:].lower()}"), dtype=tensor.dtype)
            graph.nodes.append(reduce_node(op, tensor, out, axes, graph.opset, fresh(f"{name}__channel_axes")))
            graph.outputs.append(out)
            pair.append(out.name)
        found[name] = tuple(pair)
    return found


def _static_size(tensor: gs.Variable) -> int | None:
    shape = tensor.shape
    if shape is None or not all(isinstance(d, int) and d >= 0 for d in shape):
        return None
    return int(np.prod(shape, dtype=np.int64))
