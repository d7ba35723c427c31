"""Resource variables of streaming TFLite models as explicit state inputs and outputs.

A streaming model (microWakeWord, streaming conv nets) keeps state between invocations in
resource variables: VAR_HANDLE names one, READ_VARIABLE reads it, ASSIGN_VARIABLE writes it, and
a CALL_ONCE subgraph assigns the initial values on the first invocation. ONNX graphs are
stateless, so each variable the model writes becomes a pair of ports:

    <variable>:state_in    a model input holding the value before the invocation
    <variable>:state_out   a model output holding the value after it

(<variable> is the VAR_HANDLE's shared name with anything but letters, digits, '_', '.' and '-'
replaced by '_'). The caller feeds state_out back as state_in on the next invocation, starting
from the initial value the CALL_ONCE subgraph assigns, which is evaluated here at import. The
mapping is recorded as JSON under the model metadata key `edgec.state_variables`.

Quantized variables keep their stored type: the ports carry the raw int8/uint8 values, so what
one invocation writes is bit for bit what the next one reads, as in LiteRT.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field

import numpy as np

METADATA_KEY = "edgec.state_variables"
INPUT_SUFFIX, OUTPUT_SUFFIX = ":state_in", ":state_out"
INLINE_VALUES = 4096  # initial values listed in the metadata up to this many elements


@dataclass
class Variable:
    name: str  # the VAR_HANDLE's container/shared name
    initial: np.ndarray | None = None  # stored values (int8 stays int8) from the CALL_ONCE subgraph
    initial_quant: object = None  # Quant of the constant the init subgraph assigned
    initial_source: str = ""
    dtype: np.dtype | None = None
    shape: tuple[int, ...] | None = None
    input: str | None = None  # the ONNX input name, once a READ_VARIABLE needs it
    current: str | None = None  # ONNX value holding the variable now (raw stored values)
    assigned: bool = False
    reads: list[int] = field(default_factory=list)

    @property
    def port(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]", "_", self.name) or "variable"


class State:
    """The variables of one import, keyed by name; resource tensors map to them."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.variables: dict[str, Variable] = {}
        self.handles: dict[int, Variable] = {}  # resource tensor index -> variable
        self.initialized = False

    # --- operators ----------------------------------------------------------------------------

    def call_once(self, op) -> None:
        """Evaluate the init subgraph now: it may only assign constants to variables."""
        ctx = self.ctx
        index = int(op.builtinOptions.initSubgraphIndex) if op.builtinOptions is not None else -1
        subgraphs = ctx.model.subgraphs
        if not 0 < index < len(subgraphs):
            ctx.fail(f"CALL_ONCE names subgraph {index}, which the model does not have")
        graph = subgraphs[index]
        label = graph.name.decode(errors="replace") if graph.name else ""
        source = f"CALL_ONCE subgraph {index}" + (f" ({label})" if label else "")
        handles: dict[int, str] = {}
        from edgec.frontends.tflite import op_name

        for init_op in graph.operators or []:
            name = op_name(ctx.model, init_op)
            if name == "VAR_HANDLE":
                handles[int(init_op.outputs[0])] = _variable_name(init_op)
            elif name == "ASSIGN_VARIABLE":
                handle, value = (int(i) for i in init_op.inputs[:2])
                if handle not in handles:
                    ctx.fail(f"{source}: ASSIGN_VARIABLE writes a resource no VAR_HANDLE made")
                stored = _constant(ctx, graph, value)
                if stored is None:
                    ctx.fail(
                        f"{source}: ASSIGN_VARIABLE of '{handles[handle]}' writes a computed value; only "
                        "constants can be evaluated at import"
                    )
                variable = self._variable(handles[handle])
                variable.initial, variable.initial_source = stored, source
                variable.initial_quant = _quant_of(graph.tensors[value])
            else:
                ctx.fail(
                    f"{source}: {name} in an initialization subgraph is not supported (only VAR_HANDLE "
                    "and ASSIGN_VARIABLE of constants)"
                )
        self.initialized = True

    def var_handle(self, op) -> None:
        self.handles[int(op.outputs[0])] = self._variable(_variable_name(op))

    def read(self, op) -> None:
        ctx = self.ctx
        variable = self._handle(int(op.inputs[0]), "READ_VARIABLE")
        out = int(op.outputs[0])
        dtype, shape = ctx.dtype(out), ctx.shape(out)
        self._typed(variable, dtype, shape, ctx.names[out])
        if variable.current is None:
            variable.input = ctx.fresh(variable.port + INPUT_SUFFIX)
            variable.current = variable.input
        variable.reads.append(out)
        quant = ctx.quant(out)
        if quant is None or dtype.kind == "f":
            ctx.views[(out, False)] = variable.current
            return
        scale, zero_point = ctx.quant_params(out)
        ctx.int8_outputs[out] = variable.current
        ctx.views[(out, False)] = ctx.emit(
            "DequantizeLinear", [variable.current, scale, zero_point], f"{ctx.names[out]}_dq"
        )

    def assign(self, op) -> None:
        ctx = self.ctx
        variable = self._handle(int(op.inputs[0]), "ASSIGN_VARIABLE")
        value = int(op.inputs[1])
        dtype, shape = ctx.dtype(value), ctx.shape(value)
        self._typed(variable, dtype, shape, ctx.names[value])
        variable.current = self._raw(value)
        variable.assigned = True

    # --- the model's extra ports ------------------------------------------------------------------

    def ports(self, make_value_info) -> tuple[list, list, list[dict]]:
        """(state inputs, state outputs, metadata records), in the order the variables appeared."""
        ctx = self.ctx
        inputs, outputs, records = [], [], []
        for variable in self.variables.values():
            if variable.current is None:
                continue  # made but never read or written in the main graph
            if variable.initial is None:
                ctx.fail(f"variable '{variable.name}' is read before any CALL_ONCE subgraph initializes it")
            if not variable.assigned:
                continue  # read-only: its input would always be fed the initial value
            output = ctx.fresh(variable.port + OUTPUT_SUFFIX)
            ctx.emit("Identity", [variable.current], "", output)
            outputs.append(make_value_info(output, variable.dtype, variable.shape))
            if variable.input is not None:
                inputs.append(make_value_info(variable.input, variable.dtype, variable.shape))
            records.append(self._record(variable, output))
        return inputs, outputs, records

    def fold_read_only(self) -> None:
        """A variable the main graph never assigns holds its initial value forever: a constant."""
        for variable in self.variables.values():
            if variable.input is None or variable.assigned or variable.initial is None:
                continue
            values = _reshaped(self.ctx, variable)
            constant = self.ctx.initializer(values, variable.port + "_initial")
            self.ctx.nodes.insert(0, _identity(constant, variable.input))

    def _record(self, variable: Variable, output: str) -> dict:
        initial = np.asarray(variable.initial)
        record = {
            "variable": variable.name,
            "input": variable.input,
            "output": output,
            "shape": list(variable.shape),
            "dtype": str(variable.dtype),
            "initial": {"source": variable.initial_source},
        }
        if variable.input is None:
            record["input"] = None  # written but never read: nothing to feed
        if initial.size and np.all(initial == initial.flat[0]):
            record["initial"]["fill"] = initial.flat[0].item()
        elif initial.size <= INLINE_VALUES:
            record["initial"]["values"] = initial.reshape(variable.shape).tolist()
        else:  # little-endian bytes, C order
            raw = np.ascontiguousarray(initial, variable.dtype.newbyteorder("<")).tobytes()
            record["initial"]["base64"] = base64.b64encode(raw).decode()
        if variable.initial_quant is not None:
            q = variable.initial_quant
            record["initial"]["quantization"] = {"scale": q.scale.tolist(), "zero_point": q.zero_point.tolist()}
        return record

    # --- helpers ----------------------------------------------------------------------------

    def _variable(self, name: str) -> Variable:
        return self.variables.setdefault(name, Variable(name))

    def _handle(self, index: int, op: str) -> Variable:
        variable = self.handles.get(index)
        if variable is None:
            self.ctx.fail(f"{op} reads resource tensor '{self.ctx.names[index]}', which no VAR_HANDLE made")
        return variable

    def _typed(self, variable: Variable, dtype: np.dtype, shape, where: str) -> None:
        if variable.dtype is None:
            variable.dtype, variable.shape = dtype, tuple(shape)
        elif variable.dtype != dtype or tuple(variable.shape) != tuple(shape):
            self.ctx.fail(
                f"variable '{variable.name}' is {variable.dtype}{list(variable.shape)} and '{where}' "
                f"{dtype}{list(shape)}: one variable, one type and shape"
            )
        if variable.initial is not None and variable.initial.size != int(np.prod(variable.shape)):
            self.ctx.fail(
                f"variable '{variable.name}': its initial value has {variable.initial.size} elements "
                f"for shape {list(variable.shape)}"
            )

    def _raw(self, index: int) -> str:
        """Tensor `index` as the variable stores it: quantized tensors as their int8/uint8 values."""
        ctx = self.ctx
        if ctx.quant(index) is None or ctx.dtype(index).kind == "f":
            return ctx.operand(index)
        if ctx.is_constant(index):
            return ctx.initializer(ctx.array(index), f"{ctx.names[index]}_stored")
        if index in ctx.int8_outputs:
            return ctx.int8_outputs[index]
        scale, zero_point = ctx.quant_params(index)
        return ctx.emit("QuantizeLinear", [ctx.operand(index), scale, zero_point], f"{ctx.names[index]}_stored")


