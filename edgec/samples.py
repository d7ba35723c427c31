"""Input samples for the equivalence checks: seeded random ones, or real ones from a file."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import onnx_graphsurgeon as gs

from edgec import calib, ir
from edgec.errors import EdgecError

DEFAULT_COUNT = 2
# Check inputs are held in memory (every pass compares against them): a bound, like random:N's.
MAX_COUNT = 100_000
DEFAULT_SEED = 0


def concrete_shape(tensor: gs.Variable, fill: int = 1) -> list[int]:
    """The tensor's shape with every dynamic dimension set to `fill` (batch size 1 etc.)."""
    if tensor.shape is None:
        raise EdgecError(
            f"input '{tensor.name}' has no shape in the model; give one with --input-shape {tensor.name}=1x..."
        )
    dynamic = [axis for axis, d in enumerate(tensor.shape) if axis > 0 and not (isinstance(d, int) and d > 0)]
    if dynamic:
        # A leading (batch) dimension of 1 is what edge inference runs; guessing 1 for a height,
        # width or length would check a 1x3x1x1 "image" and prove nothing.
        dims = "x".join(str(d) if isinstance(d, int) and d > 0 else "?" for d in tensor.shape)
        raise EdgecError(
            f"input '{tensor.name}' has dynamic dimensions ({dims}) beyond the batch: fix them with "
            f"--input-shape {tensor.name}=1x..., or give real inputs (--inputs or --calib)"
        )
    return [d if isinstance(d, int) and d > 0 else fill for d in tensor.shape]


def random_samples(model: ir.Model, count: int = DEFAULT_COUNT, seed: int = DEFAULT_SEED) -> list[dict]:
    """Seeded inputs: N(0,1) floats, small non-negative integers (valid as indices), coin-flip bools."""
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(count):
        feeds = {}
        for tensor in model.graph.inputs:
            shape = concrete_shape(tensor)
            dtype = np.dtype(tensor.dtype)
            if np.issubdtype(dtype, np.floating):
                feeds[tensor.name] = rng.standard_normal(shape).astype(dtype)
            elif dtype == np.bool_:
                feeds[tensor.name] = rng.integers(0, 2, shape).astype(np.bool_)
            elif np.issubdtype(dtype, np.integer):
                feeds[tensor.name] = rng.integers(0, 8, shape).astype(dtype)
            else:
                raise EdgecError(
                    f"input '{tensor.name}' has dtype {dtype}, which random samples cannot fill; "
                    "give real inputs with --inputs FILE.npz"
                )
        samples.append(feeds)
    return samples


def load_samples(path: str | Path, model: ir.Model) -> list[dict]:
    """Check inputs from a file or directory, read like calibration data (see edgec.calib)."""
    return list(calib.load(str(path), model, min_samples=1))


def samples_from_arrays(arrays: Mapping[str, np.ndarray], model: ir.Model, source: str) -> list[dict]:
    inputs = list(model.graph.inputs)
    return [
        calib.check_sample(s, inputs, f"{source}[{i}]")
        for i, s in enumerate(calib.arrays_to_samples(arrays, inputs, source))
    ]


def stack(samples: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One array per input with samples along axis 0 (the form samples_from_arrays reads)."""
    return {name: np.stack([s[name] for s in samples]) for name in samples[0]} if samples else {}
