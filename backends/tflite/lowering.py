"""ONNX IR (NCHW) -> TFLite (NHWC) in float32, float16 weights or full int8: context and driver.

Activations of rank 4 live in NHWC inside the TFLite graph; each lowered tensor remembers
whether it was transposed (`nhwc`), so op lowerings convert weights and attributes instead of
inserting transposes. The model's 4-D inputs and outputs are NHWC too, unless `keep_layout`
asks for the ONNX layout (then they get a TRANSPOSE).

Precision follows the IR: Q/DQ (the tflite scheme) becomes int8 tensors with TFLite quantization
(see quantized.py); float16 constants are stored as float16 and DEQUANTIZEd to float32, which is
TFLite's float16-weights format (the kernels compute in float32, or fp16 where a delegate can).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from ai_edge_litert import schema_py_generated as schema

from edgec import ir, recurrent
from edgec.compress import shared
from edgec.backends.tflite import conv1d, fuse, quantized
from edgec.backends.tflite.flatbuffer import TENSOR_TYPES, ModelBuilder, Quantization
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
    # A 2-D tensor flattened from NHWC without transposing back: stored column j holds ONNX
    # column columns[j]. Only fully connected layers read it (they permute their weights).
    columns: np.ndarray | None = None


@dataclass
class Context:
    builder: ModelBuilder
    values: dict[str, Lowered] = field(default_factory=dict)
    quant: dict[str, quantized.QuantParams] = field(default_factory=dict)  # int8 tensors by ONNX name
    full_int8: bool = False  # every op in int8, even where a float island would run faster
    graph_outputs: set[str] = field(default_factory=set)
    count: int = 0
    ir_dtypes: dict = field(default_factory=dict)  # the caller's IR dtype of each model port
    # Constants derived from an IR constant (a transposed weight...) by what was derived: one
    # buffer however many nodes read the same weight (an unrolled GRU's hundreds of steps).
    derived: dict = field(default_factory=dict)

    def name(self, base: str) -> str:
        self.count += 1
        return f"{base}:{self.count}"

    def quantization(self, name: str, axis: int | None = None) -> Quantization | None:
        """The TFLite parameters of an int8 ONNX tensor; `axis` is where its channel axis is stored."""
        params = self.quant.get(name)
        if params is None:
            return None
        return Quantization(params.scale, params.zero_point, 0 if axis is None else axis)

    def stored(self, name: str, values: np.ndarray, source: gs.Constant, axis: int | None = None) -> int:
        """A constant derived from `source` (permuted, reshaped) stored as `source` is: int8 with
        its quantization (channel axis at `axis` after the permutation), float16 behind a
        DEQUANTIZE, or float32."""
        values = np.asarray(values)
        if source.name in self.quant:
            quantization = self.quantization(source.name, axis)
            stored = self.builder.constant(self.name(name), values.copy(order="C"), quantization)
            if not self.quant[source.name].dequantize:
                return stored
            full = self.temporary(values.shape)  # weight-only int8: float32 for a float kernel
            self.builder.operator(schema.BuiltinOperator.DEQUANTIZE, [stored], [full])
            return full
        if values.dtype == np.float16:
            half = self.builder.constant(self.name(name), values.copy(order="C"))
            full = self.temporary(values.shape)
            self.builder.operator(schema.BuiltinOperator.DEQUANTIZE, [half], [full])
            return full
        if np.issubdtype(values.dtype, np.floating):
            values = values.astype(np.float32)
        return self.builder.constant(self.name(name), values.copy(order="C"))

    def stored_once(self, key: tuple, name: str, values: np.ndarray, source: gs.Constant, axis: int | None = None) -> int:
        """stored(), or the tensor an earlier call with the same `key` stored."""
        if key not in self.derived:
            self.derived[key] = self.stored(name, values, source, axis)
        return self.derived[key]

    def get(self, tensor: gs.Tensor) -> Lowered:
        if isinstance(tensor, gs.Constant):
            if tensor.name not in self.values:
                values = np.asarray(tensor.values)
                params = self.quant.get(tensor.name)  # stored unpermuted: the channel axis is ONNX's
                axis = params.axis if params is not None else None
                self.values[tensor.name] = Lowered(self.stored(tensor.name, values, tensor, axis), values.shape)
            return self.values[tensor.name]
        return self.values[tensor.name]

    def new(self, tensor: gs.Variable, nhwc: bool) -> Lowered:
        """The TFLite tensor for an ONNX output (shape from shape inference)."""
        shape = tuple(int(d) for d in tensor.shape)
        stored = tuple(shape[i] for i in NCHW_TO_NHWC) if nhwc else shape
        index = self.builder.tensor(
            tensor.name, stored, _compute_dtype(tensor.dtype), None, self.quantization(tensor.name)
        )
        lowered = Lowered(index, shape, nhwc)
        self.values[tensor.name] = lowered
        return lowered

    def temporary(self, shape, dtype=np.float32, like: int | None = None) -> int:
        """A new tensor; `like` copies another tensor's type and quantization (int8 stays int8)."""
        if like is None:
            return self.builder.tensor(self.name("tmp"), shape, dtype)
        model = self.builder.subgraph.tensors[like]
        index = self.builder.tensor(self.name("tmp"), shape, np.float32)
        self.builder.subgraph.tensors[index].type = model.type
        self.builder.subgraph.tensors[index].quantization = model.quantization
        return index

    def is_int8(self, index: int) -> bool:
        return self.builder.subgraph.tensors[index].type == schema.TensorType.INT8

    def quantize_value(self, index: int, value: float) -> np.ndarray:
        """`value` as tensor `index` stores it: an int8 (clamped, -inf -> -128) or a float32."""
        tensor = self.builder.subgraph.tensors[index]
        if tensor.type != schema.TensorType.INT8:
            return np.array(value, np.float32)
        scale, zero_point = tensor.quantization.scale[0], tensor.quantization.zeroPoint[0]
        level = -128 if value == -np.inf else (127 if value == np.inf else round(value / scale) + zero_point)
        return np.array(np.clip(level, -128, 127), np.int8)

    def transpose(self, index: int, shape, perm, out: int | None = None) -> int:
        """A TRANSPOSE of tensor `index` (stored with `shape`) into `out`, or a new tensor."""
        if out is None:
            out = self.temporary([shape[p] for p in perm], like=index)
        self.builder.operator(
            schema.BuiltinOperator.TRANSPOSE,
            [index, self.builder.constant(self.name("perm"), np.asarray(perm, np.int32))],
            [out],
            schema.TransposeOptionsT(),
            schema.BuiltinOptions.TransposeOptions,
        )
        return out

    def constant_in_layout(self, tensor: gs.Constant, nhwc: bool) -> int:
        """A constant operand next to activations stored NHWC: left-padded to rank 4 (NumPy
        broadcasting) and permuted like them; stored as the IR stores it."""
        values = np.asarray(tensor.values)
        if nhwc:
            values = values.reshape((1,) * (4 - values.ndim) + values.shape).transpose(NCHW_TO_NHWC)
        return self.stored(tensor.name, values, tensor)

    def pad(self, source: int, paddings: np.ndarray, value: float, out: int) -> None:
        """PAD with zeros, or PADV2 with another fill value; `paddings` is (rank, 2) in stored order.
        (PAD fills an int8 tensor with its zero point, which is the real value 0.)"""
        inputs = [source, self.builder.constant(self.name("paddings"), np.asarray(paddings, np.int32))]
        fill = self.quantize_value(source, value)
        zero = self.quantize_value(source, 0.0)
        if fill == zero:
            self.builder.operator(
                schema.BuiltinOperator.PAD, inputs, [out], schema.PadOptionsT(), schema.BuiltinOptions.PadOptions
            )
            return
        model = self.builder.subgraph.tensors[source]
        inputs.append(self.builder.constant(self.name("fill"), fill))
        if model.quantization is not None:
            self.builder.subgraph.tensors[inputs[-1]].quantization = model.quantization
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
        if value.columns is not None:
            raise EdgecError("tflite: internal: a column-permuted flatten reached a layer that cannot permute")
        if not value.nhwc:
            return value.index
        return self.transpose(value.index, [value.shape[i] for i in NCHW_TO_NHWC], NHWC_TO_NCHW)


