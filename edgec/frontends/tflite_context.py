"""State of one TFLite -> ONNX conversion: tensors as ONNX values in NHWC or NCHW, constants and Q/DQ.

A TFLite tensor can be present in the ONNX graph twice: in its TFLite layout ("stored", NHWC for
4-D activations) and, for 4-D tensors, transposed to NCHW. Each view is made once, on first use,
so a chain of NCHW ops (conv -> add -> relu -> conv) has no Transpose between its ops.

Values are float: a quantized (int8/uint8) tensor is written as QuantizeLinear -> DequantizeLinear
right where it is produced, so consumers read exactly the values TFLite's integer kernels see.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from ai_edge_litert import schema_py_generated as schema
from onnx import helper, numpy_helper

from edgec.errors import ModelLoadError

NHWC_TO_NCHW = (0, 3, 1, 2)
NCHW_TO_NHWC = (0, 2, 3, 1)

DTYPES = {
    schema.TensorType.FLOAT32: np.dtype(np.float32),
    schema.TensorType.FLOAT16: np.dtype(np.float16),
    schema.TensorType.INT8: np.dtype(np.int8),
    schema.TensorType.UINT8: np.dtype(np.uint8),
    schema.TensorType.INT16: np.dtype(np.int16),
    schema.TensorType.INT32: np.dtype(np.int32),
    schema.TensorType.INT64: np.dtype(np.int64),
    schema.TensorType.BOOL: np.dtype(np.bool_),
}
# Activations ONNX Q/DQ can carry below opset 21 (int16 needs 21, which not every backend reads).
QUANTIZED_ACTIVATIONS = (np.dtype(np.int8), np.dtype(np.uint8))


@dataclass
class Quant:
    """real = (q - zero_point) * scale, per tensor or per channel along `axis`."""

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int


class Context:
    """What the converters share: the TFLite model being read and the ONNX nodes written so far."""

    def __init__(self, model: schema.ModelT, data: bytes, source: str, subgraph: int = 0, parent=None):
        self.model, self.data, self.source = model, data, source
        self.graph = model.subgraphs[subgraph]
        self.parent = parent
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.views: dict[tuple[int, bool], str] = {}  # (tensor, nchw) -> float ONNX value
        self.int8_outputs: dict[int, str] = {}  # tensor -> its Q output in the stored layout
        self.aliases: dict[int, int] = {}  # DEQUANTIZE output -> the constant it reads
        self.folded: dict[int, np.ndarray] = {}  # constants computed at import (DENSIFY)
        self._constants: dict[tuple, str] = {}
        # One namespace for the model and its branch subgraphs (ONNX names are global).
        self._taken: set[str] = set() if parent is None else parent._taken
        self.names = self._unique_names()
        if parent is not None:  # a branch's tensors never take a name the main graph owns
            label = self.graph.name.decode(errors="replace") if self.graph.name else f"subgraph{subgraph}"
            self.names = [f"{label}/{name}" for name in self.names]
        self._reserved = set(self.names) if parent is None else parent._reserved | set(self.names)
        from edgec.frontends.tflite_state import State

        self.state = State(self)

    def _unique_names(self) -> list[str]:
        names, seen = [], set()
        for i, tensor in enumerate(self.graph.tensors or []):
            name = tensor.name.decode(errors="replace") if tensor.name else f"tensor_{i}"
            names.append(f"{name}_{i}" if name in seen else name)
            seen.add(names[-1])
        return names

    # --- tensor facts -----------------------------------------------------------------------

    def fail(self, why: str):
        # Names come from the file: a corrupt one must not break the one-line error.
        why = "".join(c if c.isprintable() else "?" for c in why)
        raise ModelLoadError(f"{self.source}: {why}")

    def tensor(self, index: int) -> schema.TensorT:
        return self.graph.tensors[index]

    def shape(self, index: int) -> tuple[int, ...]:
        shape = self.tensor(index).shape
        return () if shape is None else tuple(int(d) for d in shape)

    def dtype(self, index: int) -> np.dtype:
        kind = self.tensor(index).type
        if kind not in DTYPES:
            self.fail(f"tensor '{self.names[index]}' has TFLite type {kind}, which has no ONNX conversion")
        return DTYPES[kind]

    def quant(self, index: int) -> Quant | None:
        params = self.tensor(index).quantization
        if params is None or params.scale is None or len(params.scale) == 0 or self.dtype(index).kind == "f":
            return None
        scale = np.asarray(params.scale, np.float32)
        zero_point = np.zeros(scale.shape, np.int64) if params.zeroPoint is None else np.asarray(params.zeroPoint)
        return Quant(scale, zero_point.astype(np.int64), int(params.quantizedDimension))

    def check_quantization(self, arithmetic: set[int] = frozenset()) -> None:
        """Refuse what LiteRT refuses (or silently miscomputes): quantization parameters with a
        zero, negative, NaN or infinite scale, zero points outside the stored type, per-channel
        arrays that do not match the channel axis, and int8/uint8 tensors without scales that an
        arithmetic operator reads or writes (`arithmetic`: their indices)."""
        for index, tensor in enumerate(self.graph.tensors or []):
            params = tensor.quantization
            if tensor.type not in DTYPES:
                continue
            dtype = DTYPES[tensor.type]
            scale = np.asarray([] if params is None or params.scale is None else params.scale, np.float64)
            zero_point = np.asarray([] if params is None or params.zeroPoint is None else params.zeroPoint, np.int64)
            where = f"tensor '{self.names[index]}'"
            if dtype.kind == "f":
                continue  # float tensors ignore quantization fields
            if scale.size == 0 and zero_point.size == 0:
                if dtype in QUANTIZED_ACTIVATIONS and index in arithmetic:
                    self.fail(f"{where} is {dtype} without quantization parameters (no scale)")
                continue  # plain integer data
            if scale.size == 0:
                self.fail(f"{where} has zero points but an empty quantization scale array")
            if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
                bad = scale[~(np.isfinite(scale) & (scale > 0))][0]
                self.fail(f"{where} has quantization scale {bad}; scales must be positive and finite")
            if zero_point.size not in (0, scale.size):
                self.fail(f"{where} has {scale.size} quantization scales but {zero_point.size} zero points")
            if dtype.kind in "iu" and zero_point.size:
                info = np.iinfo(dtype)
                outside = zero_point[(zero_point < info.min) | (zero_point > info.max)]
                if outside.size:
                    self.fail(
                        f"{where} has zero point {outside[0]}, outside the {dtype} range [{info.min}, {info.max}]"
                    )
            if scale.size > 1:
                shape, axis = self.shape(index), int(params.quantizedDimension)
                if not 0 <= axis < len(shape) or shape[axis] != scale.size:
                    self.fail(
                        f"{where}: {scale.size} per-channel scales do not match axis {axis} of shape {list(shape)}"
                    )

    def is_constant(self, index: int) -> bool:
        return index in self.aliases or index in self.folded or self._buffer(index) is not None

    def _buffer(self, index: int) -> np.ndarray | None:
        buffer = self.model.buffers[self.graph.tensors[index].buffer]
        if buffer.offset > 1:  # large models keep tensor data after the flatbuffer
            if not 0 <= int(buffer.size) <= len(self.data) - int(buffer.offset):
                self.fail(
                    f"tensor '{self.names[index]}': its data ({buffer.size} bytes at {buffer.offset}) "
                    "lies past the end of the file"
                )
            return np.frombuffer(self.data, np.uint8, int(buffer.size), int(buffer.offset))
        data = buffer.data
        return None if data is None or len(data) == 0 else np.asarray(data, np.uint8)

    def stored(self, index: int) -> np.ndarray:
        """A constant's buffer as a flat array of its element type (little-endian in the file)."""
        raw = self._buffer(index)
        if raw is None:
            self.fail(f"tensor '{self.names[index]}' must be a constant here, it is computed at run time")
        dtype = self.dtype(index).newbyteorder("<")
        if raw.size % dtype.itemsize:
            self.fail(f"tensor '{self.names[index]}': {raw.size} bytes is not a whole number of {dtype} values")
        return np.frombuffer(raw.tobytes(), dtype)

    def array(self, index: int) -> np.ndarray:
        """The values of a constant (shapes, axes, paddings are read this way)."""
        source = self.aliases.get(index, index)
        if source in self.folded:
            return self.folded[source]
        values, shape = self.stored(source), self.shape(source)
        if values.size != int(np.prod(shape)):
            self.fail(f"tensor '{self.names[index]}' holds {values.size} values for shape {list(shape)}")
        return values.reshape(shape)

    def real(self, index: int) -> np.ndarray:
        """A constant's float value (dequantized, float16 widened)."""
        values, q = self.array(index), self.quant(self.aliases.get(index, index))
        if q is None:
            return values.astype(np.float32)
        shape = [1] * values.ndim
        if q.scale.size > 1:
            shape[q.axis] = -1
        return ((values.astype(np.float32) - q.zero_point.reshape(shape)) * q.scale.reshape(shape)).astype(np.float32)

    # --- emitting ---------------------------------------------------------------------------

    def fresh(self, hint: str, own: bool = False) -> str:
        """An unused value name; only a tensor's own view may take a TFLite tensor name."""
        name, n = hint, 0
        while name in self._taken or (name in self._reserved and not (own and name == hint)):
            n += 1
            name = f"{hint}_{n}"
        self._taken.add(name)
        return name

    def emit(self, op: str, inputs: list[str], hint: str, output: str | None = None, **attrs) -> str:
        output = output or self.fresh(hint)
        self.nodes.append(helper.make_node(op, inputs, [output], **attrs))
        return output

    def initializer(self, values: np.ndarray, hint: str) -> str:
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(values), name))
        return name

    def produce(self, out: int, op: str, inputs: list[str], nchw: bool = False, activation=None, **attrs) -> None:
        """The op that computes tensor `out`, then its fused activation, then Q/DQ if quantized."""
        act = ACTIVATIONS.get(activation or schema.ActivationFunctionType.NONE)
        if act is None:
            # LiteRT's kernels clamp to a range: fused TANH or SIGN_BIT is ignored (conv, ADD) or refused (FC).
            kind = {v: k for k, v in vars(schema.ActivationFunctionType).items() if not k.startswith("_")}
            self.fail(
                f"'{self.names[out]}' has fused activation {kind.get(activation, activation)}, which LiteRT's "
                "kernels ignore or refuse; only RELU, RELU6 and RELU_N1_TO_1 are applied"
            )
        if act[0] is None:
            self.define(out, self.emit(op, inputs, "", self._result_name(out, nchw), **attrs), nchw)
            return
        y = self.emit(op, inputs, f"{self.names[out]}_preact", **attrs)
        self.define(out, self.activation(act, y, self._result_name(out, nchw)), nchw)

    def activation(self, act: tuple, x: str, output: str) -> str:
        op, bounds = act
        if bounds is None:
            return self.emit(op, [x], "", output)
        low, high = (self.initializer(np.array(b, np.float32), f"{output}_{k}") for b, k in zip(bounds, "lh"))
        return self.emit(op, [x, low, high], "", output)

    def _result_name(self, out: int, nchw: bool) -> str:
        name = self.names[out] + ("_nchw" if nchw else "")
        if self.dtype(out) in QUANTIZED_ACTIVATIONS and self.quant(out) is not None:
            return self.fresh(f"{name}_float")
        return self.fresh(name, own=not nchw)

    def define(self, out: int, value: str, nchw: bool = False) -> None:
        """`value` (float) is tensor `out` in the given layout; quantized tensors get Q -> DQ."""
        q = self.quant(out)
        dtype = self.dtype(out)
        if dtype.kind == "f" and dtype.itemsize != 4:
            self.fail(f"'{self.names[out]}' is a {dtype} activation; only float32 (float16 only as constants)")
        if q is None or dtype.kind == "f":
            self.views[(out, nchw)] = value
            return
        if dtype not in QUANTIZED_ACTIVATIONS:
            self.fail(f"'{self.names[out]}' is a quantized {dtype} activation; only int8 and uint8 are supported")
        if q.scale.size != 1:
            self.fail(f"'{self.names[out]}' is an activation quantized per channel, which ONNX Q/DQ cannot express")
        scale, zero_point = self.quant_params(out)
        name = self.names[out]
        quantized = self.fresh(f"{name}_nchw_q") if nchw else self.fresh(name, own=True)
        self.emit("QuantizeLinear", [value, scale, zero_point], "", quantized)
        if not nchw:
            self.int8_outputs[out] = quantized
        self.views[(out, nchw)] = self.emit("DequantizeLinear", [quantized, scale, zero_point], f"{name}_dq")

    def quant_params(self, index: int) -> tuple[str, str]:
        key = ("qparams", index)
        if key not in self._constants:
            q = self.quant(index)
            per_axis = q.scale.size > 1
            scale = q.scale if per_axis else q.scale.reshape(())
            zero_point = q.zero_point if per_axis else q.zero_point.reshape(())
            zero_point = zero_point.astype(self.dtype(index))
            name = self.names[index]
            self._constants[key] = (
                self.initializer(scale, f"{name}_scale"),
                self.initializer(zero_point, f"{name}_zp"),
            )
        return self._constants[key]

    # --- reading ----------------------------------------------------------------------------

    def operand(self, index: int, nchw: bool = False) -> str:
        """Tensor `index` as a float ONNX value, in its stored layout or (4-D) in NCHW."""
        if self.is_constant(index):
            return self.constant(index, NHWC_TO_NCHW if nchw else None, pad_to=4 if nchw else 0)
        if (index, nchw) in self.views:
            return self.views[(index, nchw)]
        other = self.views.get((index, not nchw))
        if other is None:
            self.fail(f"tensor '{self.names[index]}' is read before any operator writes it")
        perm = NHWC_TO_NCHW if nchw else NCHW_TO_NHWC
        name = self.names[index]
        if nchw:
            output = self.fresh(f"{name}_nchw")
        elif self.quant(index) is not None:
            output = self.fresh(f"{name}_dq")
        else:
            output = self.fresh(name, own=True)
        self.views[(index, nchw)] = self.emit("Transpose", [other], "", output, perm=list(perm))
        return self.views[(index, nchw)]

    def weight(self, index: int, perm: tuple[int, ...]) -> str:
        """A weight permuted to ONNX order: a permuted initializer, or a Transpose when computed."""
        if self.is_constant(index):
            return self.constant(index, perm)
        return self.emit("Transpose", [self.operand(index)], f"{self.names[index]}_t", perm=list(perm))

    def constant(self, index: int, perm: tuple[int, ...] | None = None, pad_to: int = 0) -> str:
        """A constant as an initializer; quantized ones stay integer and get a DequantizeLinear
        (per-channel axis moved with the permutation). `pad_to` left-pads the rank first, so a
        broadcast operand keeps lining up with activations that are permuted to NCHW."""
        key = (index, perm, pad_to)
        if key in self._constants:
            return self._constants[key]
        source = self.aliases.get(index, index)
        values, q = self.array(index), self.quant(source)
        if values.dtype == np.float16:
            values = values.astype(np.float32)  # TFLite's DEQUANTIZE of float16 is exact widening
        axis = None if q is None or q.scale.size == 1 else q.axis
        if pad_to and values.ndim < pad_to:
            axis = None if axis is None else axis + pad_to - values.ndim
            values = values.reshape((1,) * (pad_to - values.ndim) + values.shape)
        if perm is not None and values.ndim == len(perm):
            values = values.transpose(perm)
            axis = None if axis is None else perm.index(axis)
        name = self.names[index]
        stored = self.initializer(values.copy(order="C"), name if q is None else f"{name}_quantized")
        if q is not None:
            scale, zero_point = self.quant_params(source)
            attrs = {} if axis is None else {"axis": axis}
            stored = self.emit("DequantizeLinear", [stored, scale, zero_point], f"{name}_dq", **attrs)
        self._constants[key] = stored
        return stored

    def prefers_nchw(self, indices) -> bool:
        """Whether a layout-agnostic op should run in NCHW: its activations are all 4-D and one
        of them already exists in NCHW (so the chain of NCHW ops is not broken)."""
        activations = [i for i in indices if i >= 0 and not self.is_constant(i)]
        if not activations or any(len(self.shape(i)) != 4 for i in activations):
            return False
        return any((i, True) in self.views for i in activations)


_A = schema.ActivationFunctionType
# TFLite fused activation -> (ONNX op, Clip bounds or None); NONE maps to no node.
ACTIVATIONS = {
    _A.NONE: (None, None),
    _A.RELU: ("Relu", None),
    _A.RELU6: ("Clip", (0.0, 6.0)),
    _A.RELU_N1_TO_1: ("Clip", (-1.0, 1.0)),
}
