"""float16 arithmetic as a float16 device computes it, run on onnxruntime's CPU provider.

onnxruntime 1.32's CPU provider has few float16 kernels on x86: it runs a float16 graph's ops in
float32 behind Casts it inserts, then removes the Cast pairs between consecutive ops, so a chain
of float16 ops is computed in float32 and rounded once at its end (Mul -> Sqrt -> Mul of 1.0 by
1.00098 gives 1.00098, float16 op by op gives 1.0). A device with float16 kernels (OpenVINO's
CPU plugin on AVX512-FP16 or ARM, TensorRT with --fp16, TFLite's GPU delegate) rounds every op's
output: PP-OCRv4's detector in float16 on OpenVINO's CPU plugin was 24.6 dB from the IR whose
float16 check onnxruntime had passed. The checks therefore run this rewrite of a float16 graph:
float32 ops, each float16 value rounded by an explicit Cast(float16) -> Cast(float32) pair,
which onnxruntime keeps.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FLOAT16, FLOAT = TensorProto.FLOAT16, TensorProto.FLOAT


def holds_float16(proto: onnx.ModelProto) -> bool:
    graph = proto.graph
    typed = list(graph.input) + list(graph.output) + list(graph.value_info)
    return any(t.type.tensor_type.elem_type == FLOAT16 for t in typed) or any(
        i.data_type == FLOAT16 for i in graph.initializer
    )


def emulated(proto: onnx.ModelProto) -> onnx.ModelProto:
    """`proto` computing in float32 with every float16 value rounded to float16 where it is made
    (a graph input, a constant, each op's output). Graphs with If/Loop bodies are returned as
    they are: their float16 values live in scopes this rewrite does not enter."""
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in proto.graph.node for a in n.attribute):
        return proto
    try:
        graph = onnx.shape_inference.infer_shapes(proto).graph
    except Exception:  # noqa: BLE001 - a custom domain: the value_info the IR wrote still types it
        graph = proto.graph
    half = {t.name for t in list(graph.input) + list(graph.output) + list(graph.value_info) if _elem(t) == FLOAT16}
    half |= {i.name for i in graph.initializer if i.data_type == FLOAT16}
    nodes: list[onnx.NodeProto] = []
    renamed: dict[str, str] = {}  # a float16 graph input -> its rounded copy

    def rounded(source: str, target: str) -> list[onnx.NodeProto]:
        return [
            helper.make_node("Cast", [source], [f"{target}__fp16"], to=FLOAT16, name=f"{target}__round"),
            helper.make_node("Cast", [f"{target}__fp16"], [target], to=FLOAT, name=f"{target}__widen"),
        ]

    for tensor in graph.input:
        if tensor.name in half:
            renamed[tensor.name] = f"{tensor.name}__rounded"
            nodes += rounded(tensor.name, renamed[tensor.name])
    for node in graph.node:
        node = _widened(node)
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
        halves = [i for i, name in enumerate(node.output) if name in half]
        if node.op_type == "Cast" and any(a.name == "to" and a.i == FLOAT16 for a in node.attribute):
            for a in node.attribute:
                if a.name == "to":
                    a.i = FLOAT
        finals = {}
        for i in halves:
            finals[i] = node.output[i]
            node.output[i] = f"{finals[i]}__fp32"
        nodes.append(node)
        for i, final in finals.items():
            nodes += rounded(node.output[i], final)
    initializers = [
        numpy_helper.from_array(numpy_helper.to_array(i).astype(np.float32), i.name) if i.data_type == FLOAT16 else i
        for i in graph.initializer
    ]
    for tensor in list(graph.input) + list(graph.output):
        if _elem(tensor) == FLOAT16:
            tensor.type.tensor_type.elem_type = FLOAT
    out = helper.make_graph(nodes, graph.name, list(graph.input), list(graph.output), initializers)
    model = helper.make_model(out, opset_imports=list(proto.opset_import), ir_version=proto.ir_version)
    return model


def _elem(tensor: onnx.ValueInfoProto) -> int:
    return tensor.type.tensor_type.elem_type


def _widened(node: onnx.NodeProto) -> onnx.NodeProto:
    """A copy of `node` whose float16 constant attributes (Constant, ConstantOfShape) are float32:
    the values are exact in both, and its float16 output is rounded after it like any other."""
    node = onnx.NodeProto.FromString(node.SerializeToString())
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.TENSOR and attribute.t.data_type == FLOAT16:
            attribute.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attribute.t).astype(np.float32), attribute.t.name))
    return node
