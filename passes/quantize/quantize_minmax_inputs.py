"""Quantize the input of a ReduceMax/ReduceMin whose output is quantized, with the output's scale
and zero point. Exact: a quantizer is monotone, so max(dq(q(x))) == dq(q(max(x))) element for
element (min likewise), and the reduction then reads and writes the same uint8/int8 grid.

Why a backend wants it: OpenVINO 2026.4's CPU plugin fuses an output FakeQuantize into a float
ReduceMax/ReduceMin, and when a FullyConnected reads that u8 result it computes wrong values on
AVX-512 hosts (dnsmos's global max pool -> dense: 17.7 dB from the float model where the Q/DQ IR
has 41.6 dB; a 64-channel ReduceMax -> Q/DQ -> MatMul alone is off by up to 3 units at outputs of
~20). With the input quantized the plugin runs the reduction in u8 instead and matches the IR.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from edgec.graph_utils import NameGen, constant_value, is_graph_output, producer
from edgec.ir import iter_graphs
from edgec.pass_infra import Pass, PassContext, PassResult

MINMAX_REDUCTIONS = ("ReduceMax", "ReduceMin")


class QuantizeMinmaxInputsPass(Pass):
    name = "quantize-minmax-inputs"
    summary = "Give a float ReduceMax/ReduceMin the quantizer of its quantized output on its input too (exact)."

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        names = NameGen(graph)
        rewritten = 0
        for g in list(iter_graphs(graph)):
            before = rewritten
            for node in [n for n in g.nodes if n.op in MINMAX_REDUCTIONS]:
                quantizer = _output_quantizer(g, node)
                if quantizer is not None:
                    _quantize_input(g, node, quantizer, names)
                    rewritten += 1
            if rewritten > before:
                g.toposort(recurse_subgraphs=False)
        return PassResult(rewritten > 0, {"reductions": rewritten})


def _output_quantizer(graph: gs.Graph, node: gs.Node) -> gs.Node | None:
    """The per-tensor QuantizeLinear that is the only reader of `node`'s output, when `node`
    reads a float tensor that is not already dequantized (the rewrite would change nothing)."""
    x, out = node.inputs[0], node.outputs[0]
    source = producer(x)
    if source is not None and source.op == "DequantizeLinear":
        return None
    if is_graph_output(graph, out) or len(out.outputs) != 1 or out.outputs[0].op != "QuantizeLinear":
        return None
    quantizer = out.outputs[0]
    scale = constant_value(quantizer.inputs[1])
    zero_point = constant_value(quantizer.inputs[2]) if len(quantizer.inputs) > 2 else np.uint8(0)
    if scale is None or zero_point is None or scale.size != 1 or np.asarray(zero_point).size != 1:
        return None  # a per-axis quantizer's axis would not mean the same on the unreduced input
    return quantizer


def _quantize_input(graph: gs.Graph, node: gs.Node, quantizer: gs.Node, names: NameGen) -> None:
    """x -> QuantizeLinear -> DequantizeLinear -> node, sharing the output quantizer's constants;
    other readers of x keep reading it in float."""
    x = node.inputs[0]
    params = quantizer.inputs[1:3]
    zero_dtype = params[1].dtype if len(params) > 1 else np.uint8
    quantized = gs.Variable(names(f"{x.name}_q"), dtype=zero_dtype, shape=x.shape)
    restored = gs.Variable(names(f"{x.name}_dq"), dtype=x.dtype, shape=x.shape)
    graph.nodes.append(gs.Node("QuantizeLinear", "", inputs=[x, *params], outputs=[quantized]))
    graph.nodes.append(gs.Node("DequantizeLinear", "", inputs=[quantized, *params], outputs=[restored]))
    node.inputs[0] = restored
