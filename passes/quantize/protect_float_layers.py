"""Keep float layers float in onnxruntime. Exact: a per-tensor DequantizeLinear written per
channel, every channel with the same scale and zero point.

onnxruntime's WeightBiasQuantization (1.21 and later, on by default) takes any Conv,
ConvTranspose or Gemm whose input comes from a DequantizeLinear with one scale and whose weight
or bias is a float initializer, and quantizes that weight to per-tensor int8 and the bias to
int32, so the layer then fuses into an int8 kernel. Layers -O int8 keeps in float (the fallback
of a missed budget or of the latency search, float_compute) read their input through such a
DequantizeLinear whenever their producer is quantized: onnxruntime ran MediaPipe's palm
detector's five float layers as per-tensor int8, 16.6 dB from the Q/DQ graph edgec checked.
The transformer only takes a per-tensor input, so the float layer gets its own per-channel copy.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from edgec import ir
from edgec.graph_utils import NameGen, constant_value, producer
from edgec.pass_infra import Pass, PassContext, PassResult

LAYERS = ("Conv", "ConvTranspose", "Gemm")


class ProtectFloatLayersPass(Pass):
    name = "protect-float-layers"
    summary = "Give float Conv/Gemm layers reading a per-tensor DequantizeLinear a per-channel copy (exact)."

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        ir.infer_shapes(graph)
        names = NameGen(graph)
        protected, unknown = 0, 0
        for g in list(ir.iter_graphs(graph)):
            before = protected
            for node in [n for n in g.nodes if n.op in LAYERS and _float_layer(n)]:
                source = producer(node.inputs[0])
                if source is None or source.op != "DequantizeLinear" or not _per_tensor(source):
                    continue
                axis, channels = _channel_axis(node)
                if channels is None:
                    unknown += 1
                    continue
                node.inputs[0] = _per_channel_copy(g, source, axis, channels, names)
                protected += 1
            if protected > before:
                g.cleanup(remove_unused_graph_inputs=False)  # a DequantizeLinear only the layer read
                g.toposort(recurse_subgraphs=False)
        if unknown:
            ctx.warn(f"{self.name}: {unknown} float layer(s) with an unknown channel count may run int8 in onnxruntime")
        return PassResult(protected > 0, {"protected": protected, "unknown_channels": unknown})


def _float_layer(node: gs.Node) -> bool:
    """Whether a weight or bias is a float constant (a layer -O int8 quantized reads both through
    DequantizeLinear)."""
    for index in (1, 2):
        if index < len(node.inputs) and isinstance(node.inputs[index], gs.Constant):
            if np.issubdtype(np.asarray(node.inputs[index].values).dtype, np.floating):
                return True
    return False


def _per_tensor(dq: gs.Node) -> bool:
    scale = constant_value(dq.inputs[1])
    return scale is not None and scale.size == 1


def _channel_axis(node: gs.Node) -> tuple[int, int | None]:
    """(axis, its size) of the input: a Conv's channels, a Gemm's features (transA: axis 0)."""
    shape = node.inputs[0].shape
    axis = 0 if node.op == "Gemm" and node.attrs.get("transA", 0) else 1
    if not shape or len(shape) <= axis or not isinstance(shape[axis], int) or shape[axis] <= 0:
        return axis, None
    return axis, shape[axis]


def _per_channel_copy(graph: gs.Graph, dq: gs.Node, axis: int, channels: int, names: NameGen) -> gs.Variable:
    """dq's input through a DequantizeLinear with the scale and zero point repeated per channel."""
    x = dq.inputs[0]
    scale = np.full(channels, float(np.asarray(constant_value(dq.inputs[1])).ravel()[0]), np.float32)
    zero_value = constant_value(dq.inputs[2]) if len(dq.inputs) > 2 else np.zeros((), x.dtype or np.uint8)
    zero = np.full(channels, np.asarray(zero_value).ravel()[0], np.asarray(zero_value).dtype)
    out = gs.Variable(names(f"{dq.outputs[0].name}_per_channel"), dtype=dq.outputs[0].dtype, shape=dq.outputs[0].shape)
    inputs = [x, gs.Constant(names(f"{x.name}_channel_scale"), scale), gs.Constant(names(f"{x.name}_channel_zp"), zero)]
    graph.nodes.append(gs.Node("DequantizeLinear", "", {"axis": axis}, inputs, [out]))
    return out
