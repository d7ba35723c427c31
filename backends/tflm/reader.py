"""What TFLite Micro sees in a .tflite flatbuffer: tensors with byte sizes, operators, graph I/O."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ai_edge_litert import schema_py_generated as schema

from edgec.backends.tflite.flatbuffer import OPERATOR_NAMES
from edgec.errors import EdgecError

TYPE_NAMES = {code: name for name, code in vars(schema.TensorType).items() if not name.startswith("_")}
# Bits per element; sub-byte types count packed, as the flatbuffer stores them.
TYPE_BITS = {
    "FLOAT32": 32, "FLOAT16": 16, "BFLOAT16": 16, "FLOAT64": 64, "INT32": 32, "UINT32": 32,
    "INT64": 64, "UINT64": 64, "INT16": 16, "UINT16": 16, "INT8": 8, "UINT8": 8, "BOOL": 8,
    "INT4": 4, "UINT4": 4, "INT2": 2, "COMPLEX64": 64, "COMPLEX128": 128,
    "FLOAT8_E4M3FN": 8, "FLOAT8_E5M2": 8, "RESOURCE": 0, "VARIANT": 0,
}  # fmt: skip


@dataclass(frozen=True)
class Tensor:
    index: int
    name: str
    type: str  # schema TensorType name, e.g. "FLOAT32", "INT8"
    shape: tuple[int, ...]
    bytes: int
    constant: bool  # its data lives in the flatbuffer (flash), not in the arena
    variable: bool = False
    channels: int = 1  # quantization scales: > 1 for per-channel (per-axis) tensors


@dataclass(frozen=True)
class Operator:
    index: int
    op: str  # schema BuiltinOperator name, e.g. "CONV_2D"; "CUSTOM:<code>" for custom ops
    inputs: tuple[int, ...]  # -1 marks an omitted optional input
    outputs: tuple[int, ...]
    options: object = None  # the schema's *OptionsT object, when the operator has one


@dataclass
class Graph:
    """The first (main) subgraph: TFLM's memory plan and op resolver only need this one."""

    tensors: list[Tensor]
    operators: list[Operator]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    subgraphs: int = 1
    ops: list[str] = field(default_factory=list)  # distinct operator names, first use first

    def tensor(self, index: int) -> Tensor:
        return self.tensors[index]


def read(data: bytes) -> Graph:
    """Parse a .tflite flatbuffer (any tensor types and quantization) into a `Graph`."""
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise EdgecError("tflm: not a .tflite flatbuffer (no TFL3 identifier)")
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    if not model.subgraphs:
        raise EdgecError("tflm: the flatbuffer has no subgraph")
    subgraph = model.subgraphs[0]
    buffers = model.buffers or []
    tensors = [_tensor(i, t, buffers) for i, t in enumerate(subgraph.tensors or [])]
    operators = [_operator(i, op, model.operatorCodes) for i, op in enumerate(subgraph.operators or [])]
    return Graph(
        tensors=tensors,
        operators=operators,
        inputs=tuple(int(i) for i in _ints(subgraph.inputs)),
        outputs=tuple(int(i) for i in _ints(subgraph.outputs)),
        subgraphs=len(model.subgraphs),
        ops=list(dict.fromkeys(op.op for op in operators)),
    )


def _tensor(index: int, tensor, buffers) -> Tensor:
    type_name = TYPE_NAMES.get(tensor.type, f"TYPE_{tensor.type}")
    shape = tuple(int(d) for d in _ints(tensor.shape))
    count = math.prod(shape)
    buffer = buffers[tensor.buffer] if 0 <= tensor.buffer < len(buffers) else None
    constant = buffer is not None and buffer.data is not None and len(buffer.data) > 0
    scales = tensor.quantization.scale if tensor.quantization is not None else None
    return Tensor(
        index=index,
        name=_text(tensor.name),
        type=type_name,
        shape=shape,
        bytes=(count * TYPE_BITS.get(type_name, 32) + 7) // 8,
        constant=constant,
        variable=bool(tensor.isVariable),
        channels=len(scales) if scales is not None and len(scales) > 0 else 1,
    )


def _operator(index: int, op, codes) -> Operator:
    code = codes[op.opcodeIndex]
    # Codes above 127 live only in builtinCode; older files fill only the deprecated field.
    builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
    name = OPERATOR_NAMES.get(builtin, f"BUILTIN_{builtin}")
    if name == "CUSTOM":
        name = f"CUSTOM:{_text(code.customCode)}"
    return Operator(
        index=index,
        op=name,
        inputs=tuple(int(i) for i in _ints(op.inputs)),
        outputs=tuple(int(i) for i in _ints(op.outputs)),
        options=op.builtinOptions,
    )


def _ints(values) -> list:
    return [] if values is None else list(values)


def _text(value) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
