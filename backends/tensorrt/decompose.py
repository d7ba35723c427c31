"""Operators TensorRT 8.2's ONNX parser lacks, rewritten as ones it has (same function).

HardSwish (opset 14), LayerNormalization (17) and Gelu (20) are newer than the opset 13 the
parser reads; Reciprocal is listed as unsupported in onnx-tensorrt's 8.2 operator table. Each
rewrite keeps the node's output tensors, so readers and graph outputs keep their names.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import onnx_graphsurgeon as gs

from edgec.errors import EdgecError
from edgec.graph_utils import NameGen
from edgec.ir import iter_graphs


def decompose(graph: gs.Graph) -> Counter:
    """Rewrite every such node in the graph and its subgraphs; returns counts per operator."""
    names = NameGen(graph)
    done: Counter = Counter()
    for g in list(iter_graphs(graph)):
        for node in list(g.nodes):
            rewrite = REWRITES.get(node.op) if node.domain in ("", "ai.onnx", None) else None
            if rewrite is None:
                continue
            new_nodes = rewrite(node, names)
            node.inputs.clear()
            node.outputs.clear()
            g.nodes = [n for n in g.nodes if n is not node] + new_nodes
            done[node.op] += 1
        if done:
            g.toposort(recurse_subgraphs=False)
    return done


def _hard_swish(node: gs.Node, names: NameGen) -> list[gs.Node]:
    """HardSwish(x) = x * HardSigmoid(x; alpha=1/6, beta=1/2), the ONNX definition itself."""
    x, y = node.inputs[0], node.outputs[0]
    gate = gs.Variable(names(f"{y.name}_gate"), dtype=x.dtype, shape=x.shape)
    return [
        gs.Node("HardSigmoid", names(f"{node.name or y.name}_gate"), {"alpha": 1.0 / 6.0, "beta": 0.5}, [x], [gate]),
        gs.Node("Mul", names(f"{node.name or y.name}_mul"), {}, [x, gate], [y]),
    ]


def _reciprocal(node: gs.Node, names: NameGen) -> list[gs.Node]:
    x, y = node.inputs[0], node.outputs[0]
    one = gs.Constant(names(f"{y.name}_one"), np.ones((), dtype=_dtype(x)))
    return [gs.Node("Div", names(f"{node.name or y.name}_div"), {}, [one, x], [y])]


def _layer_norm(node: gs.Node, names: NameGen) -> list[gs.Node]:
    """Mean and variance over the trailing axes from `axis` (ReduceMean), then
    (x - mean) / sqrt(var + eps) * scale + bias, in the input's precision."""
    x, scale = node.inputs[0], node.inputs[1]
    bias = node.inputs[2] if len(node.inputs) > 2 and not node.inputs[2].is_empty() else None
    if x.shape is None:
        raise EdgecError(f"LayerNormalization '{node.name}': its input's rank is unknown, so it cannot be decomposed")
    rank = len(x.shape)
    axis = int(node.attrs.get("axis", -1))
    axes = list(range(axis % rank, rank))
    dtype = _dtype(x)
    base = node.name or node.outputs[0].name

    def var(suffix: str) -> gs.Variable:
        return gs.Variable(names(f"{base}_{suffix}"), dtype=dtype)

    outputs = list(node.outputs) + [gs.Variable.empty()] * (3 - len(node.outputs))
    y, mean_out, inv_std_out = outputs
    mean = mean_out if not mean_out.is_empty() else var("mean")
    centred, squared, variance, shifted, std, normed = (
        var(s) for s in ("centred", "squared", "variance", "shifted", "std", "normed")
    )
    eps = gs.Constant(names(f"{base}_eps"), np.asarray(node.attrs.get("epsilon", 1e-5), dtype=dtype))
    nodes = [
        gs.Node("ReduceMean", names(f"{base}_mean"), {"axes": axes, "keepdims": 1}, [x], [mean]),
        gs.Node("Sub", names(f"{base}_sub"), {}, [x, mean], [centred]),
        gs.Node("Mul", names(f"{base}_square"), {}, [centred, centred], [squared]),
        gs.Node("ReduceMean", names(f"{base}_var"), {"axes": axes, "keepdims": 1}, [squared], [variance]),
        gs.Node("Add", names(f"{base}_add_eps"), {}, [variance, eps], [shifted]),
        gs.Node("Sqrt", names(f"{base}_sqrt"), {}, [shifted], [std]),
        gs.Node("Div", names(f"{base}_div"), {}, [centred, std], [normed]),
    ]
    if bias is None:
        nodes.append(gs.Node("Mul", names(f"{base}_scale"), {}, [normed, scale], [y]))
    else:
        scaled = var("scaled")
        nodes.append(gs.Node("Mul", names(f"{base}_scale"), {}, [normed, scale], [scaled]))
        nodes.append(gs.Node("Add", names(f"{base}_bias"), {}, [scaled, bias], [y]))
    if not inv_std_out.is_empty():
        one = gs.Constant(names(f"{base}_one"), np.ones((), dtype=dtype))
        nodes.append(gs.Node("Div", names(f"{base}_inv_std"), {}, [one, std], [inv_std_out]))
    return nodes


