"""A data-free sanity check of calibration ranges: what BatchNorm's statistics predict, against what
the calibration samples produced.

A trained BatchNormalization writes, per channel, values distributed around its beta with spread
|gamma| on the data the model was trained on; fold-batchnorm records both before it folds the
layer away (record()). Calibration samples preprocessed differently from training (0-255 pixels
for a model trained on 0-1, another mean, BGR for RGB) give those tensors ranges many times wider
or narrower than that, and every int8 scale is then fitted to the wrong data: the build would
still pass its own checks, which run on the same wrong samples. The check needs no data of its
own; it warns and reports, and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

# ctx.cache key: {tensor name: (beta, |gamma|)} of every BatchNormalization fold-batchnorm folded.
CACHE_KEY = "batchnorm-statistics"
# A channel's predicted range: beta +- SPREAD * |gamma| (a Gaussian's values over a calibration
# set of ~1e6 per tensor stay within about 5 standard deviations).
SPREAD = 5.0
# Observed span / predicted span beyond which (either way) a tensor does not match. Inputs scaled
# by 255 instead of 1 move the first layers' spans by ~100x; the correctly preprocessed real
# models measured within about 3x (see the test).
MISMATCH_FACTOR = 8.0
# Ops a channel's range passes through unchanged, or clamped at zero (Relu).
_PASS_THROUGH = ("Relu", "MaxPool", "Identity")


@dataclass
class Span:
    tensor: str
    observed: tuple[float, float]
    predicted: tuple[float, float]

    @property
    def ratio(self) -> float:
        predicted = self.predicted[1] - self.predicted[0]
        return (self.observed[1] - self.observed[0]) / predicted if predicted > 0 else float("inf")

    @property
    def mismatched(self) -> bool:
        """Observed MISMATCH_FACTOR times wider or narrower than predicted."""
        return not (1 / MISMATCH_FACTOR <= self.ratio <= MISMATCH_FACTOR)


def record(cache: dict, output: str, gamma: np.ndarray, beta: np.ndarray) -> None:
    """Remember a BatchNormalization's output statistics under its output's name (which the folded
    producer's output takes over)."""
    gamma, beta = (np.asarray(v, np.float64).reshape(-1) for v in (gamma, beta))
    cache.setdefault(CACHE_KEY, {})[output] = (beta, np.abs(gamma))


def predicted_range(
    graph: gs.Graph, name: str, statistics: dict, tensors: dict | None = None
) -> tuple[float, float] | None:
    """The range BatchNorm statistics predict for a tensor: one a BatchNorm wrote, or one a chain
    of Relu/MaxPool computes from it. `tensors`: graph.tensors(), when the caller has it."""
    tensors = graph.tensors() if tensors is None else tensors
    tensor, clamped = tensors.get(name), False
    while tensor is not None and tensor.name not in statistics:
        writer = tensor.inputs[0] if isinstance(tensor, gs.Variable) and len(tensor.inputs) == 1 else None
        if writer is None or writer.op not in _PASS_THROUGH:
            return None
        clamped |= writer.op == "Relu"
        tensor = writer.inputs[0]
    if tensor is None:
        return None
    beta, gamma = statistics[tensor.name]
    lo, hi = float(np.min(beta - SPREAD * gamma)), float(np.max(beta + SPREAD * gamma))
    if clamped:
        lo, hi = max(lo, 0.0), max(hi, 0.0)
    return min(lo, 0.0), max(hi, 0.0)  # int8 ranges contain zero, the observed ones too


def compare(graph: gs.Graph, observed: dict[str, tuple[float, float]], statistics: dict) -> list[Span]:
    """Every observed tensor with a predicted range, the mismatched ones (see Span.mismatched)
    first, worst first."""
    spans, tensors = [], graph.tensors()
    for name, (lo, hi) in sorted(observed.items()):
        predicted = predicted_range(graph, name, statistics, tensors)
        if predicted is not None and predicted[1] - predicted[0] > 0:
            spans.append(Span(name, (min(lo, 0.0), max(hi, 0.0)), predicted))
    return sorted(spans, key=lambda m: -abs(np.log(max(m.ratio, 1e-30))))
