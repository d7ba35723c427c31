"""Run the model in float16: weights and activations halved, fp32 kept where fp16 has no kernel."""

from __future__ import annotations

from typing import Literal

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from edgec import ir
from edgec.compare import Tolerance
from edgec.graph_utils import NameGen, is_graph_output
from edgec.pass_infra import Numerics, Pass, PassContext, PassResult
from edgec.quant import recovery

FP16_MAX = float(np.finfo(np.float16).max)

# Ops with float16 kernels in onnxruntime's CPU provider (probed on 1.32) and the pure data-movement
# ops, which are type-agnostic. Anything else stays float32 behind Casts.
FP16_OPS = {
    "Conv",
    "ConvTranspose",
    "Gemm",
    "MatMul",
    "Relu",
    "Clip",
    "LeakyRelu",
    "PRelu",
    "Sigmoid",
    "Tanh",
    "HardSwish",
    "HardSigmoid",
    "Softmax",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Sqrt",
    "Exp",
    "Erf",
    "Abs",
    "Neg",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "ReduceMean",
    "LayerNormalization",
    "Concat",
    "Flatten",
    "Reshape",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Slice",
    "Split",
    "Gather",
    "Pad",
    "Identity",
    "Expand",
    "Tile",
    "DepthToSpace",
    "SpaceToDepth",
    "Max",
    "Min",
    "Where",
}
# Inputs that the ONNX spec types independently of the data (e.g. Resize scales): left alone.
FLOAT32_INPUTS = {"Resize": {2}, "Upsample": {1}}


class ConvertFp16Pass(Pass):
    name = "convert-fp16"
    summary = "Convert weights and activations to float16, keeping ops without fp16 kernels in float32."
    numerics = Numerics.LOSSY
    tolerance = Tolerance(min_cosine=0.999, min_sqnr_db=30.0)
    io: Literal["keep", "fp16"] = "keep"  # keep: callers still feed and read float32
    keep_ops: tuple[str, ...] = ()  # more ops to leave in float32
    keep_nodes: tuple[str, ...] = ()  # node names left in float32 (what recovery chose)
    # When the fp16 model misses this pass's budget on the check samples, keep the layers nearest
    # the failing outputs in float32 until it holds (as int8's recovery does); off: fail instead.
    recover: bool = True

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        ir.infer_shapes(graph)
        ir.name_nodes(graph)  # layers are kept in float32 by name
        float_model = ir.Model(graph).copy() if self.recover and ctx.samples else None
        result = self._convert(graph)
        if float_model is None or not result.modified:
            return result
        trials = {}

        def reconvert(extra: set[str]) -> ir.Model:
            trial = float_model.copy()
            trials[id(trial)] = self._convert(trial.graph, extra)
            return trial

        found = recovery.search(
            float_model, ir.Model(graph), reconvert, list(ctx.samples), self.check_tolerance(), rank=_nearest_outputs_first,
            shrink_always=True,
        )
        if found is None:
            return result
        stats = {k: v for k, v in found.items() if k not in ("model", "introduced_sqnr_db")}
        if found["ok"] and trials[id(found["model"])].stats["fp16_nodes"] == 0:
            ctx.warn("convert-fp16: the budget holds only with every layer in float32: no float16 model to keep")
            return PassResult(True, {**result.stats, "recovery": {**stats, "ok": False, "fallback": []}})
        if not found["ok"]:
            return PassResult(True, {**result.stats, "recovery": stats})
        adopted = found["model"].graph
        graph.nodes, graph.inputs, graph.outputs = adopted.nodes, adopted.inputs, adopted.outputs
        self.keep_nodes = tuple(self.keep_nodes) + tuple(found["fallback"])
        ctx.warn(
            f"convert-fp16: all-float16 missed its budget ({'; '.join(found['before']['failures'][:1])}); kept "
            f"{len(found['fallback'])} layer{'s' if len(found['fallback']) != 1 else ''} nearest the outputs in "
            f"float32: {', '.join(found['fallback'][:6])}"
            + (" ..." if len(found["fallback"]) > 6 else "")
        )
        return PassResult(True, {**trials[id(found["model"])].stats, "recovery": stats})

    def _convert(self, graph: gs.Graph, extra_fp32: set[str] = frozenset()) -> PassResult:
        names = NameGen(graph)
        half = {id(n) for n in graph.nodes if self._convertible(n) and n.name not in extra_fp32}
        stats = {"fp16_nodes": len(half), "fp32_nodes": 0, "casts": 0, "constants_clamped": 0}
        stats["fp32_nodes"] = sum(1 for n in graph.nodes if id(n) not in half and _float_io(n))
        if not half:
            return PassResult(False, stats)
        if self.io == "fp16":
            for tensor in graph.inputs:
                if _is_fp32(tensor):
                    tensor.dtype = np.float16
        casts: dict[tuple[int, str], gs.Tensor] = {}
        halved: dict[int, gs.Constant] = {}
        for node in list(graph.nodes):
            if id(node) not in half:
                continue
            exempt = FLOAT32_INPUTS.get(node.op, set())
            for i, tensor in enumerate(node.inputs):
                if i in exempt or tensor.is_empty():
                    continue
                if isinstance(tensor, gs.Constant):
                    if tensor.values.dtype == np.float32:
                        node.inputs[i] = self._halve(tensor, halved, names, stats)
                elif _is_fp32(tensor) and not self._made_half(tensor, half):
                    node.inputs[i] = _cast(graph, tensor, np.float16, casts, names, stats)
        self._halve_outputs_and_restore_fp32_readers(graph, half, casts, names, stats)
        return PassResult(True, stats)

    def _convertible(self, node: gs.Node) -> bool:
        return (
            node.op in FP16_OPS
            and node.op not in self.keep_ops
            and node.name not in self.keep_nodes
            and next(node.subgraphs(), None) is None
            and _float_io(node)
            and all(not _is_float(t) or _is_fp32(t) for t in node.outputs)
        )

    def _made_half(self, tensor: gs.Tensor, half: set[int]) -> bool:
        produced_half = len(tensor.inputs) == 1 and id(tensor.inputs[0]) in half
        return produced_half or (self.io == "fp16" and tensor.dtype == np.float16)

    def _halve(self, const: gs.Constant, halved: dict, names: NameGen, stats: dict) -> gs.Constant:
        if id(const) not in halved:
            values = const.values
            clamped = np.asarray(np.clip(values, -FP16_MAX, FP16_MAX))
            stats["constants_clamped"] += int(np.count_nonzero(clamped != values))
            halved[id(const)] = gs.Constant(names(f"{const.name}_fp16"), clamped.astype(np.float16))
        return halved[id(const)]

    def _halve_outputs_and_restore_fp32_readers(self, graph, half, casts, names, stats) -> None:
        for node in list(graph.nodes):
            if id(node) not in half:
                continue
            for position, out in enumerate(node.outputs):
                if not _is_fp32(out):
                    continue
                fp32_readers = [r for r in out.outputs if id(r) not in half]
                if is_graph_output(graph, out) and self.io == "keep":
                    # The graph output keeps its name and float32: a Cast now produces it, and the
                    # fp16 readers take the node's new fp16 output instead.
                    inner = gs.Variable(names(f"{out.name}_fp16"), dtype=np.float16, shape=out.shape)
                    for reader in [r for r in out.outputs if id(r) in half]:
                        _replace_input(reader, out, inner)
                    node.outputs[position] = inner
                    graph.nodes.append(
                        gs.Node("Cast", names(f"{out.name}_to_fp32"), {"to": onnx.TensorProto.FLOAT}, [inner], [out])
                    )
                    stats["casts"] += 1
                    continue
                out.dtype = np.float16
                for reader in fp32_readers:
                    _replace_input(
                        reader,
                        out,
                        _cast(graph, out, np.float32, casts, names, stats),
                        skip=FLOAT32_INPUTS.get(reader.op, set()),
                    )
        graph.toposort(recurse_subgraphs=False)


