"""Outputs that concatenate different quantities, judged one quantity at a time.

A YOLO-style head writes boxes (hundreds of pixels) and class scores (0..1) into one tensor:
int8 that zeroes the scores still measures ~36 dB over the whole tensor, because the boxes carry
all its energy. Along the feature axis, consecutive slices whose peak magnitudes stay within
MAGNITUDE_STEP of each other form one quantity; a lossy check measures each quantity on its own
and must hold its budget on the worst one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Mapping, Sequence

import numpy as np

from edgec.compare import Comparison, compare

# A jump in peak magnitude this large between neighbouring slices starts a new quantity: boxes in
# pixels vs scores in 0..1 is ~600x; feature maps of one kind differ by a few x.
MAGNITUDE_STEP = 30.0
# Feature axes longer than this are positions (anchors, pixels), not kinds of values.
MAX_FEATURES = 4096
# More groups than this is noise between neighbouring channels (logits on a few samples), not a
# head that concatenates boxes, objectness and scores.
MAX_QUANTITIES = 4


@dataclass
class QuantityJudged(Comparison):
    """A comparison that also judged each quantity of its concatenated outputs."""

    quantities: list | None = None  # [{output, axis, slices [start, stop), peak, sqnr_db, cosine}]

    def to_json(self) -> dict:
        return {**super().to_json(), "quantities": self.quantities}


def groups(stacked: np.ndarray) -> tuple[int, list[tuple[int, int]]] | None:
    """(axis, [(start, stop), ...]) of the quantities along the feature axis of one output whose
    samples are stacked on axis 0, or None when the output holds one kind of value."""
    reference = stacked
    # The output's axis 1 (channels; YOLOv8's [1, 84, anchors]), and the last axis of a 3-D output
    # (YOLOv5's [1, anchors, 85]); never spatial axes, whose rows are positions.
    candidates = (1,) if reference.ndim == 2 else (2, 3) if reference.ndim == 4 else (2,)
    for axis in candidates:
        n = reference.shape[axis]
        if not 2 <= n <= MAX_FEATURES:
            continue
        peaks = np.abs(np.moveaxis(reference, axis, 0).reshape(n, -1)).max(axis=1)
        bounds, start, level = [], 0, peaks[0]
        for i in range(1, n):
            low, high = sorted((float(level), float(peaks[i])))
            if high > MAGNITUDE_STEP * max(low, np.finfo(np.float32).tiny):
                bounds.append((start, i))
                start, level = i, peaks[i]
            else:
                level = max(level, peaks[i])
        bounds.append((start, n))
        if 1 < len(bounds) <= MAX_QUANTITIES:
            return axis, bounds
    return None


def compare_lossy(
    reference: Sequence[Mapping], candidate: Sequence[Mapping], tolerance, against: str
) -> Comparison:
    """The check of a lossy result: compare(), then every concatenated output judged per quantity."""
    return judge(compare(reference, candidate, tolerance, against), reference, candidate)


def judge(check: Comparison, reference: Sequence[Mapping], candidate: Sequence[Mapping]) -> Comparison:
    """`check` with every concatenated output's quantities measured, and failed where the worst one
    misses the check's SQNR or cosine budget."""
    found, failures = [], list(check.failures)
    for name in reference[0] if reference else ():
        ref = np.stack([np.asarray(r[name]) for r in reference])
        if not np.issubdtype(ref.dtype, np.floating) or ref.ndim < 2:
            continue
        got = np.stack([np.asarray(c[name]) for c in candidate])
        grouped = groups(ref)
        if grouped is None or got.shape != ref.shape:
            continue
        axis, bounds = grouped
        for start, stop in bounds:
            part = [slice(None)] * ref.ndim
            part[axis] = slice(start, stop)
            r, g = ref[tuple(part)], got[tuple(part)]
            measured = compare([{name: r}], [{name: g}], type(check.tolerance)(), check.against)
            entry = {
                "output": name,
                "axis": axis - 1,  # in the output's own shape (samples were stacked on axis 0)
                "slices": [start, stop],
                "peak": float(np.abs(r).max()),
                "sqnr_db": None if math.isinf(measured.sqnr_db) else measured.sqnr_db,
                "cosine": measured.cosine,
            }
            found.append(entry)
            where = f"output '{name}' slices {start}:{stop} of axis {axis - 1} (peak {entry['peak']:.3g})"
            budget = check.tolerance
            if budget.min_sqnr_db is not None and not measured.sqnr_db >= budget.min_sqnr_db:
                failures.append(f"{where} sqnr {measured.sqnr_db:.1f} dB < {budget.min_sqnr_db:g} dB")
            if budget.min_cosine is not None and not measured.cosine >= budget.min_cosine:
                failures.append(f"{where} cosine {measured.cosine:.5f} < {budget.min_cosine:g}")
    if not found:
        return check
    values = {f.name: getattr(check, f.name) for f in fields(Comparison)}
    values.update(ok=not failures, failures=failures)
    return QuantityJudged(**values, quantities=found)