def _decode_shared_weights(graph: gs.Graph) -> int:
    """Weight-shared layers (uint8 indices + codebook) get their float weights back: TFLite
    kernels read dense weights, so the file stores them dense (int8 after -O int8)."""
    decoded = shared.shared_weights(graph)
    for weight in decoded:
        out = weight.gather.outputs[0]
        dense = gs.Constant(out.name, np.ascontiguousarray(weight.values))
        for reader in list(out.outputs):
            reader.inputs[reader.inputs.index(out)] = dense
        weight.gather.outputs.clear()
    if decoded:
        graph.cleanup(remove_unused_graph_inputs=False)
    return len(decoded)


def _read_stored_weights_through_casts(graph: gs.Graph) -> int:
    """convert-fp16 casts a dequantized int8 weight (weight-only int8 models) to float16 for its
    fp16 layer: Cast(DequantizeLinear(int8 constant)). TFLite computes float16 models in float32,
    so the layer reads the DequantizeLinear directly and the weight keeps its int8 storage."""
    skipped = 0
    for cast in [n for n in graph.nodes if n.op == "Cast"]:
        source = cast.inputs[0].inputs[0] if len(cast.inputs[0].inputs) == 1 else None
        if source is None or source.op != "DequantizeLinear" or not isinstance(source.inputs[0], gs.Constant):
            continue
        if cast.attrs.get("to") not in (onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT):
            continue
        out = cast.outputs[0]
        if any(t is out for t in graph.outputs):
            continue
        for reader in list(out.outputs):
            for position, tensor in enumerate(list(reader.inputs)):
                if tensor is out:
                    reader.inputs[position] = source.outputs[0]
        cast.outputs.clear()
        skipped += 1
    if skipped:
        graph.cleanup(remove_unused_graph_inputs=False)
    return skipped


