"""Writing .tflite files without TensorFlow: a small builder over LiteRT's generated schema classes.

The flatbuffer object API in `ai_edge_litert.schema_py_generated` (ModelT, SubGraphT, TensorT,
OperatorT, BufferT) is the TFLite schema itself; this module only keeps the bookkeeping a
lowering needs (buffer 0 empty, one opcode entry per builtin and version, tensors by index)
and packs the result with the `TFL3` file identifier.
"""

from __future__ import annotations

from dataclasses import dataclass

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

SCHEMA_VERSION = 3
FILE_IDENTIFIER = b"TFL3"
# Builtin codes above 127 do not fit the deprecated int8 field, which must then hold this value.
PLACEHOLDER_FOR_GREATER_OP_CODES = 127
# BuiltinOperator code -> name (CONV_2D...), for reports and error messages.
OPERATOR_NAMES = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}

TENSOR_TYPES = {
    np.dtype(np.float32): schema.TensorType.FLOAT32,
    np.dtype(np.float16): schema.TensorType.FLOAT16,
    np.dtype(np.int8): schema.TensorType.INT8,
    np.dtype(np.uint8): schema.TensorType.UINT8,
    np.dtype(np.int16): schema.TensorType.INT16,
    np.dtype(np.int32): schema.TensorType.INT32,
    np.dtype(np.int64): schema.TensorType.INT64,
    np.dtype(np.bool_): schema.TensorType.BOOL,
}


@dataclass
class Quantization:
    """real = (q - zero_point) * scale, per tensor (one scale) or per channel along `axis`."""

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int = 0

    def to_schema(self) -> schema.QuantizationParametersT:
        params = schema.QuantizationParametersT()
        params.scale = [float(s) for s in np.atleast_1d(self.scale)]
        params.zeroPoint = [int(z) for z in np.atleast_1d(self.zero_point)]
        params.quantizedDimension = int(self.axis)
        return params


class ModelBuilder:
    """One subgraph: add tensors (constants get their own buffer), operators, then the I/O."""

    def __init__(self, description: str = "edgec"):
        self.model = schema.ModelT()
        self.model.version = SCHEMA_VERSION
        self.model.description = description
        self.model.buffers = [schema.BufferT()]  # buffer 0: the empty buffer every variable uses
        self.model.operatorCodes = []
        self.subgraph = schema.SubGraphT()
        self.subgraph.tensors, self.subgraph.operators = [], []
        self.subgraph.inputs, self.subgraph.outputs = [], []
        self.model.subgraphs = [self.subgraph]
        self._opcodes: dict[tuple[int, int], int] = {}

    def tensor(
        self,
        name: str,
        shape,
        dtype,
        data: np.ndarray | None = None,
        quantization: Quantization | None = None,
        shape_signature=None,
    ) -> int:
        """A tensor's index; `data` makes it a constant (stored little-endian, C order)."""
        dtype = np.dtype(dtype)
        if dtype not in TENSOR_TYPES:
            raise ValueError(f"tensor '{name}': TFLite has no type for {dtype}")
        tensor = schema.TensorT()
        tensor.name = name
        tensor.shape = [int(d) for d in shape]
        tensor.type = TENSOR_TYPES[dtype]
        if shape_signature is not None:
            tensor.shapeSignature = [int(d) for d in shape_signature]
        tensor.buffer = 0
        if data is not None:
            # copy(order="C"), not ascontiguousarray, which turns scalars into 1-element arrays.
            array = np.asarray(data, dtype.newbyteorder("<")).copy(order="C")
            if list(array.shape) != tensor.shape:
                raise ValueError(f"tensor '{name}': data shape {array.shape} != {tensor.shape}")
            buffer = schema.BufferT()
            buffer.data = np.frombuffer(array.tobytes(), np.uint8)
            self.model.buffers.append(buffer)
            tensor.buffer = len(self.model.buffers) - 1
        if quantization is not None:
            tensor.quantization = quantization.to_schema()
        self.subgraph.tensors.append(tensor)
        return len(self.subgraph.tensors) - 1

    def constant(self, name: str, data: np.ndarray, quantization: Quantization | None = None) -> int:
        data = np.asarray(data)
        return self.tensor(name, data.shape, data.dtype, data, quantization)

    def opcode(self, builtin: int, version: int = 1) -> int:
        key = (int(builtin), int(version))
        if key not in self._opcodes:
            code = schema.OperatorCodeT()
            code.builtinCode = key[0]
            code.deprecatedBuiltinCode = min(key[0], PLACEHOLDER_FOR_GREATER_OP_CODES)
            code.version = key[1]
            self.model.operatorCodes.append(code)
            self._opcodes[key] = len(self.model.operatorCodes) - 1
        return self._opcodes[key]

    def operator(self, builtin: int, inputs, outputs, options=None, options_type: int = 0, version: int = 1) -> int:
        """`inputs` may hold -1 for an omitted optional input (e.g. no bias)."""
        op = schema.OperatorT()
        op.opcodeIndex = self.opcode(builtin, version)
        op.inputs = [int(i) for i in inputs]
        op.outputs = [int(o) for o in outputs]
        if options is not None:
            op.builtinOptionsType = options_type
            op.builtinOptions = options
        self.subgraph.operators.append(op)
        return len(self.subgraph.operators) - 1

    def compact(self) -> int:
        """Drop tensors no operator or model port refers to (left by peephole rewrites), and their
        buffers: TFLite Micro plans arena space even for unused tensors. Returns how many."""
        graph = self.subgraph
        used = set(graph.inputs) | set(graph.outputs)
        for op in graph.operators:
            used.update(i for i in list(op.inputs) + list(op.outputs) if i >= 0)
        keep = [i for i in range(len(graph.tensors)) if i in used]
        if len(keep) == len(graph.tensors):
            return 0
        index = {old: new for new, old in enumerate(keep)}
        removed = len(graph.tensors) - len(keep)
        graph.tensors = [graph.tensors[i] for i in keep]
        for op in graph.operators:
            op.inputs = [index[i] if i >= 0 else i for i in op.inputs]
            op.outputs = [index[i] for i in op.outputs]
        graph.inputs = [index[i] for i in graph.inputs]
        graph.outputs = [index[i] for i in graph.outputs]
        # Buffers are the model's: branch subgraphs (IF) keep theirs.
        buffers = sorted({t.buffer for g in self.model.subgraphs for t in g.tensors if t.buffer})
        renumber = {old: new for new, old in enumerate(buffers, start=1)}
        self.model.buffers = [self.model.buffers[0]] + [self.model.buffers[b] for b in buffers]
        for g in self.model.subgraphs:
            for tensor in g.tensors:
                tensor.buffer = renumber.get(tensor.buffer, 0)
        return removed

    def add_subgraph(self, name: str) -> tuple[int, schema.SubGraphT]:
        """A new, empty subgraph (an IF branch); tensors and operators go where `self.subgraph` points."""
        graph = schema.SubGraphT()
        graph.name = name
        graph.tensors, graph.operators, graph.inputs, graph.outputs = [], [], [], []
        self.model.subgraphs.append(graph)
        return len(self.model.subgraphs) - 1, graph

    def set_io(self, inputs, outputs) -> None:
        self.subgraph.inputs = [int(i) for i in inputs]
        self.subgraph.outputs = [int(o) for o in outputs]

    def to_bytes(self) -> bytes:
        builder = flatbuffers.Builder(1024)
        builder.Finish(self.model.Pack(builder), file_identifier=FILE_IDENTIFIER)
        return bytes(builder.Output())
