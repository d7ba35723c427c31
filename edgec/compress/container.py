"""edgec's compressed weight container (`model.ecw`): named tensors, each entropy-coded.

Layout (version 2): the magic `ECW2`, a little-endian uint32 header length, a compact JSON header
({"format", "version", "tensors": [{"name", "dtype", "shape", "layout", streams...}]}), the
concatenated payloads, and the sha256 of everything before it (32 bytes). A reader checks the
checksum, then every header field's type and range (names, dtypes, shapes, stream offsets and
counts, a bound on the decoded size) before decoding, so a corrupt or hostile file is an
EdgecError, never a silently wrong model or an exhausted memory. Version 1 files (`ECW1`, no
checksum) are refused: rebuild the bundle.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from edgec.compress import tensor_codec
from edgec.compress.bitstream import CorruptStream
from edgec.errors import EdgecError

MAGIC = b"ECW2"
OLD_MAGIC = b"ECW1"
FORMAT = "edgec-compressed-weights"
VERSION = 2
CHECKSUM_BYTES = 32
MAX_TENSORS = 100_000
MAX_ELEMENTS = 1 << 31  # per tensor
# Decoded bytes a container may declare: sparse layouts legitimately expand, a bomb does not get far.
MIN_DECODED_LIMIT = 1 << 30
MAX_EXPANSION = 1000
DTYPES = (
    "float16",
    "float32",
    "float64",
    "bfloat16",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
)


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
    body = MAGIC + struct.pack("<I", len(header)) + header + b"".join(payloads)
    return body + hashlib.sha256(body).digest(), summary


def write(path: str | Path, tensors: Mapping[str, np.ndarray], coding: str = "huffman") -> list[dict]:
    data, summary = pack(tensors, coding)
    Path(path).write_bytes(data)
    return summary


def unpack(data: bytes, source: str = "container") -> dict[str, np.ndarray]:
    """Every tensor, decoded; EdgecError naming `source` if the bytes are not a valid container."""
    try:
        data = bytes(data)
        if data[:4] == OLD_MAGIC:
            raise CorruptStream("written by an older edgec (container v1, no checksum): rebuild the bundle")
        if data[:4] != MAGIC:
            raise CorruptStream("not an edgec weight container (bad magic)")
        if len(data) < 8 + CHECKSUM_BYTES:
            raise CorruptStream(f"truncated ({len(data)} bytes)")
        body, checksum = data[:-CHECKSUM_BYTES], data[-CHECKSUM_BYTES:]
        if hashlib.sha256(body).digest() != checksum:
            raise CorruptStream("checksum mismatch (the file was changed or truncated)")
        (size,) = struct.unpack("<I", body[4:8])
        if 8 + size > len(body):
            raise CorruptStream(f"header of {size} bytes runs past the end of the file")
        header = json.loads(body[8 : 8 + size], parse_constant=_no_constant)
        payload = memoryview(body)[8 + size :]  # views: no copy per tensor
        entries = _checked_header(header, len(payload), len(data))
        out = {}
        for entry in entries:
            decoded = tensor_codec.decode(entry, payload[entry["base"] :])
            if decoded.dtype != np.dtype(entry["dtype"]) or decoded.shape != tuple(entry["shape"]):
                raise CorruptStream(f"tensor '{entry['name']}' decodes to {decoded.dtype}{list(decoded.shape)}")
            out[entry["name"]] = decoded
        return out
    except CorruptStream as exc:
        raise EdgecError(f"{source}: corrupt weight container: {exc}") from exc
    except EdgecError:
        raise
    except (
        struct.error,
        ValueError,
        KeyError,
        TypeError,
        IndexError,
        OverflowError,
        RecursionError,
        MemoryError,
        UnicodeDecodeError,
    ) as exc:
        raise EdgecError(f"{source}: corrupt weight container ({type(exc).__name__}: {_first_line(exc)})") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


def _no_constant(name: str):
    raise CorruptStream(f"header holds {name}, which is not JSON")


def _int(value: Any, where: str, low: int = 0, high: int | None = None) -> int:
    if type(value) is not int or value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise CorruptStream(f"{where} is {_show(value)}, expected an integer {bound}")
    return value


def _show(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, float) or math.isfinite(value) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _checked_header(header: Any, payload_bytes: int, file_bytes: int) -> list[dict]:
    """The tensor entries, every field checked for type and range before anything is decoded."""
    if not isinstance(header, dict):
        raise CorruptStream(f"header is a JSON {type(header).__name__}, not an object")
    if header.get("format") != FORMAT or header.get("version") != VERSION:
        raise CorruptStream(f"unsupported container {_show(header.get('format'))} v{_show(header.get('version'))}")
    entries = header.get("tensors")
    if not isinstance(entries, list) or len(entries) > MAX_TENSORS:
        raise CorruptStream("'tensors' is not a list of at most 100000 entries")
    limit = max(MIN_DECODED_LIMIT, MAX_EXPANSION * file_bytes)
    names, total = set(), 0
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise CorruptStream(f"tensor #{i} is not an object")
        name = entry.get("name")
        if not isinstance(name, str) or not name or name in names:
            raise CorruptStream(f"tensor #{i} has a missing, non-text or repeated name")
        names.add(name)
        where = f"tensor '{name[:60]}'"
        if entry.get("dtype") not in DTYPES and not _known_dtype(entry.get("dtype")):
            raise CorruptStream(f"{where}: dtype {_show(entry.get('dtype'))} is not a numeric type")
        shape = entry.get("shape")
        if not isinstance(shape, list) or len(shape) > 8:
            raise CorruptStream(f"{where}: shape is not a list of at most 8 dimensions")
        elements = math.prod(_int(d, f"{where} dimension", 0, MAX_ELEMENTS) for d in shape)
        if elements > MAX_ELEMENTS:
            raise CorruptStream(f"{where}: declares {elements:,} elements (at most {MAX_ELEMENTS:,})")
        total += elements * np.dtype(entry["dtype"]).itemsize
        if total > limit:
            raise CorruptStream(f"declares {total:,} decoded bytes from a {file_bytes:,}-byte file")
        base = _int(entry.get("base"), f"{where} base", 0, payload_bytes)
        layout = entry.get("layout")
        streams = {"dense": ("values",), "relative": ("gaps", "values"), "csr": ("counts", "columns", "values")}
        if layout not in streams:
            raise CorruptStream(f"{where}: unknown layout {_show(layout)}")
        if layout == "relative":
            _int(entry.get("gap_bits"), f"{where} gap_bits", 1, tensor_codec.MAX_GAP_BITS)
        for key in streams[layout]:
            _check_stream(entry.get(key), f"{where} {key}", payload_bytes - base, 2 * elements + 1)
    return entries


def _known_dtype(text: Any) -> bool:
    if not isinstance(text, str) or len(text) > 8:
        return False
    try:
        dtype = np.dtype(text)
    except (TypeError, ValueError):
        return False
    return dtype.kind in "biuf" and dtype.itemsize <= 8 and dtype.str.lstrip("<>|=") == text.lstrip("<>|=")


def _check_stream(stream: Any, where: str, available: int, max_count: int) -> None:
    if not isinstance(stream, dict):
        raise CorruptStream(f"{where} is not an object")
    coding = stream.get("coding")
    count = _int(stream.get("count"), f"{where} count", 0, max_count)
    _int(stream.get("offset"), f"{where} offset", 0, available)
    size = _int(stream.get("bytes"), f"{where} bytes", 0, available)
    if coding == "fixed":
        width = _int(stream.get("width"), f"{where} width", 1, 64)
        if width * count > 8 * size:
            raise CorruptStream(f"{where}: {count} values of {width} bits do not fit in {size} bytes")
    elif coding == "huffman":
        _int(stream.get("alphabet"), f"{where} alphabet", 1, 1 << 17)
        bits = _int(stream.get("bits"), f"{where} bits", 0, 8 * size)
        if count > bits:
            raise CorruptStream(f"{where}: {count} codes in {bits} bits")
        table = stream.get("table")
        if not isinstance(table, dict):
            raise CorruptStream(f"{where} table is not an object")
        _int(table.get("offset"), f"{where} table offset", 0, available)
        _int(table.get("bytes"), f"{where} table bytes", 0, available)
    elif coding != "raw":
        raise CorruptStream(f"{where}: unknown coding {_show(coding)}")


def read(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EdgecError(f"{path}: cannot read ({exc.strerror})") from exc
    return unpack(data, str(path))