def _variable_name(op) -> str:
    options = op.builtinOptions
    container = (options.container or b"").decode(errors="replace") if options is not None else ""
    shared = (options.sharedName or b"").decode(errors="replace") if options is not None else ""
    return f"{container}/{shared}" if container else shared or "variable"


def _constant(ctx, graph, index: int) -> np.ndarray | None:
    """A constant tensor of another subgraph, as stored (flat)."""
    from edgec.frontends.tflite_context import DTYPES

    tensor = graph.tensors[index]
    if not 0 <= tensor.buffer < len(ctx.model.buffers):
        ctx.fail(f"tensor '{tensor.name.decode(errors='replace')}' points past the model's buffers")
    buffer = ctx.model.buffers[tensor.buffer]
    if buffer.offset > 1:
        if not 0 <= int(buffer.size) <= len(ctx.data) - int(buffer.offset):
            ctx.fail(f"tensor '{tensor.name.decode(errors='replace')}': its data lies past the end of the file")
        raw = np.frombuffer(ctx.data, np.uint8, int(buffer.size), int(buffer.offset))
    elif buffer.data is None or len(buffer.data) == 0:
        return None
    else:
        raw = np.asarray(buffer.data, np.uint8)
    dtype = DTYPES.get(tensor.type)
    if dtype is None or raw.size % dtype.itemsize:
        ctx.fail(f"tensor '{tensor.name.decode(errors='replace')}' has no readable constant value")
    return np.frombuffer(raw.tobytes(), dtype.newbyteorder("<")).astype(dtype)