def _name_unnamed(graph: gs.Graph) -> None:
    """Errors name the node they refuse: an unnamed one (Q/DQ, a converter's) by its position and
    first output, e.g. Conv '#12 -> conv_out'."""
    for sub in ir.iter_graphs(graph):
        for index, node in enumerate(sub.nodes):
            if not node.name:
                node.name = f"#{index} -> {node.outputs[0].name if node.outputs else '(no output)'}"


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


@dataclass
class Port:
    """A model input or output as the .tflite file has it."""

    name: str
    shape: tuple[int, ...]  # as stored
    dtype: str
    layout: str | None  # "NHWC" or "NCHW" for 4-D tensors
    quantization: tuple[float, int] | None  # (scale, zero point) of an int8 port
    # The IR's own dtype at this port: an int8 IR port (a TFLite int8 import) takes and gives the
    # stored integers as they are, a float one is (de)quantized by whoever runs the file.
    ir_dtype: str | None = None
    # The layout the IR itself has at this port when it is not ONNX's (a TFLite import's NHWC).
    ir_layout: str | None = None

    def to_json(self) -> dict:
        spec = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "layout": self.layout}
        if self.quantization is not None:
            spec["quantization"] = {"scale": self.quantization[0], "zero_point": self.quantization[1]}
        if self.ir_dtype is not None and self.ir_dtype != self.dtype:
            spec["ir_dtype"] = self.ir_dtype
        elif self.ir_dtype is not None and self.quantization is not None:
            spec["ir_dtype"] = self.ir_dtype  # integers in the IR too: no (de)quantization
        if self.ir_layout is not None:
            spec["ir_layout"] = self.ir_layout
        return spec


@dataclass
class Lowering:
    flatbuffer: bytes
    inputs: list[Port]
    outputs: list[Port]
    precision: str  # fp32, fp16 (float16 weights) or int8
    left_float: list[str] = field(default_factory=list)  # I/O that --io-dtype int8 could not make int8


