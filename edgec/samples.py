"""Input samples for the equivalence checks: seeded random ones, or real ones from a file."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import onnx_graphsurgeon as gs

from edgec import ir
from edgec.errors import EdgecError

DEFAULT_COUNT = 2
DEFAULT_SEED = 0


def concrete_shape(tensor: gs.Variable, fill: int = 1) -> list[int]:
    """The tensor's shape with every dynamic dimension set to `fill` (batch size 1 etc.)."""
    if tensor.shape is None:
        raise EdgecError(
            f"input '{tensor.name}' has no shape in the model; give one with --input-shape {tensor.name}=1x..."
        )
    return [d if isinstance(d, int) and d >= 0 else fill for d in tensor.shape]


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
    """Samples from an .npz keyed by input name: one sample per array, or a stack of them.

    An array with one more dimension than the input holds several samples along axis 0.
    """
    path = Path(path)
    if not path.is_file():
        raise EdgecError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise EdgecError(f"{path}: not a readable .npz file ({exc})") from exc
    return samples_from_arrays(arrays, model, str(path))


def samples_from_arrays(arrays: Mapping[str, np.ndarray], model: ir.Model, source: str) -> list[dict]:
    stacks = {}
    for tensor in model.graph.inputs:
        if tensor.name not in arrays:
            raise EdgecError(f"{source}: no array for input '{tensor.name}' (has: {', '.join(arrays) or 'none'})")
        array = np.asarray(arrays[tensor.name])
        rank = len(tensor.shape) if tensor.shape is not None else array.ndim
        if array.ndim == rank and rank and tensor.shape[0] == 1 and array.shape[0] != 1:
            array = array[:, None]  # a batch for a batch-1 model: one sample per row
        elif array.ndim == rank:
            array = array[None]
        if array.ndim != rank + 1:
            raise EdgecError(f"{source}: '{tensor.name}' has shape {list(array.shape)}, the model wants rank {rank}")
        _check_sample(array[0], tensor, source)
        stacks[tensor.name] = array.astype(np.dtype(tensor.dtype), copy=False)
    counts = {len(a) for a in stacks.values()}
    if len(counts) > 1:
        raise EdgecError(f"{source}: inputs hold different numbers of samples ({sorted(counts)})")
    count = counts.pop() if counts else 0
    return [{name: np.asarray(stack[i]) for name, stack in stacks.items()} for i in range(count)]


def _check_sample(sample: np.ndarray, tensor: gs.Variable, source: str) -> None:
    if tensor.shape is not None:
        for axis, (want, got) in enumerate(zip(tensor.shape, sample.shape)):
            if isinstance(want, int) and want >= 0 and want != got:
                raise EdgecError(
                    f"{source}: '{tensor.name}' has shape {list(sample.shape)}, "
                    f"the model wants {list(tensor.shape)} (axis {axis})"
                )
    if np.issubdtype(sample.dtype, np.floating) and not np.isfinite(sample).all():
        raise EdgecError(f"{source}: '{tensor.name}' contains NaN or Inf")


def stack(samples: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The inverse of load_samples: one array per input with samples along axis 0."""
    return {name: np.stack([s[name] for s in samples]) for name in samples[0]} if samples else {}
