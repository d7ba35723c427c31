"""One weight tensor as entropy-coded streams: dense, relative-indexed sparse, or CSR, whichever is smallest.

Symbols are the entries of an integer tensor (weight-sharing indices) or the raw bits of a float
tensor's nonzeros. Sparse layouts skip the entries whose bits are all zero (pruned weights, or
the index of a pruned weight's zero centroid), so decoding restores every bit exactly.

* dense: every entry, in order.
* relative (Deep Compression): for each nonzero, the gap to the previous one in `gap_bits`
  bits; a gap too long for them is bridged by filler entries (gap 2^b, value zero).
* csr: per row (axis 0) the count of nonzeros, then their column indices in fixed width.

Integer values and gaps are Huffman coded (or fixed width, with coding="fixed"); float values
are stored raw.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgec.compress import bitstream
from edgec.compress.bitstream import CorruptStream

LAYOUTS = ("dense", "relative", "csr")
MAX_GAP_BITS = 12
MAX_SYMBOL = (1 << 16) - 1  # integer tensors beyond this are stored as raw values


@dataclass
class Encoded:
    """A tensor's header (JSON-ready) and its payload bytes."""

    header: dict
    payload: bytes
    sizes: dict = field(default_factory=dict)  # bytes per stream, for reports


def _zero_mask(array: np.ndarray) -> np.ndarray:
    """Entries whose bits are all zero (not -0.0, which a sparse layout could not restore)."""
    flat = np.ascontiguousarray(array).reshape(-1)
    return flat.view(np.dtype(f"u{flat.dtype.itemsize}")) == 0


def _symbolic(array: np.ndarray) -> bool:
    return np.issubdtype(array.dtype, np.integer) and array.size > 0 and 0 <= array.min() and array.max() <= MAX_SYMBOL


# --- sizing: how many bytes each layout would take, without encoding it -------------------------


def _int_stream_bytes(values: np.ndarray, coding: str) -> int:
    if values.size == 0:
        return 0
    if coding == "fixed":
        return (bitstream.width_for(int(values.max())) * values.size + 7) // 8
    counts = np.bincount(values)
    lengths = bitstream.code_lengths(counts)
    table = (len(counts) * 4 + 7) // 8
    return table + (int((counts * lengths).sum()) + 7) // 8


def _value_bytes(values: np.ndarray, symbolic: bool, coding: str) -> int:
    return _int_stream_bytes(values.astype(np.int64), coding) if symbolic else values.nbytes


def _relative_entries(positions: np.ndarray, values: np.ndarray, gap_bits: int):
    """(gaps, values) with filler entries, for nonzeros at `positions`."""
    span = 1 << gap_bits
    distance = np.diff(positions, prepend=-1)  # >= 1
    fillers = (distance - 1) // span
    total = int(fillers.sum()) + positions.size
    gaps = np.full(total, span - 1, np.int64)
    out_values = np.zeros(total, values.dtype)
    real = np.cumsum(fillers + 1) - 1
    gaps[real] = (distance - 1) % span
    out_values[real] = values
    return gaps, out_values


def _plans(array: np.ndarray, coding: str):
    """(bytes, layout, parameter) for every candidate layout."""
    flat = np.ascontiguousarray(array).reshape(-1)
    symbolic = _symbolic(array)
    nonzero = ~_zero_mask(array)
    positions = np.flatnonzero(nonzero)
    plans = [(_value_bytes(flat, symbolic, coding), "dense", 0)]
    if positions.size < flat.size:
        nz_values = flat[positions]
        for gap_bits in range(1, MAX_GAP_BITS + 1):
            gaps, values = _relative_entries(positions, nz_values, gap_bits)
            size = _value_bytes(values, symbolic, coding) + (
                _int_stream_bytes(gaps, coding) if coding == "huffman" else (gap_bits * gaps.size + 7) // 8
            )
            plans.append((size, "relative", gap_bits))
        if array.ndim >= 2:
            rows, cols = array.shape[0], flat.size // array.shape[0]
            count_bits, col_bits = bitstream.width_for(cols), bitstream.width_for(cols - 1)
            size = _value_bytes(nz_values, symbolic, coding) + (rows * count_bits + positions.size * col_bits + 14) // 8
            plans.append((size, "csr", 0))
    return plans


# --- encoding -----------------------------------------------------------------------------------