def _has_tensor_type(dtype) -> bool:
    try:  # bfloat16 and strings have no NumPy dtype TFLite's types map from
        return _compute_dtype(dtype) in TENSOR_TYPES
    except TypeError:
        return False


def _compute_dtype(dtype) -> np.dtype:
    """float16 activations compute in float32: TFLite's float16 format stores only weights halved."""
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if dtype == np.float16 else dtype


def precision_of(graph: gs.Graph) -> str:
    """What the lowering will write: int8 (Q/DQ in the IR), int8-weights (weight-only: every
    DequantizeLinear reads a constant, activations stay float), fp16 (float16 weights) or fp32."""
    quantizers = [n for n in graph.nodes if n.op in ("QuantizeLinear", "DequantizeLinear")]
    if quantizers:
        weight_only = all(n.op == "DequantizeLinear" and isinstance(n.inputs[0], gs.Constant) for n in quantizers)
        return "int8-weights" if weight_only else "int8"
    halves = any(isinstance(t, gs.Constant) and t.values.dtype == np.float16 for t in graph.tensors().values())
    return "fp16" if halves else "fp32"


def lower(model: ir.Model, keep_layout: bool = True, io_dtype: str = "float32", full_int8: bool = False) -> bytes:
    """A .tflite flatbuffer computing what `model` computes (ONNX layout at the I/O by default)."""
    return lower_model(model, keep_layout, io_dtype, full_int8).flatbuffer


def _refuse_unlowerable(graph) -> None:
    from edgec.backends.tflite.ops import LOWERINGS
    from edgec.backends.tflite.ops.control import CONTROL_LOWERINGS

    every = [n for g in ir.iter_graphs(graph) for n in g.nodes]
    known = LOWERINGS.keys() | CONTROL_LOWERINGS.keys()
    unsupported = sorted({f"{n.name or '?'} ({n.op})" for n in every if n.op not in known})
    if unsupported:
        raise EdgecError(
            f"tflite: no lowering for {len(unsupported)} nodes: {', '.join(unsupported[:10])}"
            " (another --backend, e.g. onnx, can take this model)"
        )


def _prepared(model: ir.Model, io_dtype: str, full_int8: bool) -> tuple:
    """(graph, quantization parameters, precision, ports left float): a copy of the IR rewritten
    as the lowering takes it (the batch fix and shape inference stay out of the caller's IR)."""
    graph = model.copy().graph
    _name_unnamed(graph)
    _decode_shared_weights(graph)
    _read_stored_weights_through_casts(graph)
    _fix_batch(graph)
    precision = precision_of(graph)
    quantized_ir = precision in ("int8", "int8-weights")
    from edgec.backends.tflite.ops.gelu import dequantize_erf_gelu, fuse_erf_gelu

    dequantize_erf_gelu(graph)  # before fold_qdq, which would hide its constants' real values
    # Full-int8 targets (Edge TPU, TFLM) get float weights for float layers, as before.
    params = quantized.fold_qdq(graph, weight_only=not full_int8) if quantized_ir else {}
    conv1d.as_2d(graph, params)
    left_float: list[str] = []
    if io_dtype == "int8":
        if precision != "int8":
            raise EdgecError("tflite: --io-dtype int8 needs a quantized model (-O int8)")
        left_float = quantized.int8_io(graph, params)
    ir.infer_shapes(graph)
    from edgec.backends.tflite.ops.common import refuse  # the ops package imports the lowering

    def not_unrolled(node, why):
        refuse(node, f"{why}: not unrolled for TFLite")

    if recurrent.unroll(graph, not_unrolled):  # needs the sequence length: after shape inference, then again
        ir.infer_shapes(graph)
    _global_average_pools(graph)
    fuse_erf_gelu(graph)  # after shape inference: ONNX knows Gelu only from opset 20
    return graph, params, precision, left_float


