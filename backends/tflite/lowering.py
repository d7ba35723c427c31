"""ONNX IR (NCHW) -> TFLite float32 (NHWC): the lowering context and the driver.

Activations of rank 4 live in NHWC inside the TFLite graph; each lowered tensor remembers
whether it was transposed (`nhwc`), so op lowerings convert weights and attributes instead of
inserting transposes. Only the model's 4-D inputs and outputs get a TRANSPOSE, so callers
still feed and read NCHW.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs
from ai_edge_litert import schema_py_generated as schema

from edgec import ir
from edgec.backends.tflite.flatbuffer import ModelBuilder
from edgec.errors import EdgecError

NCHW_TO_NHWC = (0, 2, 3, 1)
NHWC_TO_NCHW = (0, 3, 1, 2)


def stored_axis(axis: int, rank: int, nhwc: bool) -> int:
    """Where ONNX axis `axis` of a tensor lives in its TFLite storage."""
    axis %= rank
    return NCHW_TO_NHWC.index(axis) if nhwc else axis


@dataclass
class Lowered:
    index: int  # tensor index in the TFLite subgraph
    shape: tuple[int, ...]  # the ONNX (logical) shape
    nhwc: bool = False  # stored transposed from NCHW


@dataclass
class Context:
    builder: ModelBuilder
    values: dict[str, Lowered] = field(default_factory=dict)
    count: int = 0

    def name(self, base: str) -> str:
        self.count += 1
        return f"{base}:{self.count}"

    def get(self, tensor: gs.Tensor) -> Lowered:
        if isinstance(tensor, gs.Constant):
            if tensor.name not in self.values:
                values = np.asarray(tensor.values)
                self.values[tensor.name] = Lowered(self.builder.constant(tensor.name, values), values.shape)
            return self.values[tensor.name]
        return self.values[tensor.name]

    def new(self, tensor: gs.Variable, nhwc: bool) -> Lowered:
        """The TFLite tensor for an ONNX output (shape from shape inference)."""
        shape = tuple(int(d) for d in tensor.shape)
        stored = tuple(shape[i] for i in NCHW_TO_NHWC) if nhwc else shape
        lowered = Lowered(self.builder.tensor(tensor.name, stored, np.dtype(tensor.dtype)), shape, nhwc)
        self.values[tensor.name] = lowered
        return lowered

    def temporary(self, shape, dtype=np.float32) -> int:
        return self.builder.tensor(self.name("tmp"), shape, dtype)

    def transpose(self, index: int, shape, perm, out: int | None = None) -> int:
        """A TRANSPOSE of tensor `index` (stored with `shape`) into `out`, or a new tensor."""
        if out is None:
            out = self.temporary([shape[p] for p in perm])
        self.builder.operator(
            schema.BuiltinOperator.TRANSPOSE,
            [index, self.builder.constant(self.name("perm"), np.asarray(perm, np.int32))],
            [out],
            schema.TransposeOptionsT(),
            schema.BuiltinOptions.TransposeOptions,
        )
        return out

    def constant_in_layout(self, name: str, values: np.ndarray, nhwc: bool) -> int:
        """A constant operand next to activations stored NHWC: left-padded to rank 4 (NumPy
        broadcasting) and permuted like them."""
        values = np.asarray(values)
        if nhwc:
            values = values.reshape((1,) * (4 - values.ndim) + values.shape).transpose(NCHW_TO_NHWC)
        return self.builder.constant(self.name(name), values.copy(order="C"))

    def pad(self, source: int, paddings: np.ndarray, value: float, out: int) -> None:
        """PAD with zeros, or PADV2 with another fill value; `paddings` is (rank, 2) in stored order."""
        inputs = [source, self.builder.constant(self.name("paddings"), np.asarray(paddings, np.int32))]
        if value == 0.0:
            self.builder.operator(
                schema.BuiltinOperator.PAD, inputs, [out], schema.PadOptionsT(), schema.BuiltinOptions.PadOptions
            )
            return
        inputs.append(self.builder.constant(self.name("fill"), np.array(value, np.float32)))
        self.builder.operator(
            schema.BuiltinOperator.PADV2, inputs, [out], schema.PadV2OptionsT(), schema.BuiltinOptions.PadV2Options
        )

    def as_nhwc(self, value: Lowered) -> int:
        """A 4-D tensor in NHWC (a TRANSPOSE when it is stored in ONNX layout)."""
        if value.nhwc:
            return value.index
        if len(value.shape) != 4:
            raise EdgecError(f"tflite: expected a 4-D activation, got shape {value.shape}")
        return self.transpose(value.index, value.shape, NCHW_TO_NHWC)

    def as_nchw(self, value: Lowered) -> int:
        """The tensor in ONNX layout (a TRANSPOSE when it is stored NHWC)."""
        if not value.nhwc:
            return value.index
        return self.transpose(value.index, [value.shape[i] for i in NCHW_TO_NHWC], NHWC_TO_NCHW)


def _fix_batch(graph: gs.Graph) -> None:
    """A dynamic leading (batch) dimension becomes 1: TFLite kernels are planned for static
    shapes (the interpreter can be resized later); intermediate shapes are inferred again."""
    changed = False
    for tensor in graph.inputs:
        if tensor.shape and not isinstance(tensor.shape[0], int) and all(isinstance(d, int) for d in tensor.shape[1:]):
            tensor.shape = [1, *tensor.shape[1:]]
            changed = True
    if changed:
        inputs = {id(t) for t in graph.inputs}
        for tensor in graph.tensors().values():
            if isinstance(tensor, gs.Variable) and id(tensor) not in inputs:
                tensor.shape = None


def lower(model: ir.Model) -> bytes:
    """A .tflite flatbuffer computing what `model` computes, for static float32 graphs."""
    from edgec.backends.tflite.ops import LOWERINGS

    graph = model.copy().graph  # the batch fix and shape inference stay out of the caller's IR
    _fix_batch(graph)
    ir.infer_shapes(graph)
    unsupported = sorted({f"{n.name or '?'} ({n.op})" for n in graph.nodes if n.op not in LOWERINGS})
    if unsupported:
        raise EdgecError(f"tflite: no lowering for {len(unsupported)} nodes: {', '.join(unsupported[:10])}")
    for tensor in graph.inputs + graph.outputs:
        if tensor.shape is None or not all(isinstance(d, int) for d in tensor.shape):
            raise EdgecError(f"tflite: '{tensor.name}' needs a static shape (use --input-shape)")
    ctx = Context(ModelBuilder())
    inputs = []
    for tensor in graph.inputs:
        shape = tuple(tensor.shape)
        index = ctx.builder.tensor(tensor.name, shape, np.dtype(tensor.dtype))
        inputs.append(index)
        if len(shape) == 4:  # NCHW in, NHWC inside
            ctx.values[tensor.name] = Lowered(ctx.transpose(index, shape, NCHW_TO_NHWC), shape, nhwc=True)
        else:
            ctx.values[tensor.name] = Lowered(index, shape)
    for node in graph.nodes:
        LOWERINGS[node.op](ctx, node)
    outputs = []
    tensors = ctx.builder.subgraph.tensors
    for tensor in graph.outputs:
        value = ctx.values[tensor.name]
        if value.nhwc:  # the NCHW copy carries the ONNX name, callers look outputs up by it
            tensors[value.index].name = f"{tensor.name}:nhwc"
            index = ctx.as_nchw(value)
            tensors[index].name = tensor.name
            outputs.append(index)
        else:
            outputs.append(value.index)
    ctx.builder.set_io(inputs, outputs)
    return ctx.builder.to_bytes()
