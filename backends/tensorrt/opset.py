"""Opset 14-21 graphs rewritten into opset 13, the newest TensorRT 8.2's ONNX parser reads.

onnx.version_converter has no down-conversion adapters for most operators (it stops at
"No Adapter From Version 14 for Relu"), so edgec does it itself. For most operators the newer
versions only widened the types, and the opset-13 schema accepts the node as it is (the
checker confirms that afterwards). The others moved an attribute into an input or added an
attribute; those are rewritten here, or named in an error when opset 13 cannot express them.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Callable

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from edgec.errors import EdgecError
from edgec.graph_utils import NameGen, constant_value
from edgec.ir import iter_graphs

TARGET_OPSET = 13
INT64_MAX = np.iinfo(np.int64).max
REDUCE_OPS = (
    "ReduceMean",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceSumSquare",
)


def downgrade(graph: gs.Graph) -> Counter:
    """Rewrite every node newer than opset 13 into its opset-13 form; returns the rewrites done
    (per operator) and raises one EdgecError naming the nodes that have none."""
    opset = int(graph.opset)
    done: Counter = Counter()
    if opset <= TARGET_OPSET:
        return done
    names = NameGen(graph)
    problems = []
    for g in list(iter_graphs(graph)):
        for node in list(g.nodes):
            if node.domain not in ("", "ai.onnx", None):
                continue
            try:
                since = onnx.defs.get_schema(node.op, opset, "").since_version
            except onnx.defs.SchemaError:
                continue  # not an ONNX operator: the support check names it
            if since <= TARGET_OPSET or node.op not in FIXES:
                continue
            problem = FIXES[node.op](node, g, names)
            if problem:
                problems.append(f"{node.op} '{node.name}' ({problem})")
            elif problem is not None:  # "" means rewritten
                done[node.op] += 1
        g.toposort(recurse_subgraphs=False)
    if problems:
        raise EdgecError(
            f"TensorRT 8.2 reads ONNX opset {TARGET_OPSET}, which cannot express {len(problems)} node(s): "
            + "; ".join(problems[:6])
            + ("; ..." if len(problems) > 6 else "")
        )
    for g in iter_graphs(graph):
        g.opset = TARGET_OPSET
    return done


# Each fix returns None (nothing to do), "" (rewritten) or the reason opset 13 cannot express it.
Fix = Callable[[gs.Node, gs.Graph, NameGen], "str | None"]


def _defaults(**expected) -> Fix:
    """Attributes added after opset 13: dropped when they hold the value that means "as before"."""

    def fix(node: gs.Node, graph: gs.Graph, names: NameGen) -> str | None:
        for attr, default in expected.items():
            if attr not in node.attrs:
                continue
            value = node.attrs[attr]
            same = default(value) if callable(default) else value == default
            if not same:
                return f"{attr}={value!r}"
            del node.attrs[attr]
        return None

    return fix


def _all_ones(value) -> bool:
    return all(int(v) == 1 for v in value)


def _reshape(node: gs.Node, graph: gs.Graph, names: NameGen) -> str | None:
    """allowzero=1 (opset 14) differs from opset 13 only where the shape holds a 0."""
    if not int(node.attrs.pop("allowzero", 0)):
        return None
    shape = constant_value(node.inputs[1])
    if shape is None or (np.asarray(shape) == 0).any():
        return "allowzero=1 with a zero in the shape"
    return None


def _shape(node: gs.Node, graph: gs.Graph, names: NameGen) -> str | None:
    """Shape's start/end (opset 15) become a Slice of the whole shape."""
    start, end = int(node.attrs.pop("start", 0)), node.attrs.pop("end", None)
    if start == 0 and end is None:
        return None
    out = node.outputs[0]
    full = gs.Variable(names(f"{out.name}_full"), dtype=np.int64)
    node.outputs[0] = full

    def const(suffix: str, value: int) -> gs.Constant:
        return gs.Constant(names(f"{out.name}_{suffix}"), np.asarray([value], dtype=np.int64))

    ends = const("end", INT64_MAX if end is None else int(end))
    graph.nodes.append(
        gs.Node("Slice", names(f"{node.name}_slice"), {}, [full, const("start", start), ends, const("axis", 0)], [out])
    )
    return ""