def _quant_of(tensor):
    from edgec.frontends.tflite_context import Quant

    params = tensor.quantization
    if params is None or params.scale is None or len(params.scale) == 0:
        return None
    scale = np.asarray(params.scale, np.float32)
    zero_point = np.zeros(scale.shape, np.int64) if params.zeroPoint is None else np.asarray(params.zeroPoint)
    return Quant(scale, zero_point.astype(np.int64), int(params.quantizedDimension))


def _reshaped(ctx, variable: Variable) -> np.ndarray:
    return np.asarray(variable.initial, variable.dtype).reshape(variable.shape)


def _identity(source: str, output: str):
    from onnx import helper

    return helper.make_node("Identity", [source], [output])


def metadata(records: list[dict]) -> str:
    return json.dumps(records, sort_keys=True)


def initial_state(model) -> dict[str, np.ndarray]:
    """The first value of each state input of an imported model (what its CALL_ONCE subgraph
    assigns), by input name, from the model's metadata: feed these on the first invocation,
    then each invocation's state outputs."""
    values = {}
    for record in json.loads(model.metadata.get(METADATA_KEY, "[]")):
        if record["input"] is None:
            continue
        dtype, shape, initial = np.dtype(record["dtype"]), record["shape"], record["initial"]
        if "fill" in initial:
            array = np.full(shape, initial["fill"], dtype)
        elif "values" in initial:
            array = np.asarray(initial["values"], dtype).reshape(shape)
        else:
            array = np.frombuffer(base64.b64decode(initial["base64"]), dtype.newbyteorder("<"))
            array = array.astype(dtype).reshape(shape)
        values[record["input"]] = array
    return values
