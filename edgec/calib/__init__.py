"""Calibration data (`--calib`): where samples come from, validated as they are read.

Sources: `random:N`; an .npz (arrays keyed by input name, or one per input in order) or .npy
(single-input models); a directory of .npy/.npz files or of images (with a preprocessing spec);
`plugin:FILE.py` or `plugin:module`, whose `calibration_samples(inputs)` yields samples. An array
with one more axis than the input is a stack of samples. Samples are read lazily, so a large
directory never sits in memory, and every problem names the file it is in.
"""

from __future__ import annotations

import importlib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

import numpy as np
import onnx_graphsurgeon as gs

from edgec import ir
from edgec.calib import preprocess as preprocessing
from edgec.errors import EdgecError

MIN_SAMPLES = 16
# random:N past this is no calibration set but a way to run out of time (samples are made lazily,
# so memory is not the limit).
MAX_RANDOM_SAMPLES = 100_000
# Arrays an .npz holds are read whole (zip members cannot be memory-mapped): past this, one line
# that says to use .npy files, which are mapped and read sample by sample.
MAX_NPZ_ARRAY_BYTES = 1 << 30
Sample = dict[str, np.ndarray]


@dataclass
class CalibrationSet:
    """A re-iterable set of samples (one feed dict each)."""

    source: str
    count: int
    reader: Callable[[], Iterator[tuple[str, Sample]]]  # yields (where it came from, sample)
    representative: bool = True

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[Sample]:
        for _, sample in self.reader():
            yield sample

    def take(self, n: int) -> list[Sample]:
        out = []
        for sample in self:
            if len(out) == n:
                break
            out.append(sample)
        return out

    def spread(self, n: int) -> list[int]:
        """Indices of n samples evenly spaced over the set. Sets are often ordered by source (the
        crops of one photo, then the next): the first n are a few sources, these span all of them.
        On PP-LCNet with 100 crops in photo order, calib=auto scored on the first 8 chose minmax,
        the worst method on every other photo."""
        n = min(n, self.count)
        return [int((i + 0.5) * self.count / n) for i in range(n)]

    def take_spread(self, n: int) -> list[Sample]:
        """The samples at spread(n), in set order."""
        return list(self.subset(self.spread(n), "spread"))

    def subset(self, indices: Iterable[int], label: str) -> "CalibrationSet":
        keep = sorted(set(indices))
        wanted = set(keep)

        def reader():
            for i, item in enumerate(self.reader()):
                if i in wanted:
                    yield item

        return CalibrationSet(f"{self.source} ({label})", len(keep), reader, self.representative)

    def split(self, holdout: float, seed: int = 0) -> tuple["CalibrationSet", "CalibrationSet"]:
        """A seeded random split into (search, held-out) parts."""
        order = np.random.default_rng(seed).permutation(self.count)
        n_holdout = max(1, int(round(self.count * holdout)))
        return (
            self.subset(order[n_holdout:].tolist(), "search split"),
            self.subset(order[:n_holdout].tolist(), "held-out split"),
        )


# --- validation ---------------------------------------------------------------------------------


def check_sample(sample: Mapping[str, np.ndarray], inputs: list[gs.Variable], where: str) -> Sample:
    """Shapes against the model's static dimensions, dtypes castable, values finite."""
    checked = {}
    for tensor in inputs:
        if tensor.name not in sample:
            raise EdgecError(f"{where}: no array for input '{tensor.name}' (has: {', '.join(sample) or 'none'})")
        array = np.asarray(sample[tensor.name])
        want = np.dtype(tensor.dtype)
        if np.issubdtype(want, np.integer) and not np.issubdtype(array.dtype, np.integer):
            raise EdgecError(f"{where}: '{tensor.name}' is {array.dtype}, the model wants {want}")
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            raise EdgecError(f"{where}: '{tensor.name}' is {array.dtype}, not numbers")
        if tensor.shape is not None:
            if array.ndim != len(tensor.shape) or any(
                isinstance(d, int) and d >= 0 and d != got for d, got in zip(tensor.shape, array.shape)
            ):
                raise EdgecError(
                    f"{where}: '{tensor.name}' has shape {list(array.shape)}, the model wants {list(tensor.shape)}"
                )
        if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            raise EdgecError(f"{where}: '{tensor.name}' contains NaN or Inf")
        checked[tensor.name] = array.astype(want, copy=False)
    return checked


