"""TFLite Micro's memory plan, reproduced: tensor lifetimes and GreedyMemoryPlanner offsets."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, replace
from typing import Mapping, Sequence

from edgec.backends.tflm.reader import Graph

# MicroArenaBufferAlignment(): every planned buffer starts and ends on 16 bytes.
ALIGNMENT = 16


def align(size: int, alignment: int = ALIGNMENT) -> int:
    return (size + alignment - 1) // alignment * alignment


@dataclass(frozen=True)
class Buffer:
    """One planned buffer. Times are TFLM's allocation scopes: 0 before the first operator,
    k while operator k-1 runs; a graph output lives until the last operator's scope."""

    name: str
    bytes: int
    first: int
    last: int
    tensor: int | None = None  # tensor index; None for a kernel's scratch buffer
    offset: int = -1

    @property
    def size(self) -> int:
        return align(self.bytes)

    def overlaps_in_time(self, other: Buffer) -> bool:
        return not (other.first > self.last or self.first > other.last)

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "tensor": self.tensor,
            "bytes": self.bytes,
            "aligned_bytes": self.size,
            "offset": self.offset,
            "first": self.first,
            "last": self.last,
        }


@dataclass
class MemoryPlan:
    buffers: list[Buffer]

    @property
    def peak(self) -> int:
        """Bytes the planned (non-persistent) part of the arena spans."""
        return max((b.offset + b.size for b in self.buffers), default=0)

    def live_bytes(self, time: int) -> int:
        return sum(b.size for b in self.buffers if b.first <= time <= b.last)

    def largest_live_set(self) -> int:
        """A lower bound on any plan: the most bytes alive at one time."""
        return max((self.live_bytes(t) for t in {b.first for b in self.buffers}), default=0)

    def to_json(self) -> dict:
        return {
            "alignment": ALIGNMENT,
            "times": "0 = graph inputs, before the first operator; k = while operator k-1 runs",
            "peak_bytes": self.peak,
            "largest_live_set_bytes": self.largest_live_set(),
            "buffers": [b.to_json() for b in self.buffers],
        }


def requests(graph: Graph, scratch: Mapping[int, Sequence[int]] | None = None) -> list[Buffer]:
    """Buffers to plan, in TFLM's order: every arena tensor by index, then kernel scratch
    buffers (`scratch`: operator index -> requested sizes) in operator order."""
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for index in (*graph.inputs, *graph.outputs):
        first[index] = last[index] = 0
    for step, op in enumerate(graph.operators, start=1):
        for index in op.outputs:
            first[index] = last[index] = step
        for index in op.inputs:
            if index >= 0:  # -1: an omitted optional input
                last[index] = step
    for index in graph.outputs:
        last[index] = len(graph.operators)
    buffers = [
        # Never-referenced tensors still get a slot, at time -1 (as in TFLM), overlapping nothing in use.
        Buffer(t.name, t.bytes, first.get(t.index, -1), last.get(t.index, -1), t.index)
        for t in graph.tensors
        if not t.constant and not t.variable and t.bytes > 0
    ]
    for op_index, sizes in sorted((scratch or {}).items()):
        step = op_index + 1
        op = graph.operators[op_index]
        buffers += [
            Buffer(f"scratch:{op.op}:{op_index}:{n}", size, step, step) for n, size in enumerate(sizes) if size > 0
        ]
    return buffers


def greedy(buffers: Sequence[Buffer]) -> MemoryPlan:
    """GreedyMemoryPlanner: largest first, each at the lowest offset where it fits between the
    buffers already placed that are alive at the same time. TFLM fills its sort array from the
    end and bubble-sorts it stably, so equal sizes go in reverse request order."""
    order = sorted(reversed(range(len(buffers))), key=lambda i: -buffers[i].size)
    placed: list[tuple[int, int, int]] = []  # (offset, placement number, buffer index), by offset
    offsets = [0] * len(buffers)
    for number, i in enumerate(order):
        wanted = buffers[i]
        candidate = 0
        for offset, _, j in placed:
            other = buffers[j]
            if not wanted.overlaps_in_time(other):
                continue
            if offset - candidate >= wanted.size:
                break
            candidate = max(candidate, offset + other.size)
        offsets[i] = candidate
        bisect.insort(placed, (candidate, number, i))  # after equal offsets, as TFLM inserts
    return MemoryPlan([replace(b, offset=o) for b, o in zip(buffers, offsets, strict=True)])
