"""GRU and LSTM unrolled over their static sequence length into fully connected layers and
elementwise gates: TFLite's UNIDIRECTIONAL_SEQUENCE_LSTM has no final cell state output and there
is no GRU kernel, while a streaming model (PLCMOS's GRUs, silero-vad's LSTM state) needs both;
TVM's Relax importer converts neither. The TFLite lowering unrolls before lowering, TVM builds
run the `unroll-recurrent` pass last. The input projection of every step is one MatMul over the
whole sequence; each step adds its recurrent MatMul and computes the gates as ONNX defines them
(default activations, no clip, forward / reverse / bidirectional, layout 0)."""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx_graphsurgeon as gs

from edgec.passes.cleanup.topological_sort import sort_nodes

GATES = {"GRU": 3, "LSTM": 4}
MAX_STEPS = 1024  # one graph node group per step: longer sequences are refused, not unrolled


class _Emitter:
    def __init__(self, graph: gs.Graph, node: gs.Node):
        self.graph, self.prefix, self.count = graph, node.name or node.outputs[0].name, 0

    def __call__(self, op: str, inputs: list, attrs: dict | None = None, outputs: int = 1):
        self.count += 1
        outs = [gs.Variable(f"{self.prefix}/{op.lower()}{self.count}_{i}", dtype=np.float32) for i in range(outputs)]
        self.graph.nodes.append(gs.Node(op, f"{self.prefix}/{op}{self.count}", attrs or {}, list(inputs), outs))
        return outs[0] if outputs == 1 else outs

    def const(self, values, suffix: str) -> gs.Constant:
        self.count += 1
        return gs.Constant(f"{self.prefix}/{suffix}{self.count}", np.array(values, order="C"))  # 0-d stays 0-d


def _attr(node: gs.Node, key: str, default):
    value = node.attrs.get(key, default)
    return value.decode() if isinstance(value, bytes) else value


def _supported(node: gs.Node) -> str | None:
    """Why `node` cannot be unrolled here, or None."""
    if _attr(node, "layout", 0) != 0:
        return "layout=1"
    if node.attrs.get("clip") is not None:
        return "clip"
    if node.attrs.get("activations") and [a.decode() if isinstance(a, bytes) else a for a in node.attrs["activations"]] != (
        ["Sigmoid", "Tanh"] * 2 if node.op == "GRU" else ["Sigmoid", "Tanh", "Tanh"] * 2
    )[: len(node.attrs["activations"])]:
        return "activations other than the defaults"
    if node.op == "LSTM" and int(_attr(node, "input_forget", 0)):
        return "input_forget=1"
    if len(node.inputs) > 4 and not node.inputs[4].is_empty():
        return "sequence_lens (padded batches)"
    for position in (1, 2, 3, 7):
        if len(node.inputs) > position and not node.inputs[position].is_empty():
            if not isinstance(node.inputs[position], gs.Constant):
                return f"input {position} is not a constant"
    shape = node.inputs[0].shape
    if shape is None or len(shape) != 3 or not all(isinstance(d, int) and d > 0 for d in shape):
        return "the sequence needs a static shape (use --input-shape)"
    if shape[0] > MAX_STEPS:
        return f"{shape[0]} time steps: unrolled only up to {MAX_STEPS}"
    return None


def _optional(node: gs.Node, position: int):
    return node.inputs[position] if len(node.inputs) > position and not node.inputs[position].is_empty() else None


def unroll(graph: gs.Graph, refuse: Callable[[gs.Node, str], None] | None = None) -> int:
    """Replace every GRU/LSTM of `graph` (main graph) with its unrolled steps; returns how many.
    One that cannot be unrolled is passed to `refuse(node, why)` (the TFLite lowering raises
    there) and otherwise left as it is."""
    count = 0
    for node in [n for n in graph.nodes if n.op in GATES]:
        why = _supported(node)
        if why is not None:
            if refuse is not None:
                refuse(node, why)
            continue
        _unroll(graph, node)
        count += 1
    if count:
        graph.nodes = sort_nodes(graph)  # iterative: onnx-graphsurgeon's toposort recurses per step
    return count


