"""Small graph queries and rewrites that several passes share."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs


def constant_value(tensor: gs.Tensor) -> np.ndarray | None:
    """The value of an initializer or of a Constant node's output; None for anything computed."""
    if isinstance(tensor, gs.Constant):
        return tensor.values
    if len(tensor.inputs) == 1 and tensor.inputs[0].op == "Constant":
        attrs = tensor.inputs[0].attrs
        if "value" in attrs and isinstance(attrs["value"], gs.Constant):
            return attrs["value"].values
    return None


def producer(tensor: gs.Tensor | None) -> gs.Node | None:
    """The node that computes `tensor`; None for a graph input, an initializer or no tensor."""
    if tensor is None or not isinstance(tensor, gs.Variable) or len(tensor.inputs) != 1:
        return None
    return tensor.inputs[0]


def is_graph_output(graph: gs.Graph, tensor: gs.Tensor) -> bool:
    return any(out is tensor for out in graph.outputs)


def only_consumer(graph: gs.Graph, tensor: gs.Tensor) -> gs.Node | None:
    """The node that alone reads `tensor`, if it is not also a graph output."""
    if len(tensor.outputs) == 1 and not is_graph_output(graph, tensor):
        return tensor.outputs[0]
    return None


def remove_node(graph: gs.Graph, node: gs.Node) -> None:
    """Disconnect and delete one node. By identity: gs.Node.__eq__ compares contents."""
    node.inputs.clear()
    node.outputs.clear()
    graph.nodes = [n for n in graph.nodes if n is not node]


def replace_uses(graph: gs.Graph, old: gs.Tensor, new: gs.Tensor) -> None:
    """Point every consumer of `old` (subgraph nodes included) at `new`."""
    for consumer in list(old.outputs):
        for i, tensor in enumerate(consumer.inputs):
            if tensor is old:
                consumer.inputs[i] = new


def bypass(graph: gs.Graph, node: gs.Node, source: gs.Tensor) -> bool:
    """Remove `node`, whose single output equals `source`, by wiring its readers to `source`.

    When the output is a graph output its name must survive; the producer of `source` is then
    renamed to write it directly, which is only possible if `source` is a private intermediate.
    Returns False (and changes nothing) when that is impossible.
    """
    out = node.outputs[0]
    if is_graph_output(graph, out):
        renamable = (
            len(source.inputs) == 1
            and not isinstance(source, gs.Constant)
            and not any(t is source for t in graph.inputs)
            and not is_graph_output(graph, source)
            and any(n is source.inputs[0] for n in graph.nodes)  # produced here, not in an outer scope
        )
        if not renamable:
            return False
        replace_uses(graph, out, source)
        source.name = out.name
        if out.dtype is not None:
            source.dtype, source.shape = out.dtype, out.shape
        graph.outputs = [source if t is out else t for t in graph.outputs]
    else:
        replace_uses(graph, out, source)
    remove_node(graph, node)
    return True


def absorb_into_producer(graph: gs.Graph, node: gs.Node, x: gs.Tensor) -> None:
    """Delete `node`, whose effect its producer now computes: the producer's output `x` takes over
    the node's output name (which may be a graph output), so the model's interface is unchanged."""
    y = node.outputs[0]
    remove_node(graph, node)
    replace_uses(graph, y, x)
    x.name = y.name
    if y.dtype is not None:
        x.dtype, x.shape = y.dtype, y.shape
    graph.outputs = [x if t is y else t for t in graph.outputs]


def reduce_node(
    op: str, tensor: gs.Tensor, output: gs.Variable, axes: list[int], opset: int, axes_name: str, keepdims: int = 0
) -> gs.Node:
    """A Reduce* node over `axes`: an attribute before opset 18, an input (a constant named
    `axes_name`) from opset 18 on."""
    if opset >= 18:
        axes_input = gs.Constant(axes_name, np.array(axes, np.int64))
        return gs.Node(op, attrs={"keepdims": keepdims}, inputs=[tensor, axes_input], outputs=[output])
    return gs.Node(op, attrs={"keepdims": keepdims, "axes": list(axes)}, inputs=[tensor], outputs=[output])


def set_constant_input(node: gs.Node, index: int, values: np.ndarray, names: "NameGen", base: str) -> None:
    """Give `node` new constant data at input `index` (appending empty inputs as needed).
    A constant that only this node reads is updated in place; a shared one is never touched."""
    while len(node.inputs) <= index:
        node.inputs.append(gs.Variable.empty())
    current = node.inputs[index]
    if isinstance(current, gs.Constant) and len(current.outputs) == 1:
        current.values = np.asarray(values, order="C")
    else:
        node.inputs[index] = gs.Constant(names(base), np.asarray(values, order="C"))


def optional_constant(node: gs.Node, index: int) -> np.ndarray | None | bool:
    """The constant at optional input `index`: None when absent, False when present but computed."""
    if index >= len(node.inputs) or node.inputs[index].is_empty():
        return None
    value = constant_value(node.inputs[index])
    return False if value is None else value


class NameGen:
    """Hands out tensor names unused anywhere in the model, subgraphs included (ONNX forbids
    a subgraph name shadowing an outer one). Deterministic, so builds are reproducible."""

    def __init__(self, root: gs.Graph):
        from edgec.ir import iter_graphs

        self.taken = {name for g in iter_graphs(root) for name in g.tensors()}
        self.taken |= {n.name for g in iter_graphs(root) for n in g.nodes if n.name}

    def __call__(self, base: str) -> str:
        name, i = base, 0
        while name in self.taken:
            i += 1
            name = f"{base}_{i}"
        self.taken.add(name)
        return name


def attr_tensor_to_numpy(value) -> np.ndarray:
    if isinstance(value, gs.Constant):
        return value.values
    if isinstance(value, onnx.TensorProto):
        return onnx.numpy_helper.to_array(value)
    return np.asarray(value)


def static_shape(tensor: gs.Tensor) -> list[int] | None:
    """The tensor's shape if every dimension is a known integer."""
    shape = tensor.shape
    if shape is None or not all(isinstance(d, (int, np.integer)) and d >= 0 for d in shape):
        return None
    return [int(d) for d in shape]