def split_stack(array: np.ndarray, tensor: gs.Variable) -> list[np.ndarray]:
    """One array as samples: a stack (one more axis), a batch for a model whose batch is 1 or
    dynamic (a user with a (256, 1, 28, 28) array for an (N, 1, 28, 28) input means 256 samples),
    or one sample."""
    rank = len(tensor.shape) if tensor.shape is not None else array.ndim
    if array.ndim == rank + 1:
        return list(array)
    batch = tensor.shape[0] if rank else None
    if array.ndim == rank and rank and (batch == 1 or not isinstance(batch, int) or batch <= 0):
        return [array[i : i + 1] for i in range(array.shape[0])]
    return [array]


def arrays_to_samples(arrays: Mapping[str, np.ndarray], inputs: list[gs.Variable], where: str) -> list[Sample]:
    stacks = {}
    for tensor in inputs:
        if tensor.name not in arrays:
            raise EdgecError(f"{where}: no array for input '{tensor.name}' (has: {', '.join(arrays) or 'none'})")
        stacks[tensor.name] = split_stack(np.asarray(arrays[tensor.name]), tensor)
    counts = {len(s) for s in stacks.values()}
    if len(counts) > 1:
        raise EdgecError(f"{where}: inputs hold different numbers of samples ({sorted(counts)})")
    count = counts.pop() if counts else 0
    return [{name: np.asarray(stack[i]) for name, stack in stacks.items()} for i in range(count)]


# --- sources ------------------------------------------------------------------------------------


def load(
    spec, model: ir.Model, preprocess: str | preprocessing.Preprocess | None = None, min_samples: int = MIN_SAMPLES
) -> CalibrationSet:
    """Resolve a --calib value (or, from Python, an array, a dict of arrays keyed by input name,
    or an iterable of such dicts). Every sample is checked against the model's inputs when read."""
    inputs = list(model.graph.inputs)
    calib = None if isinstance(spec, (str, Path)) else _in_memory(spec, inputs)
    spec = str(spec) if calib is None else calib.source
    if calib is not None:
        pass
    elif spec.startswith("random:"):
        calib = _random(spec, model)
    elif spec.startswith("plugin:"):
        calib = _plugin(spec.removeprefix("plugin:"), inputs)
    else:
        path = Path(spec)
        if not path.exists():
            raise EdgecError(f"{path}: no such file or directory")
        if path.is_dir():
            calib = _directory(path, inputs, _spec(preprocess))
        elif path.suffix in (".npz", ".npy"):
            calib = _array_file(path, inputs)
        else:
            raise EdgecError(f"{path}: calibration data must be .npz, .npy, a directory, random:N or plugin:...")
    if calib.count < min_samples:
        raise EdgecError(f"{calib.source}: {calib.count} samples, need at least {min_samples}")
    return _validated(calib, inputs)


def _validated(calib: CalibrationSet, inputs: list[gs.Variable]) -> CalibrationSet:
    raw = calib.reader

    def reader():
        for where, sample in raw():
            yield where, check_sample(sample, inputs, where)

    return CalibrationSet(calib.source, calib.count, reader, calib.representative)


def _spec(preprocess) -> preprocessing.Preprocess | None:
    if preprocess is None or isinstance(preprocess, preprocessing.Preprocess):
        return preprocess
    return preprocessing.parse(preprocess)