def _gelu(node: gs.Node, names: NameGen) -> list[gs.Node]:
    """approximate="none": x/2 * (1 + erf(x/sqrt 2)); "tanh": x/2 * (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    x, y = node.inputs[0], node.outputs[0]
    dtype = _dtype(x)
    base = node.name or y.name

    def const(suffix: str, value: float) -> gs.Constant:
        return gs.Constant(names(f"{base}_{suffix}"), np.asarray(value, dtype=dtype))

    def var(suffix: str) -> gs.Variable:
        return gs.Variable(names(f"{base}_{suffix}"), dtype=dtype)

    half_x, inner, shaped, plus_one = var("half_x"), var("inner"), var("shaped"), var("plus_one")
    nodes = [gs.Node("Mul", names(f"{base}_half"), {}, [x, const("half", 0.5)], [half_x])]
    if node.attrs.get("approximate", "none") == "tanh":
        square, cube, cubic, poly = var("square"), var("cube"), var("cubic"), var("poly")
        nodes += [
            gs.Node("Mul", names(f"{base}_sq"), {}, [x, x], [square]),
            gs.Node("Mul", names(f"{base}_cube"), {}, [square, x], [cube]),
            gs.Node("Mul", names(f"{base}_cubic"), {}, [cube, const("k", 0.044715)], [cubic]),
            gs.Node("Add", names(f"{base}_poly"), {}, [x, cubic], [poly]),
            gs.Node("Mul", names(f"{base}_inner"), {}, [poly, const("c", math.sqrt(2.0 / math.pi))], [inner]),
            gs.Node("Tanh", names(f"{base}_tanh"), {}, [inner], [shaped]),
        ]
    else:
        nodes += [
            gs.Node("Mul", names(f"{base}_inner"), {}, [x, const("rsqrt2", 1.0 / math.sqrt(2.0))], [inner]),
            gs.Node("Erf", names(f"{base}_erf"), {}, [inner], [shaped]),
        ]
    nodes += [
        gs.Node("Add", names(f"{base}_plus_one"), {}, [shaped, const("one", 1.0)], [plus_one]),
        gs.Node("Mul", names(f"{base}_out"), {}, [half_x, plus_one], [y]),
    ]
    return nodes


def _dtype(tensor: gs.Tensor) -> np.dtype:
    dtype = tensor.dtype
    return np.dtype(dtype) if dtype is not None and not isinstance(dtype, int) else np.dtype(np.float32)


REWRITES = {
    "HardSwish": _hard_swish,
    "Reciprocal": _reciprocal,
    "LayerNormalization": _layer_norm,
    "Gelu": _gelu,
}