def _nearest_outputs_first(float_model: ir.Model, half: ir.Model, samples) -> list[tuple[list[str], None]]:
    """The float16 layers in reverse topological order: float16's losses show where a layer turns a
    small absolute error into a large relative one near the outputs (PP-OCRv4's detector: its final
    Sigmoid of logits up to 50, 68.6 dB before it and 41 dB after), so fp32 is tried from the
    outputs back; the recovery search then drops the blocks the budget did not need."""
    converted = {n.name for n in half.graph.nodes if any(_is_half(t) for t in n.outputs)}
    return [([n.name], None) for n in reversed(float_model.graph.nodes) if n.name in converted]


def _is_half(tensor: gs.Tensor) -> bool:
    return _has_dtype(tensor, np.float16)


def _replace_input(node: gs.Node, old: gs.Tensor, new: gs.Tensor, skip: set[int] = frozenset()) -> None:
    for i, tensor in enumerate(node.inputs):
        if tensor is old and i not in skip:
            node.inputs[i] = new


def _cast(graph, tensor, dtype, casts, names, stats) -> gs.Tensor:
    key = (id(tensor), np.dtype(dtype).name)
    if key not in casts:
        out = gs.Variable(names(f"{tensor.name}_{np.dtype(dtype).name}"), dtype=dtype, shape=tensor.shape)
        to = onnx.TensorProto.FLOAT16 if np.dtype(dtype) == np.float16 else onnx.TensorProto.FLOAT
        graph.nodes.append(
            gs.Node("Cast", names(f"{tensor.name}_to_{np.dtype(dtype).name}"), {"to": to}, [tensor], [out])
        )
        casts[key] = out
        stats["casts"] += 1
    return casts[key]


def _is_float(tensor: gs.Tensor) -> bool:
    dtype = tensor.dtype
    return dtype is not None and not isinstance(dtype, int) and np.issubdtype(np.dtype(dtype), np.floating)


def _is_fp32(tensor: gs.Tensor) -> bool:
    return _has_dtype(tensor, np.float32)


def _has_dtype(tensor: gs.Tensor, dtype) -> bool:
    return tensor.dtype is not None and not isinstance(tensor.dtype, int) and np.dtype(tensor.dtype) == dtype


def _float_io(node: gs.Node) -> bool:
    return any(_is_fp32(t) for t in list(node.inputs) + list(node.outputs) if not t.is_empty())
