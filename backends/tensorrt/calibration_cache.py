"""TensorRT's int8 calibration cache, written from the IR's Q/DQ scales (no calibration on the
device: the scales are the ones edgec calibrated and checked).

The format TensorRT's IInt8EntropyCalibrator2 writes and reads back (TensorRT samples, NVIDIA
TAO's exporters): a header `TRT-<version>-EntropyCalibration2`, then one `tensor: scale` line
per tensor, the scale (amax / 127) as the 8 hex digits of its float32 bits, most significant
first. <version> is the number TensorRT prints for itself (NV_TENSORRT_VERSION: 8201 for 8.2.1,
major*10000 + minor*100 + patch from 10.0 on, 100300 for 10.3.0). TensorRT checks the header
against itself (a cache for another version is not used, and it calibrates afresh, which needs
data), so build_engine.py rewrites it to the running version: the scales do not depend on it.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Mapping

import numpy as np

from edgec.errors import EdgecError

ALGORITHM = "EntropyCalibration2"
_HEADER = re.compile(r"TRT-(\d+)-(\w+)")


def scale_hex(scale: float) -> str:
    """The float32 scale's IEEE-754 bits as 8 lower-case hex digits, big-endian."""
    return struct.pack(">f", float(np.float32(scale))).hex()


def hex_scale(text: str) -> np.float32:
    return np.frombuffer(bytes.fromhex(text.rjust(8, "0")), dtype=">f4")[0].astype(np.float32)


def render(scales: Mapping[str, float], version: int) -> str:
    for name, scale in scales.items():
        if "\n" in name:
            raise EdgecError(f"tensor {name!r}: a calibration cache line cannot hold a newline")
        if not np.isfinite(scale) or scale <= 0:
            raise EdgecError(f"tensor '{name}': scale {scale} cannot go into a calibration cache")
    lines = [f"TRT-{version}-{ALGORITHM}"] + [f"{name}: {scale_hex(scale)}" for name, scale in scales.items()]
    return "\n".join(lines) + "\n"


def write(path: Path, scales: Mapping[str, float], version: int) -> Path:
    path.write_text(render(scales, version))
    return path


def parse(text: str) -> tuple[int, str, dict[str, np.float32]]:
    """(version, algorithm, {tensor: scale}) of a cache's text."""
    lines = text.splitlines()
    header = _HEADER.fullmatch(lines[0].strip()) if lines else None
    if header is None:
        raise EdgecError(f"not a TensorRT calibration cache: first line {lines[0][:40] if lines else ''!r}")
    scales = {}
    for line in lines[1:]:
        if not line.strip():
            continue
        name, _, bits = line.rpartition(":")
        scales[name.strip()] = hex_scale(bits.strip())
    return int(header.group(1)), header.group(2), scales
