"""Fashion-MNIST from Debian's dataset-fashion-mnist package, read straight from its IDX files."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

from edgec.errors import EdgecError

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
# Normalization used by every model trained here: pixels/255, then (x - MEAN) / STD.
MEAN, STD = 0.2860, 0.3530
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def data_dir() -> Path:
    return Path(os.environ.get("EDGEC_FASHION_MNIST", DEFAULT_DIR))


def available() -> bool:
    return all((data_dir() / name).is_file() for pair in _FILES.values() for name in pair)


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzipped): 2 zero bytes, a type code, the rank, big-endian dims, data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, type_code, rank = struct.unpack(">HBB", data[:4])
    if zero != 0 or type_code not in _DTYPES:
        raise EdgecError(f"{path}: not an IDX file")
    dims = struct.unpack(f">{rank}I", data[4 : 4 + 4 * rank])
    array = np.frombuffer(data, dtype=_DTYPES[type_code], offset=4 + 4 * rank)
    if array.size != int(np.prod(dims)):
        raise EdgecError(f"{path}: truncated ({array.size} values for shape {dims})")
    return array.reshape(dims)


def load(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 28, 28], labels uint8 [N])."""
    if split not in _FILES:
        raise ValueError(f"split must be one of {', '.join(_FILES)}")
    if not available():
        raise EdgecError(
            f"Fashion-MNIST not found in {data_dir()}: apt-get install dataset-fashion-mnist "
            "(or set EDGEC_FASHION_MNIST)"
        )
    images, labels = (read_idx(data_dir() / name) for name in _FILES[split])
    return images, labels


def normalize(images: np.ndarray) -> np.ndarray:
    """uint8 [N, 28, 28] -> float32 [N, 1, 28, 28], the input every reference model expects."""
    return ((images.astype(np.float32) / 255.0 - MEAN) / STD)[:, None, :, :]


def export_npz(split: str, path: str | Path, count: int | None = None) -> Path:
    """A labelled .npz for --train/--eval/--calib: `input` (a stack of normalized (1, 1, 28, 28)
    samples, as the bundled models take them) and `labels`."""
    images, labels = load(split)
    images, labels = images[:count], labels[:count]
    np.savez(path, input=normalize(images)[:, None], labels=labels)
    return Path(path)


if __name__ == "__main__":  # python -m edgec.models.fashion_mnist train fmnist_train.npz [COUNT]
    import sys

    if len(sys.argv) not in (3, 4) or sys.argv[1] not in _FILES:
        sys.exit("usage: python -m edgec.models.fashion_mnist train|test OUT.npz [COUNT]")
    written = export_npz(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) == 4 else None)
    print(f"{written}: Fashion-MNIST {sys.argv[1]} split")