def _global_average_pools(graph: gs.Graph) -> int:
    """AveragePool whose one window is the whole unpadded input becomes GlobalAveragePool (MEAN).
    The int8 AVERAGE_POOL_2D kernel keeps its input's scale, so an output the IR gives a finer one
    (a squeeze-excite pool over 64x64 ReLU outputs: 0.0083 vs 0.018) was averaged at the coarse
    scale and requantized, 2 LSB off on 61% of mp-selfie's pooled values and 4 dB lost by the
    end of the network; int8 MEAN requantizes the exact sum once, as onnxruntime does."""
    from edgec.backends.tflite.ops.pool import onnx_pads  # the ops package imports the lowering

    changed = 0
    for node in graph.nodes:
        if node.op != "AveragePool" or not node.inputs or node.inputs[0].shape is None:
            continue
        shape = node.inputs[0].shape
        if (
            len(shape) != 4
            or not all(isinstance(d, int) for d in shape[2:])
            or [int(k) for k in node.attrs.get("kernel_shape", [])] != list(shape[2:])
            or any(int(d) != 1 for d in node.attrs.get("dilations", [1, 1]))
            or any(onnx_pads(node, shape))  # explicit pads, or what auto_pad SAME_* works out to
        ):
            continue
        node.op, node.attrs = "GlobalAveragePool", {}
        changed += 1
    return changed


def preflight(model: ir.Model) -> None:
    """The operator coverage lower_model checks, on a float model before quantization, after the
    same rewrites (folded Q/DQ of pre-quantized weights, 1-D as 2-D, unrolled recurrences, GELU)."""
    _refuse_unlowerable(_prepared(model, "float32", False)[0])


def lower_model(
    model: ir.Model, keep_layout: bool = False, io_dtype: str = "float32", full_int8: bool = False
) -> Lowering:
    """Lower a static-shape IR. `keep_layout`: 4-D inputs/outputs stay NCHW (a TRANSPOSE inside)
    instead of NHWC; `io_dtype` int8: a quantized model reads and writes int8 tensors;
    `full_int8`: int8 kernels even where LiteRT's CPU kernels are faster in float (HardSwish)."""
    if io_dtype not in ("float32", "int8"):
        raise EdgecError(f"tflite: io dtype '{io_dtype}' is not float32 or int8")
    graph, params, precision, left_float = _prepared(model, io_dtype, full_int8)
    # The caller's IR dtypes at the ports (int8_io turned float ports into int8 tensors).
    ir_dtypes = {t.name: t.dtype for t in model.graph.inputs + model.graph.outputs}
    _refuse_unlowerable(graph)
    for tensor in graph.inputs + graph.outputs:
        if tensor.shape is None or not all(isinstance(d, int) for d in tensor.shape):
            raise EdgecError(f"tflite: '{tensor.name}' needs a static shape (use --input-shape)")
        if not _has_tensor_type(tensor.dtype):
            raise EdgecError(f"tflite: '{tensor.name}' has type {tensor.dtype}, which TFLite has no tensor type for")
    ctx = Context(ModelBuilder(), quant=params, full_int8=full_int8, graph_outputs={t.name for t in graph.outputs})
    ctx.ir_dtypes = ir_dtypes
    inputs = [_lower_input(ctx, tensor, keep_layout) for tensor in graph.inputs]
    lower_nodes(ctx, graph.nodes)
    taken = {index for index, _ in inputs}
    outputs = []
    for tensor in graph.outputs:
        outputs.append(_lower_output(ctx, tensor, keep_layout, taken))
        taken.add(outputs[-1][0])
    ctx.builder.set_io([p[0] for p in inputs], [p[0] for p in outputs])
    fuse.fuse_activations(ctx.builder)
    ctx.builder.compact()
    return Lowering(ctx.builder.to_bytes(), [p[1] for p in inputs], [p[1] for p in outputs], precision, left_float)


def _port(ctx: Context, index: int, name: str, layout: str | None, ir_dtype=None) -> Port:
    tensor = ctx.builder.subgraph.tensors[index]
    dtype = {v: k for k, v in TENSOR_TYPES.items()}[tensor.type]
    params = ctx.quant.get(name)
    quant = (float(params.scale.ravel()[0]), int(params.zero_point.ravel()[0])) if params is not None else None
    ir = str(_compute_dtype(ir_dtype)) if ir_dtype is not None and _has_tensor_type(ir_dtype) else None
    return Port(name, tuple(tensor.shape), str(dtype), layout, quant, ir)


