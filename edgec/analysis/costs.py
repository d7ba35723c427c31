"""Per-layer compute and data volume: MACs, parameters, bytes read and written."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import onnx_graphsurgeon as gs

from edgec import ir
from edgec.graph_utils import constant_value

# Recurrent ops: gates per cell (LSTM 4, GRU 3, vanilla RNN 1).
_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


@dataclass
class LayerCost:
    name: str
    op: str
    macs: int
    params: int
    weight_bytes: int
    input_bytes: int  # activations read (constants excluded)
    output_bytes: int
    output_shape: list | None
    scope: str = ""  # "" in the main graph; "If_0|then_branch|" inside a subgraph ("|" as names hold "/")

    def to_json(self) -> dict:
        return asdict(self)


def concrete(shape) -> list[int] | None:
    """Shape with symbolic dimensions (batch) taken as 1; None if the rank is unknown."""
    if shape is None:
        return None
    return [int(d) if isinstance(d, (int, np.integer)) and d >= 0 else 1 for d in shape]


def tensor_bytes(tensor: gs.Tensor) -> int:
    if isinstance(tensor, gs.Constant):
        return int(tensor.values.nbytes)
    shape = concrete(tensor.shape)
    if shape is None or tensor.dtype is None or isinstance(tensor.dtype, int):
        return 0
    return math.prod(shape) * np.dtype(tensor.dtype).itemsize  # Python ints: a dim of 2^62 must not wrap


def node_macs(node: gs.Node) -> int:
    """Multiply-accumulates of one node at batch 1 (0 for ops without a dot-product core)."""
    out = concrete(node.outputs[0].shape) if node.outputs else None
    inputs = node.inputs
    if node.op == "Conv" and out is not None and inputs[1].shape is not None:
        # Every output element is a dot product over (C_in / group) x kernel.
        return _prod(out) * _prod(concrete(inputs[1].shape)[1:])
    if node.op == "ConvTranspose" and inputs[0].shape is not None and inputs[1].shape is not None:
        # Every input element is scattered over (C_out / group) x kernel outputs.
        return _prod(concrete(inputs[0].shape)) * _prod(concrete(inputs[1].shape)[1:])
    if node.op == "Gemm" and out is not None and inputs[0].shape is not None:
        a = concrete(inputs[0].shape)
        k = a[0] if node.attrs.get("transA", 0) else a[-1]
        return _prod(out) * k
    if node.op == "MatMul" and out is not None and inputs[0].shape is not None:
        return _prod(out) * concrete(inputs[0].shape)[-1]
    if node.op in _GATES and inputs[0].shape is not None:
        seq, batch, features = concrete(inputs[0].shape)
        hidden = int(node.attrs["hidden_size"])
        directions = 2 if node.attrs.get("direction", "forward") == "bidirectional" else 1
        return seq * batch * directions * _GATES[node.op] * hidden * (features + hidden)
    return 0


def _prod(values) -> int:
    return math.prod(int(v) for v in values) if values else 1  # Python ints never overflow to 0


def _params(node: gs.Node) -> tuple[int, int]:
    """(elements, bytes) of the weights a node reads: floating point or quantized constants."""
    count = nbytes = 0
    for tensor in node.inputs:
        value = constant_value(tensor)  # initializers and Constant nodes' outputs alike
        if (
            value is not None
            and value.size > 1
            and (np.issubdtype(value.dtype, np.floating) or node.op == "DequantizeLinear")
        ):
            count += value.size
            nbytes += value.nbytes
    return count, nbytes


def layer_costs(model: ir.Model) -> list[LayerCost]:
    """One entry per node, subgraph nodes included (with their scope). Runs shape inference."""
    ir.infer_shapes(model)
    costs: list[LayerCost] = []
    _collect(model.graph, "", costs)
    return costs


def _collect(graph: gs.Graph, scope: str, costs: list[LayerCost]) -> None:
    for index, node in enumerate(graph.nodes):
        name = node.name or f"{node.op}_{index}"
        params, weight_bytes = _params(node)
        out = node.outputs[0] if node.outputs else None
        costs.append(
            LayerCost(
                name=name,
                op=node.op,
                macs=node_macs(node),
                params=params,
                weight_bytes=weight_bytes,
                input_bytes=sum(tensor_bytes(t) for t in node.inputs if constant_value(t) is None and not t.is_empty()),
                output_bytes=sum(tensor_bytes(t) for t in node.outputs if not t.is_empty()),
                output_shape=None
                if out is None or out.shape is None
                else [d if isinstance(d, int) else str(d) for d in out.shape],
                scope=scope,
            )
        )
        for attr, sub in node.attrs.items():
            if isinstance(sub, gs.Graph):
                _collect(sub, f"{scope}{name}|{attr}|", costs)


def total_macs(graph: gs.Graph) -> int:
    """MACs of one inference at batch 1. An If runs one branch, so it counts its costliest one;
    a Loop or Scan body counts once (its trip count is data, not structure)."""
    total = 0
    for node in graph.nodes:
        total += node_macs(node)
        bodies = [total_macs(sub) for sub in node.subgraphs()]
        if bodies:
            total += max(bodies) if node.op == "If" else sum(bodies)
    return total


def executed_layers(costs: list[LayerCost]) -> list[LayerCost]:
    """The layers one inference runs: of each If, only the costliest branch (as total_macs counts)."""
    totals: dict[str, int] = {}
    for cost in costs:
        totals[cost.scope] = totals.get(cost.scope, 0) + cost.macs
    best: dict[str, str] = {}  # owner node path -> chosen branch scope
    for scope, macs in totals.items():
        if scope:
            owner = scope.rstrip("|").rsplit("|", 1)[0]
            if owner not in best or macs > totals[best[owner]]:
                best[owner] = scope
    chosen = set(best.values())

    def runs(scope: str) -> bool:
        parts = scope.rstrip("|").split("|") if scope else []
        # every "node|attr|" prefix of the scope must be a chosen branch
        return all("|".join(parts[:i]) + "|" in chosen for i in range(2, len(parts) + 1, 2))

    return [c for c in costs if runs(c.scope)]
