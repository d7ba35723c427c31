"""Test models for the TFLite frontend: small .tflite files built op by op, and mediapipe's real ones."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from edgec.backends.tflite.flatbuffer import ModelBuilder, Quantization

MEDIAPIPE_VERSION = "0.10.21"
# Where scripts/fetch-mediapipe-models (run by `make test-data`) unpacks the wheel's models.
UNPACKED = Path(__file__).resolve().parents[2] / "build" / "testdata" / f"mediapipe-{MEDIAPIPE_VERSION}"


def mediapipe_model(relative: str) -> Path | None:
    """mediapipe/<relative> from the unpacked wheel, or from an installed mediapipe (found
    without importing it: its import needs numpy<2)."""
    candidates = [UNPACKED / "mediapipe" / relative]
    spec = importlib.util.find_spec("mediapipe")
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / relative for p in spec.submodule_search_locations]
    return next((p for p in candidates if p.is_file()), None)


def q(scale, zero_point=0, axis: int = 0) -> Quantization:
    return Quantization(np.atleast_1d(np.asarray(scale, np.float32)), np.atleast_1d(zero_point), axis)


def interpret(model: bytes | Path, feeds: list[np.ndarray]) -> list[np.ndarray]:
    """Outputs of LiteRT's interpreter, in the model's output order."""
    source = {"model_path": str(model)} if isinstance(model, Path) else {"model_content": model}
    interpreter = Interpreter(**source)
    interpreter.allocate_tensors()
    for detail, value in zip(interpreter.get_input_details(), feeds, strict=True):
        interpreter.set_tensor(detail["index"], value)
    interpreter.invoke()
    return [interpreter.get_tensor(d["index"]).copy() for d in interpreter.get_output_details()]


class Net:
    """A one-subgraph model: declare inputs, constants and ops; `to_bytes` asks the interpreter
    for every computed tensor's shape, so a test states shapes only where the model does."""

    def __init__(self, seed: int = 0):
        self.builder = ModelBuilder("edgec-test")
        self.rng = np.random.default_rng(seed)
        self.inputs: list[int] = []
        self.ranges: list[tuple[float, float]] = []

    def _name(self, base: str) -> str:
        return f"{base}{len(self.builder.subgraph.tensors)}"

    def input(self, shape, dtype=np.float32, quant=None, low: float = -2.0, high: float = 2.0) -> int:
        self.inputs.append(self.builder.tensor(self._name("input"), shape, dtype, quantization=quant))
        self.ranges.append((low, high))
        return self.inputs[-1]

    def const(self, values, dtype=np.float32, quant=None) -> int:
        return self.builder.constant(self._name("const"), np.asarray(values, dtype), quant)

    def random(self, shape, scale: float = 1.0) -> int:
        return self.const(self.rng.standard_normal(shape) * scale)

    def op(self, builtin: str, inputs, options=None, dtype=np.float32, quant=None, shape=(1,), **fields) -> int:
        """`options` names the schema table (e.g. "Conv2DOptions"); `fields` set its members.
        `shape` is a placeholder, except for kernels that check the rank they are given (SLICE)."""
        out = self.builder.tensor(self._name(builtin.lower()), shape, dtype, quantization=quant)
        table, kind = None, 0
        if options is not None:
            table, kind = getattr(schema, options + "T")(), getattr(schema.BuiltinOptions, options)
            for key, value in fields.items():
                setattr(table, key, value)
        self.builder.operator(getattr(schema.BuiltinOperator, builtin), inputs, [out], table, kind)
        return out

    def to_bytes(self, outputs) -> bytes:
        self.builder.set_io(self.inputs, outputs)
        # Without the XNNPACK delegate: tensors inside a delegated partition keep their placeholder shapes.
        plain = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        interpreter = Interpreter(model_content=self.builder.to_bytes(), experimental_op_resolver_type=plain)
        interpreter.allocate_tensors()
        tensors = self.builder.subgraph.tensors
        for detail in interpreter.get_tensor_details():
            if detail["index"] < len(tensors) and tensors[detail["index"]].buffer == 0:
                tensors[detail["index"]].shape = [int(d) for d in detail["shape"]]
        return self.builder.to_bytes()

    def feeds(self, seed: int = 1) -> list[np.ndarray]:
        rng = np.random.default_rng(seed)
        feeds = []
        for index, (low, high) in zip(self.inputs, self.ranges):
            tensor = self.builder.subgraph.tensors[index]
            dtype = {v: k for k, v in _TYPES.items()}[tensor.type]
            values = rng.uniform(low, high, tensor.shape)
            if np.issubdtype(dtype, np.integer):
                info = np.iinfo(dtype)
                values = np.clip(np.round(values), info.min, info.max)
            feeds.append(values.astype(dtype))
        return feeds