class _Writer:
    def __init__(self):
        self.parts: list[bytes] = []
        self.offset = 0
        self.sizes: dict[str, int] = {}

    def add(self, name: str, data: bytes) -> dict:
        where = {"offset": self.offset, "bytes": len(data)}
        self.parts.append(data)
        self.offset += len(data)
        self.sizes[name] = self.sizes.get(name, 0) + len(data)
        return where

    def ints(self, name: str, values: np.ndarray, coding: str, width: int | None = None) -> dict:
        values = np.asarray(values, np.int64)
        if coding == "fixed" or values.size == 0:
            width = width or bitstream.width_for(int(values.max()) if values.size else 0)
            return {
                "coding": "fixed",
                "width": width,
                "count": int(values.size),
                **self.add(name, bitstream.pack_fixed(values, width)),
            }
        lengths = bitstream.code_lengths(np.bincount(values))
        table = self.add(name, bitstream.pack_lengths(lengths))
        data, nbits = bitstream.encode(values, lengths)
        return {
            "coding": "huffman",
            "alphabet": int(lengths.size),
            "table": table,
            "count": int(values.size),
            "bits": nbits,
            **self.add(name, data),
        }

    def values(self, values: np.ndarray, symbolic: bool, coding: str) -> dict:
        if symbolic:
            return self.ints("values", values, coding)
        raw = np.ascontiguousarray(values).tobytes()
        return {"coding": "raw", "count": int(values.size), **self.add("values", raw)}


def encode(array: np.ndarray, coding: str = "huffman", layout: str | None = None) -> Encoded:
    """The smallest layout (or `layout`) for `array`; decode(header, payload) restores it bit for bit."""
    array = np.asarray(array)
    plans = [p for p in _plans(array, coding) if layout in (None, p[1])]
    if not plans:
        raise ValueError(f"layout '{layout}' does not apply to this tensor")
    _, chosen, gap_bits = min(plans, key=lambda p: p[0])
    flat = np.ascontiguousarray(array).reshape(-1)
    symbolic = _symbolic(array)
    writer = _Writer()
    header = {"dtype": array.dtype.str, "shape": list(array.shape), "layout": chosen}
    if chosen == "dense":
        header["values"] = writer.values(flat, symbolic, coding)
    else:
        positions = np.flatnonzero(~_zero_mask(array))
        if chosen == "relative":
            gaps, values = _relative_entries(positions, flat[positions], gap_bits)
            header["gap_bits"] = gap_bits
            header["gaps"] = writer.ints("positions", gaps, coding, width=gap_bits)
            header["values"] = writer.values(values, symbolic, coding)
        else:
            rows, cols = array.shape[0], flat.size // array.shape[0]
            header["counts"] = writer.ints(
                "positions", np.bincount(positions // cols, minlength=rows), "fixed", bitstream.width_for(cols)
            )
            header["columns"] = writer.ints("positions", positions % cols, "fixed", bitstream.width_for(cols - 1))
            header["values"] = writer.values(flat[positions], symbolic, coding)
    return Encoded(header, b"".join(writer.parts), writer.sizes)


# --- decoding -----------------------------------------------------------------------------------


def _slice(payload: bytes, where: dict) -> bytes:
    start, size = int(where["offset"]), int(where["bytes"])
    if start < 0 or size < 0 or start + size > len(payload):
        raise CorruptStream("a stream points past the end of its payload")
    return payload[start : start + size]


def _read_ints(payload: bytes, stream: dict) -> np.ndarray:
    count = int(stream["count"])
    if stream["coding"] == "fixed":
        return bitstream.unpack_fixed(_slice(payload, stream), int(stream["width"]), count)
    lengths = bitstream.unpack_lengths(_slice(payload, stream["table"]), int(stream["alphabet"]))
    return bitstream.decode(_slice(payload, stream), int(stream["bits"]), count, lengths)


def _read_values(payload: bytes, stream: dict, dtype: np.dtype) -> np.ndarray:
    if stream["coding"] == "raw":
        data = _slice(payload, stream)
        if len(data) != int(stream["count"]) * dtype.itemsize:
            raise CorruptStream("raw values do not match their count")
        return np.frombuffer(data, dtype).copy()
    values = _read_ints(payload, stream)
    if values.size and (values.min() < 0 or values.max() > np.iinfo(dtype).max):
        raise CorruptStream("a decoded symbol does not fit the tensor's type")
    return values.astype(dtype)


def decode(header: dict, payload: bytes) -> np.ndarray:
    dtype = np.dtype(header["dtype"])
    shape = tuple(int(d) for d in header["shape"])
    size = int(np.prod(shape, dtype=np.int64))
    layout = header["layout"]
    if layout == "dense":
        flat = _read_values(payload, header["values"], dtype)
        if flat.size != size:
            raise CorruptStream(f"{flat.size} values for a tensor of {size}")
        return flat.reshape(shape)
    flat = np.zeros(size, dtype)
    values = _read_values(payload, header["values"], dtype)
    if layout == "relative":
        gaps = _read_ints(payload, header["gaps"])
        positions = np.cumsum(gaps + 1) - 1
    elif layout == "csr":
        counts = _read_ints(payload, header["counts"])
        columns = _read_ints(payload, header["columns"])
        rows = counts.size
        if rows != shape[0] or counts.sum() != columns.size:
            raise CorruptStream("CSR counts do not match the tensor")
        positions = np.repeat(np.arange(rows), counts) * (size // max(rows, 1)) + columns
    else:
        raise CorruptStream(f"unknown layout '{layout}'")
    if positions.size != values.size or (positions.size and (positions.max() >= size or positions.min() < 0)):
        raise CorruptStream("sparse positions fall outside the tensor")
    flat[positions] = values
    return flat.reshape(shape)