def _reduce(node: gs.Node, graph: gs.Graph, names: NameGen) -> str | None:
    """Reductions took their axes as an attribute until opset 18."""
    noop = int(node.attrs.pop("noop_with_empty_axes", 0))
    if len(node.inputs) < 2 or node.inputs[1].is_empty():
        return "noop_with_empty_axes=1" if noop else None
    axes = constant_value(node.inputs[1])
    if axes is None:
        return "axes computed at run time"
    if axes.size == 0:
        _keep_inputs(node, 1)
        return "noop_with_empty_axes=1" if noop else ""
    node.attrs["axes"] = [int(a) for a in np.asarray(axes).ravel()]
    _keep_inputs(node, 1)
    return ""


def _split(node: gs.Node, graph: gs.Graph, names: NameGen) -> str | None:
    """num_outputs (opset 18) becomes the explicit sizes opset 13 takes as its second input."""
    count = node.attrs.pop("num_outputs", None)
    if count is None:
        return None
    x = node.inputs[0]
    axis = int(node.attrs.get("axis", 0))
    dim = x.shape[axis] if x.shape is not None else None
    if not isinstance(dim, (int, np.integer)) or dim < 0:
        return "num_outputs over a dimension unknown before run time"
    chunk = math.ceil(int(dim) / int(count))  # opset 18: the last chunk takes what is left
    sizes = [chunk] * (int(count) - 1) + [int(dim) - chunk * (int(count) - 1)]
    _keep_inputs(node, 1)
    node.inputs.append(gs.Constant(names(f"{node.name or x.name}_split"), np.asarray(sizes, dtype=np.int64)))
    return ""


def _pad(node: gs.Node, graph: gs.Graph, names: NameGen) -> str | None:
    """Pad's axes input (opset 18) is spelled out as pads for every axis."""
    if node.attrs.get("mode", "constant") == "wrap":
        return "mode='wrap'"
    if len(node.inputs) < 4 or node.inputs[3].is_empty():
        return None
    axes, pads, x = constant_value(node.inputs[3]), constant_value(node.inputs[1]), node.inputs[0]
    if axes is None or pads is None or x.shape is None:
        return "axes or pads computed at run time"
    rank = len(x.shape)
    full = np.zeros(2 * rank, dtype=np.int64)
    axes = [int(a) % rank for a in np.asarray(axes).ravel()]
    for i, axis in enumerate(axes):
        full[axis], full[axis + rank] = pads[i], pads[i + len(axes)]
    node.inputs[1] = gs.Constant(names(f"{node.name or x.name}_pads"), full)
    _keep_inputs(node, 3)
    return ""


def _resize(node: gs.Node, graph: gs.Graph, names: NameGen) -> str | None:
    if "axes" in node.attrs:
        return "axes"
    return _defaults(antialias=0, keep_aspect_ratio_policy="stretch")(node, graph, names)


def _qdq(node: gs.Node, graph: gs.Graph, names: NameGen) -> str | None:
    """saturate only concerns float8; output_dtype is implied by the zero point (always present
    by now, see precision.tensorrt_qdq)."""
    node.attrs.pop("saturate", None)
    has_zero_point = len(node.inputs) > 2 and not node.inputs[2].is_empty()
    if int(node.attrs.get("output_dtype", 0)) and has_zero_point:
        del node.attrs["output_dtype"]
    return _defaults(block_size=0, output_dtype=0)(node, graph, names)


def _cast(node: gs.Node, graph: gs.Graph, names: NameGen) -> str | None:
    node.attrs.pop("saturate", None)  # float8 only
    return None


def _keep_inputs(node: gs.Node, count: int) -> None:
    while len(node.inputs) > count:  # gs's synchronized lists do not take slice deletion
        node.inputs.pop()


FIXES: dict[str, Fix] = {
    "Reshape": _reshape,
    "Shape": _shape,
    "Split": _split,
    "Pad": _pad,
    "Resize": _resize,
    "Cast": _cast,
    "QuantizeLinear": _qdq,
    "DequantizeLinear": _qdq,
    "AveragePool": _defaults(dilations=_all_ones),
    "LpPool": _defaults(ceil_mode=0, dilations=_all_ones),
    "BatchNormalization": _defaults(training_mode=0),
    "GRU": _defaults(layout=0),
    "LSTM": _defaults(layout=0),
    "RNN": _defaults(layout=0),
    "ScatterND": _defaults(reduction="none"),
    "ScatterElements": _defaults(reduction="none"),
    **{op: _reduce for op in REDUCE_OPS},
}
