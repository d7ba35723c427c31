"""edgec's compressed weight container (`model.ecw`): named tensors, each entropy-coded.

Layout: the magic `ECW1`, a little-endian uint32 header length, a compact JSON header
({"format", "version", "tensors": [{"name", "dtype", "shape", "layout", streams...}]}) and the
concatenated payloads. Every stream records its offset and length, so a reader checks bounds
before decoding and a corrupt file is an error, never a silently wrong model.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Mapping

import numpy as np

from edgec.compress import tensor_codec
from edgec.compress.bitstream import CorruptStream
from edgec.errors import EdgecError

MAGIC = b"ECW1"
FORMAT = "edgec-compressed-weights"
VERSION = 1


def pack(tensors: Mapping[str, np.ndarray], coding: str = "huffman") -> tuple[bytes, list[dict]]:
    """The container bytes, and per tensor its name, layout and stream sizes (for reports)."""
    entries, payloads, summary, offset = [], [], [], 0
    for name, array in tensors.items():
        encoded = tensor_codec.encode(array, coding)
        entries.append({"name": name, "base": offset, **encoded.header})
        payloads.append(encoded.payload)
        offset += len(encoded.payload)
        summary.append(
            {
                "name": name,
                "layout": encoded.header["layout"],
                "elements": int(np.asarray(array).size),
                "nonzeros": int(np.count_nonzero(array)),
                "bytes": len(encoded.payload),
                "streams": encoded.sizes,
            }
        )
    header = json.dumps({"format": FORMAT, "version": VERSION, "tensors": entries}, separators=(",", ":")).encode()
    return MAGIC + struct.pack("<I", len(header)) + header + b"".join(payloads), summary


def write(path: str | Path, tensors: Mapping[str, np.ndarray], coding: str = "huffman") -> list[dict]:
    data, summary = pack(tensors, coding)
    Path(path).write_bytes(data)
    return summary


def unpack(data: bytes, source: str = "container") -> dict[str, np.ndarray]:
    """Every tensor, decoded; EdgecError naming `source` if the bytes are not a valid container."""
    try:
        if data[:4] != MAGIC:
            raise CorruptStream("not an edgec weight container (bad magic)")
        (size,) = struct.unpack("<I", data[4:8])
        header = json.loads(data[8 : 8 + size])
        if header.get("format") != FORMAT or header.get("version") != VERSION:
            raise CorruptStream(f"unsupported container {header.get('format')} v{header.get('version')}")
        payload = memoryview(data)[8 + size :]  # views: no copy per tensor
        out = {}
        for entry in header["tensors"]:
            base = int(entry["base"])
            out[entry["name"]] = tensor_codec.decode(entry, payload[base:])
        return out
    except CorruptStream as exc:
        raise EdgecError(f"{source}: corrupt weight container: {exc}") from exc
    except (struct.error, ValueError, KeyError, TypeError, IndexError) as exc:
        raise EdgecError(f"{source}: corrupt weight container ({type(exc).__name__}: {exc})") from exc


def read(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EdgecError(f"{path}: cannot read ({exc.strerror})") from exc
    return unpack(data, str(path))
