"""One pass over calibration data with onnxruntime exposing intermediate tensors."""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import onnx_graphsurgeon as gs

from edgec import ir, runner
from edgec.progress import Progress
from edgec.graph_utils import NameGen
from edgec.quant.observers import SAMPLE as OBSERVER_SAMPLE
from edgec.quant.observers import HistogramObserver

BATCH = 32


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


def batches(samples: Iterable[dict], model: ir.Model, size: int = BATCH) -> Iterable[tuple[dict, int]]:
    """(feeds, number of samples in them): samples stacked along the batch axis when every
    input's first dimension is dynamic (fewer, larger runs), one at a time otherwise."""
    dynamic = all(t.shape and not isinstance(t.shape[0], int) for t in model.graph.inputs)
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
    model: ir.Model, calibration, names: Sequence[str], progress: bool = False, label: str = "calibrating"
) -> dict[str, HistogramObserver]:
    """Run the calibration set once and return a histogram observer per named tensor.

    onnxruntime computes each observed tensor's exact min and max in the graph (fast reductions);
    the histogram takes a strided sample of at most SAMPLE values per tensor and batch, with a
    prime stride so it does not alias with channel or spatial periods.
    """
    summarized, outputs = _summarizing(model, names)
    # Graph optimizations on: every observed tensor is a graph output, which fusions preserve.
    session = runner.make_session(summarized, optimize=True)
    available = {o.name for o in session.get_outputs()}
    wanted = [n for n in names if all(o in available for o in outputs[n])]
    fetch = [o for n in wanted for o in outputs[n]]
    observers = {name: HistogramObserver() for name in wanted}
    feeds_names = [i.name for i in session.get_inputs()]
    with Progress(len(calibration), label, enabled=progress) as bar:
        for feeds, count in batches(calibration, model):
            values = dict(zip(fetch, session.run(fetch, {k: feeds[k] for k in feeds_names})))
            for name in wanted:
                tensor, lo, hi = (values[o] for o in outputs[name])
                flat = tensor.reshape(-1)
                observers[name].update_summary(float(lo), float(hi), _strided_sample(flat), flat.size)
            bar.update(count)
    return observers


def _strided_sample(flat: np.ndarray) -> np.ndarray:
    if flat.size <= OBSERVER_SAMPLE:
        return flat
    stride = next(p for p in _PRIMES if p >= flat.size // OBSERVER_SAMPLE)
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


def _summarizing(model: ir.Model, names: Sequence[str]) -> tuple[ir.Model, dict[str, tuple[str, ...]]]:
    """A copy of the model that also outputs (tensor, min, max) for each named tensor."""
    summarized = model.copy()
    graph = summarized.graph
    tensors = graph.tensors()
    fresh = NameGen(graph)
    outputs = {}
    present = {t.name for t in graph.outputs}
    for name in names:
        tensor = tensors.get(name)
        if not isinstance(tensor, gs.Variable) or tensor.dtype is None:
            continue
        lo = gs.Variable(fresh(f"{name}__min"), dtype=tensor.dtype, shape=[])
        hi = gs.Variable(fresh(f"{name}__max"), dtype=tensor.dtype, shape=[])
        graph.nodes += [
            gs.Node("ReduceMin", attrs={"keepdims": 0}, inputs=[tensor], outputs=[lo]),
            gs.Node("ReduceMax", attrs={"keepdims": 0}, inputs=[tensor], outputs=[hi]),
        ]
        if name not in present:
            graph.outputs.append(tensor)
            present.add(name)
        graph.outputs += [lo, hi]
        outputs[name] = (name, lo.name, hi.name)
    return summarized, outputs