_TYPES = {
    np.dtype(np.float32): schema.TensorType.FLOAT32,
    np.dtype(np.int8): schema.TensorType.INT8,
    np.dtype(np.uint8): schema.TensorType.UINT8,
    np.dtype(np.int32): schema.TensorType.INT32,
}


# --- resource variables (streaming models) ----------------------------------------------------------


def resource_tensor(subgraph: schema.SubGraphT, name: str) -> int:
    """A RESOURCE tensor (what VAR_HANDLE makes): no buffer, no data, shape []."""
    tensor = schema.TensorT()
    tensor.name, tensor.shape, tensor.type, tensor.buffer = name, [], schema.TensorType.RESOURCE, 0
    subgraph.tensors.append(tensor)
    return len(subgraph.tensors) - 1


def var_handle(builder: ModelBuilder, subgraph: schema.SubGraphT, shared_name: str) -> int:
    handle = resource_tensor(subgraph, f"{shared_name}_handle{len(subgraph.tensors)}")
    options = schema.VarHandleOptionsT()
    options.container, options.sharedName = b"", shared_name.encode()
    op = schema.OperatorT()
    op.opcodeIndex = builder.opcode(schema.BuiltinOperator.VAR_HANDLE)
    op.inputs, op.outputs = [], [handle]
    op.builtinOptionsType, op.builtinOptions = schema.BuiltinOptions.VarHandleOptions, options
    subgraph.operators.append(op)
    return handle


def init_subgraph(net: "Net", values: dict[str, tuple[np.ndarray, Quantization | None]]) -> int:
    """A second subgraph assigning each variable its constant initial value (what CALL_ONCE runs);
    the main subgraph calls it first. Returns the subgraph's index."""
    builder = net.builder
    init = schema.SubGraphT()
    init.name, init.tensors, init.operators, init.inputs, init.outputs = b"Init", [], [], [], []
    for name, (array, quant) in values.items():
        handle = var_handle(builder, init, name)
        main = builder.subgraph
        builder.subgraph = init  # builder.constant appends to the current subgraph
        value = builder.constant(f"{name}_initial", np.asarray(array), quant)
        builder.subgraph = main
        op = schema.OperatorT()
        op.opcodeIndex = builder.opcode(schema.BuiltinOperator.ASSIGN_VARIABLE)
        op.inputs, op.outputs = [handle, value], []
        init.operators.append(op)
    builder.model.subgraphs.append(init)
    index = len(builder.model.subgraphs) - 1
    call = schema.OperatorT()
    call.opcodeIndex = builder.opcode(schema.BuiltinOperator.CALL_ONCE)
    call.inputs, call.outputs = [], []
    options = schema.CallOnceOptionsT()
    options.initSubgraphIndex = index
    call.builtinOptionsType, call.builtinOptions = schema.BuiltinOptions.CallOnceOptions, options
    builder.subgraph.operators.insert(0, call)
    return index


def read_variable(net: "Net", handle: int, shape, dtype=np.float32, quant=None) -> int:
    return net.op("READ_VARIABLE", [handle], dtype=dtype, quant=quant, shape=shape)


def assign_variable(net: "Net", handle: int, value: int) -> None:
    op = schema.OperatorT()
    op.opcodeIndex = net.builder.opcode(schema.BuiltinOperator.ASSIGN_VARIABLE)
    op.inputs, op.outputs = [handle, value], []
    net.builder.subgraph.operators.append(op)


def interpret_stream(model: bytes, steps: list[list[np.ndarray]]) -> list[list[np.ndarray]]:
    """Outputs of consecutive invocations of one interpreter (its variables persist between them)."""
    interpreter = Interpreter(model_content=model)
    interpreter.allocate_tensors()
    results = []
    for feeds in steps:
        for detail, value in zip(interpreter.get_input_details(), feeds, strict=True):
            interpreter.set_tensor(detail["index"], value)
        interpreter.invoke()
        results.append([interpreter.get_tensor(d["index"]).copy() for d in interpreter.get_output_details()])
    return results
