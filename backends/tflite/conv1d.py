"""1-D convolutions and pools as 2-D ones of height 1: TFLite has only 2-D kernels (its own
converter does the same). Rewritten on the IR before lowering: x (N, C, L) -> Unsqueeze -> the
2-D op with a (1, k) window -> Squeeze -> (N, C', L'); the 4-D lowerings then handle layout."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from edgec.passes.cleanup.topological_sort import sort_nodes

WINDOWED = ("Conv", "MaxPool", "AveragePool")


def _is_1d(node: gs.Node) -> bool:
    if node.op == "Conv":
        weight = node.inputs[1]
        return isinstance(weight, gs.Constant) and np.ndim(weight.values) == 3
    return len(node.attrs.get("kernel_shape", ())) == 1


def _attrs_2d(attrs: dict) -> dict:
    widened = dict(attrs)
    for key in ("kernel_shape", "strides", "dilations"):
        if key in attrs:
            widened[key] = [1, *attrs[key]]
    if "pads" in attrs:
        begin, end = attrs["pads"]
        widened["pads"] = [0, begin, 0, end]
    return widened


def as_2d(graph: gs.Graph, params: dict) -> int:
    """Rewrite every 1-D Conv/MaxPool/AveragePool of `graph`; `params` (the int8 parameters by
    tensor name) gets entries for the new tensors. Returns how many were rewritten."""
    axis = gs.Constant("conv1d:axis", np.array([2], np.int64))
    count = 0
    for node in [n for n in graph.nodes if n.op in WINDOWED and _is_1d(n)]:
        x, y = node.inputs[0], node.outputs[0]
        if len(node.outputs) != 1:
            continue  # MaxPool with indices: left for the refusal
        tall = gs.Variable(f"{x.name}:{node.name}:2d", dtype=x.dtype)
        wide = gs.Variable(f"{y.name}:2d", dtype=y.dtype)
        graph.nodes.append(gs.Node("Unsqueeze", f"{node.name}/unsqueeze", inputs=[x, axis], outputs=[tall]))
        graph.nodes.append(gs.Node("Squeeze", f"{node.name}/squeeze", inputs=[wide, axis], outputs=[y]))
        for old, new in ((x, tall), (y, wide)):
            if old.name in params:
                params[new.name] = params[old.name]
        inputs = [tall, *node.inputs[1:]]
        if node.op == "Conv":
            weight = node.inputs[1]
            kernel = gs.Constant(f"{weight.name}:2d", np.ascontiguousarray(np.asarray(weight.values)[:, :, None, :]))
            if weight.name in params:
                params[kernel.name] = params[weight.name]  # per output channel on axis 0 either way
            inputs[1] = kernel
        node.inputs, node.outputs = inputs, [wide]
        node.attrs = _attrs_2d(node.attrs)
        count += 1
    if count:
        graph.nodes = sort_nodes(graph)  # iterative: onnx-graphsurgeon's toposort recurses per node
    return count
