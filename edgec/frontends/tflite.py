"""TFLite frontend: a .tflite flatbuffer (float, or int8/uint8 quantized) becomes ONNX IR."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
from collections import Counter
from pathlib import Path

from onnx import helper

from edgec import ir
from edgec.errors import EdgecError, ModelLoadError

# The opset the torch frontend exports too: every backend edgec lowers to reads it.
OPSET = 17
INSTALL_HINT = ".tflite models need the tflite extra: pip install 'edgec[tflite]' (ai-edge-litert)"
FILE_IDENTIFIER = b"TFL3"
FRONTEND_KEY = "edgec.frontend"  # metadata: which frontend made the IR
MALFORMED = (AttributeError, TypeError, IndexError, ValueError, KeyError, UnicodeDecodeError, OverflowError)


def is_tflite(path: Path) -> bool:
    """A .tflite name, or the TFLite file identifier at bytes 4..8 of the flatbuffer."""
    if path.suffix == ".tflite":
        return True
    with open(path, "rb") as f:
        return f.read(8)[4:8] == FILE_IDENTIFIER


def load(path: str | os.PathLike, input_shapes: dict | None = None) -> ir.Model:
    path = Path(path)
    return from_bytes(path.read_bytes(), source=str(path), input_shapes=input_shapes)


def from_bytes(data: bytes, source: str = "<memory>", input_shapes: dict | None = None) -> ir.Model:
    """Subgraph 0 of a TFLite model as an ONNX graph with the same input and output names,
    layouts and dtypes (int8 inputs stay int8: DequantizeLinear follows them). `input_shapes`
    (name -> shape) sets the dimensions a model leaves dynamic (shape signature -1), which the
    file only holds placeholders for: LiteRT's interpreter propagates them to every tensor."""
    if importlib.util.find_spec("ai_edge_litert") is None:
        raise EdgecError(INSTALL_HINT)
    from edgec.frontends.tflite_context import Context
    from edgec.frontends.tflite_ops import CONVERTERS

    model = _parse(data, source)
    if input_shapes:
        _resize(model, data, source, input_shapes)
    ops = [op_name(model, op) for op in model.subgraphs[0].operators or []]
    unsupported = Counter(name for name in ops if name not in CONVERTERS)
    if unsupported:
        listed = ", ".join(f"{name} x{count}" for name, count in sorted(unsupported.items()))
        raise ModelLoadError(f"{source}: TFLite operators with no ONNX conversion: {listed}")
    ctx = Context(model, data, source)
    ctx.check_quantization(_arithmetic_tensors(ctx.graph, ops))
    inputs = [_graph_input(ctx, int(i)) for i in _listed(ctx.graph.inputs)]
    for index, (name, op) in enumerate(zip(ops, ctx.graph.operators or [])):
        try:
            CONVERTERS[name](ctx, op)
        except MALFORMED as exc:
            # What a converter reads is the file's own fields: missing options, a None list, a
            # wrong count of operands or values make a malformed model, not an edgec bug.
            outputs = [ctx.names[int(i)] for i in (op.outputs if op.outputs is not None else []) if 0 <= i]
            detail = str(exc).strip().splitlines()[0][:100] if str(exc).strip() else ""
            what = f"operator #{index} {name} ({', '.join(outputs)[:200] or 'no outputs'})"
            what = "".join(c if c.isprintable() else "?" for c in what)
            raise ModelLoadError(f"{source}: {what} is malformed: {type(exc).__name__}: {detail}") from exc
    outputs = [_graph_output(ctx, int(i)) for i in _listed(ctx.graph.outputs)]
    # Resource variables: state in after the model's inputs, state out after its outputs.
    ctx.state.fold_read_only()
    state_inputs, state_outputs, variables = ctx.state.ports(_value_info)
    graph_name = ctx.graph.name.decode(errors="replace") if ctx.graph.name else Path(source).stem
    graph = helper.make_graph(
        ctx.nodes, graph_name or "tflite", inputs + state_inputs, outputs + state_outputs, ctx.initializers
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edgec-tflite")
    imported = ir.from_proto(proto, source=source)
    imported.graph.cleanup()  # views and Q/DQ made for a consumer that never came
    # Its 4-D inputs and outputs are TFLite's (NHWC) tensors: the TFLite backend keeps them so.
    imported.metadata[FRONTEND_KEY] = "tflite"
    if variables:
        from edgec.frontends.tflite_state import METADATA_KEY, metadata

        imported.metadata[METADATA_KEY] = metadata(variables)
    return imported


def _resize(model, data: bytes, source: str, input_shapes: dict) -> None:
    """Fix the dynamic input dimensions to `input_shapes` and write every tensor's resulting
    shape into `model`, as LiteRT's interpreter computes them (after one run on zeros, for
    tensors whose shapes are only known then)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    graph = model.subgraphs[0]
    by_name = {(graph.tensors[i].name or b"").decode(errors="replace"): int(i) for i in _listed(graph.inputs)}
    unknown = sorted(set(input_shapes) - set(by_name))
    if unknown:
        raise ModelLoadError(
            f"{source}: --input-shape names {', '.join(unknown)}; the inputs are {', '.join(by_name) or 'none'}"
        )
    for name, shape in input_shapes.items():
        tensor = graph.tensors[by_name[name]]
        signature = _listed(tensor.shapeSignature) or _listed(tensor.shape)
        shape = [int(d) for d in shape]
        fixed = [(k, int(d)) for k, d in enumerate(signature) if int(d) >= 0]
        if len(shape) != len(signature) or any(shape[k] != d for k, d in fixed) or min(shape, default=1) < 1:
            raise ModelLoadError(
                f"{source}: input '{name}' is {_dims(signature)}; --input-shape "
                f"{'x'.join(map(str, shape))} does not fit it (only -1 dimensions can be set)"
            )
    try:
        plain = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES  # shapes only, no delegate planning
        interpreter = Interpreter(model_content=data, experimental_op_resolver_type=plain)
        for name, shape in input_shapes.items():
            interpreter.resize_tensor_input(by_name[name], [int(d) for d in shape], strict=True)
        interpreter.allocate_tensors()
        for detail in interpreter.get_input_details():
            interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
        interpreter.invoke()
        details = interpreter.get_tensor_details()
    except (RuntimeError, ValueError) as exc:
        detail = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"{source}: LiteRT cannot run the model at the given --input-shape: {detail}") from exc
    for detail in details:
        index = int(detail["index"])
        if index < len(graph.tensors) and graph.tensors[index].type != 13:  # not RESOURCE handles
            graph.tensors[index].shape = [int(d) for d in detail["shape"]]


def _dims(signature) -> str:
    return "x".join("N" if int(d) < 0 else str(int(d)) for d in signature)


def _listed(values) -> list:
    """A flatbuffer vector field: None when the file leaves it out, else a list or NumPy array."""
    return [] if values is None else list(values)


def _value_info(name: str, dtype, shape):
    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(dtype), list(shape))


# Operators that only move, compare or convert values: int8 tensors they touch may be plain integers.
DATA_MOVEMENT = {
    "CAST", "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "GATHER", "TRANSPOSE", "CONCATENATION", "SLICE", "STRIDED_SLICE",
    "PACK", "SPLIT", "SPLIT_V", "SHAPE", "EQUAL", "NOT_EQUAL", "READ_VARIABLE", "ASSIGN_VARIABLE",
}  # fmt: skip


def _arithmetic_tensors(graph, ops: list[str]) -> set[int]:
    """Tensors an arithmetic operator (one that needs real values: conv, add...) reads or writes."""
    touched: set[int] = set()
    for name, op in zip(ops, graph.operators or []):
        if name not in DATA_MOVEMENT:
            touched.update(
                int(i)
                for i in list(op.inputs if op.inputs is not None else [])
                + list(op.outputs if op.outputs is not None else [])
                if i >= 0
            )
    return touched


def op_name(model, op) -> str:
    """BUILTIN_NAME, or CUSTOM:<code> for custom operators."""
    from ai_edge_litert import schema_py_generated as schema

    code = model.operatorCodes[op.opcodeIndex]
    # Codes past 127 live only in builtinCode; older files fill only deprecatedBuiltinCode.
    builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
    if builtin == schema.BuiltinOperator.CUSTOM:
        return f"CUSTOM:{(code.customCode or b'').decode(errors='replace')}"
    from edgec.backends.tflite.flatbuffer import OPERATOR_NAMES

    return OPERATOR_NAMES.get(builtin, f"BUILTIN_{builtin}")


def _parse(data: bytes, source: str):
    from ai_edge_litert import schema_py_generated as schema

    if len(data) < 8 or data[4:8] != FILE_IDENTIFIER:
        raise ModelLoadError(f"{source}: not a TFLite model (no {FILE_IDENTIFIER.decode()} file identifier)")
    try:
        model = schema.ModelT.InitFromPackedBuf(data, 0)
        _check_indices(model)
    except Exception as exc:  # flatbuffers reads past the end as IndexError, struct.error, ValueError...
        detail = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ""
        raise ModelLoadError(
            f"{source}: not a readable TFLite model (truncated or corrupt: {type(exc).__name__}: {detail})"
        ) from exc
    return model


def _check_indices(model) -> None:
    """Every index the conversion follows points inside its table (corrupt files often do not)."""
    if not model.subgraphs:
        raise ValueError("no subgraph")
    for graph in model.subgraphs:  # CALL_ONCE evaluates other subgraphs at import
        tensors = len(graph.tensors or [])
        for tensor in graph.tensors or []:
            if not 0 <= tensor.buffer < len(model.buffers or []):
                raise IndexError("tensor buffer")
        for op in graph.operators or []:
            if not 0 <= op.opcodeIndex < len(model.operatorCodes or []):
                raise IndexError("operator code")
            inputs = [] if op.inputs is None else list(op.inputs)
            outputs = [] if op.outputs is None else list(op.outputs)
            if any(not -1 <= i < tensors for i in inputs + outputs):
                raise IndexError("operator tensor")
        ports = ([] if graph.inputs is None else list(graph.inputs)) + (
            [] if graph.outputs is None else list(graph.outputs)
        )
        if any(not 0 <= i < tensors for i in ports):
            raise IndexError("graph input or output")


def _onnx_type(ctx, index: int) -> int:
    return helper.np_dtype_to_tensor_dtype(ctx.dtype(index))


def _graph_input(ctx, index: int):
    from edgec.frontends.tflite_context import QUANTIZED_ACTIVATIONS

    name = ctx.fresh(ctx.names[index], own=True)
    dtype, quant = ctx.dtype(index), ctx.quant(index)
    if dtype.kind == "f" and dtype.itemsize != 4:
        ctx.fail(f"input '{name}' is {dtype}; activations must be float32 (float16 only as constants)")
    if quant is not None:
        if dtype not in QUANTIZED_ACTIVATIONS or quant.scale.size != 1:
            ctx.fail(f"input '{name}': only per-tensor int8/uint8 quantized inputs are supported")
        scale, zero_point = ctx.quant_params(index)
        ctx.int8_outputs[index] = name
        ctx.views[(index, False)] = ctx.emit("DequantizeLinear", [name, scale, zero_point], f"{name}_dq")
    else:
        ctx.views[(index, False)] = name
    return helper.make_tensor_value_info(name, _onnx_type(ctx, index), list(ctx.shape(index)))


def _graph_output(ctx, index: int):
    """The output under its TFLite name, layout and dtype: int8 outputs end in QuantizeLinear."""
    name = ctx.names[index]
    if ctx.is_constant(index):
        values = ctx.real(index) if ctx.dtype(index).kind == "f" else ctx.array(index)
        ctx.emit("Identity", [ctx.initializer(values, f"{name}_value")], "", ctx.fresh(name, own=True))
    elif ctx.quant(index) is not None:
        if ctx.int8_outputs.get(index) != name:
            scale, zero_point = ctx.quant_params(index)
            ctx.emit("QuantizeLinear", [ctx.operand(index), scale, zero_point], "", ctx.fresh(name, own=True))
    elif ctx.operand(index) != name:  # an alias (DEQUANTIZE) or a graph input
        ctx.emit("Identity", [ctx.operand(index)], "", ctx.fresh(name, own=True))
    return helper.make_tensor_value_info(name, _onnx_type(ctx, index), list(ctx.shape(index)))
