"""Judging a model on data: top-1 accuracy against labels, or agreement/SQNR against float32 outputs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgec import calib, ir, runner
from edgec.calib import preprocess as preprocessing
from edgec.errors import EdgecError
from edgec.quant import collect

LABEL_KEYS = ("labels", "label", "y", "targets")


@dataclass
class EvalSet:
    samples: list[dict]
    labels: np.ndarray | None  # one class index per sample, or None (compare with float32 instead)
    source: str

    def __len__(self) -> int:
        return len(self.samples)

    def part(self, indices) -> "EvalSet":
        indices = list(indices)
        labels = None if self.labels is None else self.labels[indices]
        return EvalSet([self.samples[i] for i in indices], labels, self.source)

    def split(self, holdout: float, seed: int = 0) -> tuple["EvalSet", "EvalSet"]:
        """(search, held-out): the held-out part is never seen by the search."""
        order = np.random.default_rng(seed).permutation(len(self))
        cut = max(1, int(round(len(self) * holdout)))
        return self.part(sorted(order[cut:])), self.part(sorted(order[:cut]))


def load(spec: str, model: ir.Model, preprocess=None) -> EvalSet:
    """An .npz with the inputs and a `labels` array, a directory of class subdirectories of images
    (labels are the sorted subdirectory indices), or anything --calib reads (unlabelled)."""
    path = Path(spec)
    if path.suffix == ".npz" and path.is_file():
        arrays = calib.read_npz(path)
        label_key = next((k for k in LABEL_KEYS if k in arrays), None)
        labels = arrays.pop(label_key) if label_key else None
        inputs = list(model.graph.inputs)
        samples = [
            calib.check_sample(s, inputs, f"{path}[{i}]")
            for i, s in enumerate(calib.arrays_to_samples(arrays, inputs, str(path)))
        ]
        return EvalSet(samples, _labels(labels, len(samples), path), str(path))
    if path.is_dir() and any(p.is_dir() for p in path.iterdir()):
        return _image_folders(path, model, preprocess)
    return EvalSet(list(calib.load(spec, model, preprocess, min_samples=1)), None, spec)


def _labels(labels, count: int, path) -> np.ndarray | None:
    if labels is None:
        return None
    labels = np.asarray(labels).reshape(-1)
    if labels.size != count or not np.issubdtype(labels.dtype, np.integer):
        raise EdgecError(f"{path}: labels must be {count} integers, got {labels.size} of {labels.dtype}")
    return labels.astype(np.int64)


def _image_folders(path: Path, model: ir.Model, preprocess) -> EvalSet:
    spec = (
        preprocess
        if isinstance(preprocess, preprocessing.Preprocess) or preprocess is None
        else preprocessing.parse(preprocess)
    )
    if spec is None:
        raise EdgecError(f"{path}: a directory of images needs --preprocess")
    inputs = list(model.graph.inputs)
    samples, labels = [], []
    for label, folder in enumerate(sorted(p for p in path.iterdir() if p.is_dir())):
        for image in sorted(folder.iterdir()):
            if image.suffix.lower() in preprocessing.IMAGE_SUFFIXES:
                samples.append(calib.check_sample({inputs[0].name: spec.apply(image)}, inputs, str(image)))
                labels.append(label)
    if not samples:
        raise EdgecError(f"{path}: no images in its class subdirectories")
    return EvalSet(samples, np.asarray(labels, np.int64), str(path))


# --- running and scoring ------------------------------------------------------------------------


def predict(model: ir.Model, data: EvalSet, optimize: bool = False) -> list[np.ndarray]:
    """The first output for every sample, batched where the model allows."""
    session = runner.make_session(model, optimize=optimize)
    first = session.get_outputs()[0].name
    names = [i.name for i in session.get_inputs()]
    outputs = []
    for feeds, count in collect.batches(data.samples, model):
        out = session.run([first], {k: feeds[k] for k in names})[0]
        outputs.extend(np.split(out, count) if count > 1 else [out])
    return outputs


def top1(outputs: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(o).reshape(len(np.atleast_2d(o)), -1).argmax(-1) for o in outputs])


def accuracy(outputs: list[np.ndarray], labels: np.ndarray) -> float:
    return float(np.mean(top1(outputs) == labels))


def agreement(outputs: list[np.ndarray], reference: list[np.ndarray]) -> float:
    return float(np.mean(top1(outputs) == top1(reference)))


def sqnr_db(outputs: list[np.ndarray], reference: list[np.ndarray]) -> float:
    ref = np.concatenate([np.ravel(r) for r in reference]).astype(np.float64)
    got = np.concatenate([np.ravel(o) for o in outputs]).astype(np.float64)
    noise = float(np.sum((ref - got) ** 2))
    return math.inf if noise == 0 else 10 * math.log10(float(np.sum(ref**2)) / noise)


def worst_output_db(outputs: list[dict], reference: list[dict]) -> float:
    """The lowest SQNR over a model's named outputs, each pooled over the samples: how quantize's
    candidates (methods, corrections, per-layer choices) are scored."""
    return min(sqnr_db([o[k] for o in outputs], [r[k] for r in reference]) for k in reference[0])
