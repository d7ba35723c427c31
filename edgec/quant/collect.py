"""One pass over calibration data with onnxruntime exposing intermediate tensors."""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import onnx_graphsurgeon as gs

from edgec import ir, runner
from edgec.progress import Progress
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
    """Run the calibration set once and return a histogram observer per named tensor."""
    exposed = expose(model, names)
    session = runner.make_session(exposed)
    outputs = [o.name for o in session.get_outputs()]
    wanted = [n for n in outputs if n in set(names)]
    observers = {name: HistogramObserver() for name in wanted}
    feeds_names = [i.name for i in session.get_inputs()]
    with Progress(len(calibration), label, enabled=progress) as bar:
        for feeds, count in batches(calibration, model):
            values = session.run(wanted, {k: feeds[k] for k in feeds_names})
            for name, value in zip(wanted, values):
                observers[name].update(value)
            bar.update(count)
    return observers