def _in_memory(data, inputs: list[gs.Variable]) -> CalibrationSet:
    """The Python API's calib=: an array (single-input models), a dict of arrays, or an iterable
    of feed dicts; arrays are stacks of samples like an .npz's."""
    if isinstance(data, np.ndarray):
        if len(inputs) != 1:
            raise EdgecError(f"calib: one array given, the model has {len(inputs)} inputs (give a dict by input name)")
        data = {inputs[0].name: data}
    if isinstance(data, Mapping):
        samples = arrays_to_samples({k: np.asarray(v) for k, v in data.items()}, inputs, "calib")
    else:
        try:
            samples = [dict(item) if isinstance(item, Mapping) else {inputs[0].name: np.asarray(item)} for item in data]
        except TypeError:
            raise EdgecError(
                f"calib: a {type(data).__name__} is not calibration data (give a path, random:N, an array, "
                "a dict of arrays or an iterable of feed dicts)"
            ) from None
    return CalibrationSet(
        f"calib ({len(samples)} samples given)",
        len(samples),
        lambda: ((f"calib[{i}]", s) for i, s in enumerate(samples)),
    )


def _random(spec: str, model: ir.Model) -> CalibrationSet:
    from edgec.samples import random_samples

    try:
        count = int(spec.removeprefix("random:"))
    except ValueError:
        raise EdgecError(f"--calib {spec}: expected random:N with N a number") from None
    if not 1 <= count <= MAX_RANDOM_SAMPLES:
        raise EdgecError(f"--calib {spec}: N must be between 1 and {MAX_RANDOM_SAMPLES:,}")
    random_samples(model, 1, seed=0)  # errors (dynamic dimensions, dtypes) now, not mid-pass

    def reader():
        # One sample at a time from its own seed: bounded memory for any N, same samples every pass.
        for i in range(count):
            yield f"random sample {i}", random_samples(model, 1, seed=i)[0]

    return CalibrationSet(f"random:{count}", count, reader, representative=False)


