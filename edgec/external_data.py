"""Models whose weights do not fit in one protobuf (2 GiB): large constants live in a side file.

The protobuf library cannot hold a message over 2 GiB (and this version refuses to even build
one), so for large models every exported ModelProto is a *skeleton*: big initializers are
references into a data file, written next to the .onnx file or into a temporary directory for
onnxruntime, or not written at all when only shapes are needed (shape inference).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import numpy as np
import onnx
import onnx_graphsurgeon as gs

# Weights stay inside the protobuf while all constants together are under this (a margin below
# 2 GiB for the graph itself); tests lower it to run the large-model path on small models.
THRESHOLD = 1 << 30
# Constants smaller than this stay inline even in a large model (shapes, axes, biases).
MIN_EXTERNAL_BYTES = 1024
SKELETON_LOCATION = "__not_written__.data"


def constant_bytes(graph: gs.Graph) -> int:
    from edgec.ir import constants

    return sum(int(c.values.nbytes) for c in constants(graph).values())


def needed(graph: gs.Graph) -> bool:
    return constant_bytes(graph) >= THRESHOLD


@contextmanager
def placeholders(
    graph: gs.Graph, only: Callable[[gs.Constant], bool] | None = None
) -> Iterator[dict[str, gs.Constant]]:
    """Temporarily give every large constant (for which `only` holds, when given) an empty value,
    so gs exports a small proto. Yields the swapped constants by name; their real values come
    back on exit."""
    from edgec.ir import constants

    swapped: dict[str, tuple[gs.Constant, object]] = {}
    for const in constants(graph).values():
        if const.values.nbytes >= MIN_EXTERNAL_BYTES and (only is None or only(const)):
            swapped[const.name] = (const, const._values)  # gs keeps LazyValues or an array here
            const._values = np.empty((0,), dtype=const.values.dtype)
    try:
        yield {name: const for name, (const, _) in swapped.items()}
    finally:
        for const, values in swapped.values():
            const._values = values


def point_outside(proto: onnx.ModelProto, swapped: dict[str, gs.Constant], data: BinaryIO | None, location: str) -> int:
    """Turn the placeholder initializers of an exported skeleton into external references, writing
    their bytes to `data` (or nothing, for a shape-only skeleton). Returns the bytes referenced."""
    from edgec.ir import _all_initializers

    total = 0
    for tensor in _all_initializers(proto.graph):
        const = swapped.get(tensor.name)
        if const is None:
            continue
        values = np.asarray(const.values, order="C")
        del tensor.dims[:]
        tensor.dims.extend(values.shape)
        tensor.ClearField("raw_data")
        offset = 0
        if data is not None:
            offset = data.tell()
            data.write(values.tobytes())
        tensor.data_location = onnx.TensorProto.EXTERNAL
        del tensor.external_data[:]
        for key, value in (("location", location), ("offset", str(offset)), ("length", str(values.nbytes))):
            tensor.external_data.add(key=key, value=value)
        total += values.nbytes
    return total


def save(proto_for, graph: gs.Graph, path: Path) -> list[Path]:
    """Write a large model: `proto_for()` exports the skeleton while placeholders are in place."""
    location = path.name + ".data"
    with placeholders(graph) as swapped:
        proto = proto_for()
    with open(path.with_name(location), "wb") as data:
        point_outside(proto, swapped, data, location)
    onnx.save(proto, str(path))
    return [path, path.with_name(location)]


def skeleton(
    proto_for, graph: gs.Graph, only: Callable[[gs.Constant], bool] | None = None
) -> tuple[onnx.ModelProto, int]:
    """A shape-only skeleton (weights referenced, never written) and the bytes it leaves out."""
    with placeholders(graph, only) as swapped:
        proto = proto_for()
    return proto, point_outside(proto, swapped, None, SKELETON_LOCATION)