def _unroll(graph: gs.Graph, node: gs.Node) -> None:
    emit = _Emitter(graph, node)
    gates = GATES[node.op]
    x = node.inputs[0]
    steps, batch, _ = x.shape
    hidden = int(node.attrs["hidden_size"])
    w = np.asarray(node.inputs[1].values, np.float32)  # (D, G*H, I)
    r = np.asarray(node.inputs[2].values, np.float32)  # (D, G*H, H)
    directions = w.shape[0]
    b = _optional(node, 3)
    b = np.asarray(b.values, np.float32) if b is not None else np.zeros((directions, 2 * gates * hidden), np.float32)
    initial_h, initial_c = _optional(node, 5), _optional(node, 6) if node.op == "LSTM" else None
    peepholes = _optional(node, 7) if node.op == "LSTM" else None
    if peepholes is not None:
        refuse(node, "peephole connections: not unrolled for TFLite")
    direction = _attr(node, "direction", "forward")
    linear_before_reset = int(_attr(node, "linear_before_reset", 0))
    per_direction_y, final_h, final_c = [], [], []
    for d in range(directions):
        reverse = direction == "reverse" or (direction == "bidirectional" and d == 1)
        bias_w, bias_r = b[d, : gates * hidden], b[d, gates * hidden :]
        # All steps' input projections at once: (T, B, I) x (I, G*H) + input biases.
        projected = emit("Add", [emit("MatMul", [x, emit.const(w[d].T, "w")]), emit.const(bias_w, "bw")])
        h = _state(emit, initial_h, d, batch, hidden)
        c = _state(emit, initial_c, d, batch, hidden) if node.op == "LSTM" else None
        weights = _recurrent_weights(emit, node.op, r[d], bias_r, hidden)  # one copy for every step
        outputs = [None] * steps
        for t in reversed(range(steps)) if reverse else range(steps):
            xw = emit("Gather", [projected, emit.const(np.array(t, np.int64), "t")], {"axis": 0})  # (B, G*H)
            if node.op == "GRU":
                h = _gru_step(emit, xw, h, weights, linear_before_reset)
            else:
                h, c = _lstm_step(emit, xw, h, c, weights)
            outputs[t] = h
        axes = emit.const(np.array([0, 1], np.int64), "axes")
        per_direction_y.append(emit("Concat", [emit("Unsqueeze", [o, axes]) for o in outputs], {"axis": 0}))
        first = emit.const(np.array([0], np.int64), "axis")
        final_h.append(emit("Unsqueeze", [h, first]))
        if c is not None:
            final_c.append(emit("Unsqueeze", [c, first]))
    results = [
        per_direction_y[0] if directions == 1 else emit("Concat", per_direction_y, {"axis": 1}),
        final_h[0] if directions == 1 else emit("Concat", final_h, {"axis": 0}),
    ]
    if final_c:
        results.append(final_c[0] if directions == 1 else emit("Concat", final_c, {"axis": 0}))
    for produced, wanted in zip(results, node.outputs):
        if wanted.is_empty():
            continue
        graph.nodes.append(gs.Node("Identity", f"{emit.prefix}/out_{wanted.name}", inputs=[produced], outputs=[wanted]))
    node.outputs.clear()
    node.inputs.clear()
    graph.nodes.remove(node)


def _state(emit: _Emitter, initial, d: int, batch: int, hidden: int):
    if initial is None:
        return emit.const(np.zeros((batch, hidden), np.float32), "zeros")
    return emit("Gather", [initial, emit.const(np.array(d, np.int64), "d")], {"axis": 0})


def _recurrent_weights(emit: _Emitter, op: str, r: np.ndarray, bias_r: np.ndarray, hidden: int) -> dict:
    """The recurrent matrices (transposed for MatMul), biases and split sizes, as constants."""
    if op == "GRU":
        return {
            "r_zr": emit.const(r[: 2 * hidden].T, "r"), "b_zr": emit.const(bias_r[: 2 * hidden], "br"),
            "r_h": emit.const(r[2 * hidden :].T, "rh"), "b_h": emit.const(bias_r[2 * hidden :], "brh"),
            "split2": emit.const(np.full(2, hidden, np.int64), "split"),
            "split3": emit.const(np.full(3, hidden, np.int64), "split"),
        }
    return {"r": emit.const(r.T, "r"), "b": emit.const(bias_r, "br"), "split4": emit.const(np.full(4, hidden, np.int64), "split")}


def _split(emit: _Emitter, value, sizes: gs.Constant) -> list:
    return emit("Split", [value, sizes], {"axis": 1}, outputs=int(sizes.values.size))


def _gru_step(emit, xw, h, weights: dict, linear_before_reset: int):
    """ONNX GRU, gates z, r, h (h~ uses the reset gate before or after its recurrent product)."""
    x_z, x_r, x_h = _split(emit, xw, weights["split3"])
    r_zr = emit("Add", [emit("MatMul", [h, weights["r_zr"]]), weights["b_zr"]])
    h_z, h_r = _split(emit, r_zr, weights["split2"])
    z = emit("Sigmoid", [emit("Add", [x_z, h_z])])
    reset = emit("Sigmoid", [emit("Add", [x_r, h_r])])
    if linear_before_reset:
        recurrent = emit("Mul", [reset, emit("Add", [emit("MatMul", [h, weights["r_h"]]), weights["b_h"]])])
    else:
        recurrent = emit("Add", [emit("MatMul", [emit("Mul", [reset, h]), weights["r_h"]]), weights["b_h"]])
    candidate = emit("Tanh", [emit("Add", [x_h, recurrent])])
    # (1 - z) * h~ + z * h = h~ + z * (h - h~)
    return emit("Add", [candidate, emit("Mul", [z, emit("Sub", [h, candidate])])])


def _lstm_step(emit, xw, h, c, weights: dict):
    """ONNX LSTM, gates i, o, f, c; no peepholes."""
    gates = emit("Add", [xw, emit("Add", [emit("MatMul", [h, weights["r"]]), weights["b"]])])
    i, o, f, g = _split(emit, gates, weights["split4"])
    c = emit("Add", [emit("Mul", [emit("Sigmoid", [f]), c]), emit("Mul", [emit("Sigmoid", [i]), emit("Tanh", [g])])])
    h = emit("Mul", [emit("Sigmoid", [o]), emit("Tanh", [c])])
    return h, c