def _declared_bytes(stream) -> int:
    """What an .npy header says its array needs, read before anything is allocated."""
    version = np.lib.format.read_magic(stream)
    read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in read_header:
        raise ValueError(f"unsupported .npy version {version}")
    shape, _, dtype = read_header[version](stream)
    return int(np.prod(shape, dtype=object)) * np.dtype(dtype).itemsize


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an .npz, each declared size checked before it is read; EdgecError naming the
    file when it is not a readable archive of arrays."""
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.infolist():
                with archive.open(member) as stream:
                    declared = _declared_bytes(stream) if member.filename.endswith(".npy") else 0
                if declared > MAX_NPZ_ARRAY_BYTES:
                    raise EdgecError(
                        f"{path}: {member.filename} declares {declared:,} bytes, over the {MAX_NPZ_ARRAY_BYTES:,} "
                        "an .npz may hold per array (use .npy files: they are read sample by sample)"
                    )
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError, MemoryError, OverflowError) as exc:
        raise EdgecError(f"{path}: unreadable ({str(exc).splitlines()[0][:120]})") from exc


def _read_npy(path: Path) -> np.ndarray:
    try:
        with open(path, "rb") as f:
            declared = _declared_bytes(f)
        if declared > path.stat().st_size:
            raise EdgecError(f"{path}: its header declares {declared:,} bytes, the file has {path.stat().st_size:,}")
        # Mapped, not read: a large array is paged in sample by sample.
        return np.load(path, allow_pickle=False, mmap_mode="r")
    except (OSError, ValueError, EOFError, MemoryError, OverflowError) as exc:
        raise EdgecError(f"{path}: unreadable ({str(exc).splitlines()[0][:120]})") from exc


def _read_arrays(path: Path, inputs: list[gs.Variable]) -> dict[str, np.ndarray]:
    if path.suffix == ".npy":
        if len(inputs) != 1:
            raise EdgecError(f"{path}: an .npy holds one array; the model has {len(inputs)} inputs (use .npz)")
        return {inputs[0].name: _read_npy(path)}
    arrays = read_npz(path)
    names = [t.name for t in inputs]
    if set(names) <= set(arrays):
        return arrays
    if len(arrays) == len(names):  # np.savez(file, a, b): arr_0, arr_1 in input order
        return dict(zip(names, (arrays[k] for k in sorted(arrays, key=_natural))))
    raise EdgecError(f"{path}: arrays {', '.join(arrays)} do not match the inputs {', '.join(names)}")


def _natural(key: str):
    digits = "".join(c for c in key if c.isdigit())
    return (int(digits) if digits else 0, key)


def _array_file(path: Path, inputs: list[gs.Variable]) -> CalibrationSet:
    samples = arrays_to_samples(_read_arrays(path, inputs), inputs, str(path))
    return CalibrationSet(str(path), len(samples), lambda: ((f"{path}[{i}]", s) for i, s in enumerate(samples)))


def _directory(path: Path, inputs: list[gs.Variable], spec: preprocessing.Preprocess | None) -> CalibrationSet:
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    arrays = [p for p in files if p.suffix in (".npy", ".npz")]
    images = [p for p in files if p.suffix.lower() in preprocessing.IMAGE_SUFFIXES]
    if arrays and images:
        raise EdgecError(f"{path}: mixes arrays and images; use one kind per directory")
    if images:
        return _images(path, images, inputs, spec)
    if not arrays:
        raise EdgecError(f"{path}: no .npy, .npz or image files")
    # Count without keeping: each file is opened again when the set is iterated.
    counts = [len(arrays_to_samples(_read_arrays(p, inputs), inputs, str(p))) for p in arrays]

    def reader():
        for p in arrays:
            for i, sample in enumerate(arrays_to_samples(_read_arrays(p, inputs), inputs, str(p))):
                yield f"{p}[{i}]", sample

    return CalibrationSet(str(path), sum(counts), reader)


def _images(path: Path, images: list[Path], inputs: list[gs.Variable], spec) -> CalibrationSet:
    if spec is None:
        raise EdgecError(
            f"{path}: a directory of images needs --preprocess (e.g. resize=256,crop=224,"
            "mean=0.485/0.456/0.406,std=0.229/0.224/0.225)"
        )
    if len(inputs) != 1:
        raise EdgecError(f"{path}: images can feed a single-input model only; the model has {len(inputs)} inputs")
    name = inputs[0].name

    def reader():
        for p in images:
            yield str(p), {name: spec.apply(p)}

    return CalibrationSet(f"{path} ({spec})", len(images), reader)


def _plugin(spec: str, inputs: list[gs.Variable]) -> CalibrationSet:
    """`plugin:FILE.py` or `plugin:module`: its calibration_samples(inputs) yields samples (a dict
    per sample, or an array for single-input models)."""
    from edgec.registry import _import_file

    try:
        module = _import_file(Path(spec)) if spec.endswith(".py") else importlib.import_module(spec)
    except (Exception, SystemExit) as exc:
        raise EdgecError(f"calibration plugin {spec} failed to import: {type(exc).__name__}: {exc}") from exc
    function = getattr(module, "calibration_samples", None)
    if not callable(function):
        raise EdgecError(f"calibration plugin {spec} has no calibration_samples(inputs) function")
    specs = [ir.tensor_spec(t) for t in inputs]

    def reader():
        try:
            for i, item in enumerate(function(specs)):
                sample = item if isinstance(item, Mapping) else {inputs[0].name: item}
                yield f"{spec} sample {i}", dict(sample)
        except EdgecError:
            raise
        except SystemExit as exc:  # from the API too, not only the command
            raise EdgecError(f"calibration plugin {spec} called sys.exit({exc.code!r})") from exc
        except Exception as exc:
            raise EdgecError(f"calibration plugin {spec} raised {type(exc).__name__}: {exc}") from exc

    count = sum(1 for _ in reader())
    return CalibrationSet(f"plugin:{spec}", count, reader)