def _lower_input(ctx: Context, tensor: gs.Variable, keep_layout: bool) -> tuple[int, Port]:
    shape = tuple(tensor.shape)
    four_d = len(shape) == 4
    stored = shape if keep_layout or not four_d else tuple(shape[i] for i in NCHW_TO_NHWC)
    index = ctx.builder.tensor(tensor.name, stored, _compute_dtype(tensor.dtype), None, ctx.quantization(tensor.name))
    if four_d and keep_layout:  # NCHW in, NHWC inside
        ctx.values[tensor.name] = Lowered(ctx.transpose(index, shape, NCHW_TO_NHWC), shape, nhwc=True)
    else:
        ctx.values[tensor.name] = Lowered(index, shape, nhwc=four_d)
    layout = ("NCHW" if keep_layout else "NHWC") if four_d else None
    return index, _port(ctx, index, tensor.name, layout, ctx.ir_dtypes.get(tensor.name, tensor.dtype))


def _lower_output(ctx: Context, tensor: gs.Variable, keep_layout: bool, taken: set[int]) -> tuple[int, Port]:
    """`taken`: tensors already a model input or output; an output aliasing one (through a
    float-to-float Cast, or twice in the output list) gets its own copy, so names stay unique."""
    from edgec.backends.tflite.ops.emit import reshape

    value = ctx.values[tensor.name]
    tensors = ctx.builder.subgraph.tensors
    index = value.index
    if index in taken:
        index = reshape(ctx, index, tensors[index].shape)
        value = Lowered(index, value.shape, value.nhwc)
    if value.nhwc and keep_layout:  # the NCHW copy carries the ONNX name, callers look outputs up by it
        tensors[index].name = f"{tensor.name}:nhwc"
        index = ctx.as_nchw(value)
    tensors[index].name = tensor.name  # also where a Cast aliased the output to another tensor
    layout = ("NHWC" if value.nhwc and not keep_layout else "NCHW") if len(value.shape) == 4 else None
    return index, _port(ctx, index, tensor.name, layout, ctx.ir_dtypes.get(tensor.name, tensor.dtype))


def lower_nodes(ctx: Context, nodes) -> None:
    """Lower `nodes` in order into the subgraph ctx.builder points at (the main one or a branch)."""
    from edgec.backends.tflite.ops import LOWERINGS
    from edgec.backends.tflite.ops.control import CONTROL_LOWERINGS

    for node in nodes:
        lowering = LOWERINGS.get(node.op) or CONTROL_LOWERINGS.get(node.op)
        if lowering is None:
            raise EdgecError(f"tflite: no lowering for {node.op} '{node.name}' (inside an If branch)")
        _lower_node(ctx, node, lowering)


def _lower_node(ctx: Context, node: gs.Node, lowering) -> None:
    """Run the op's lowering; an int8 op whose TFLite kernel keeps its input's parameters but
    whose output has its own in the IR is followed by a requantizing QUANTIZE."""
    sources = [t.name for t in node.inputs if t.name in ctx.quant and not isinstance(t, gs.Constant)]
    outputs = [t.name for t in node.outputs if t.name in ctx.quant]
    if node.op not in quantized.SAME_PARAMS_OPS or not sources or not outputs:
        lowering(ctx, node)
        return
    shared = ctx.quant[sources[0]]
    wanted = {name: ctx.quant[name] for name in outputs if not ctx.quant[name].same_as(shared)}
    ctx.quant.update({name: shared for name in wanted})
    lowering(ctx, node)
    ctx.quant.update(wanted)
    for name in wanted:
        value = ctx.values[name]
        source = ctx.builder.subgraph.tensors[value.index]
        source.name = ctx.name(f"{name}/shared")
        target = ctx.builder.tensor(name, source.shape, np.int8, None, ctx.quantization(name))
        ctx.builder.operator(schema.BuiltinOperator.QUANTIZE, [value.index], [target])
        ctx.values[name] = Lowered(target, value.shape, value.nhwc)
