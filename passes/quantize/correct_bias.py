"""Bias correction: pre-compensate the mean output shift that int8 weight rounding will cause.

Rounding W to int8 changes each output channel by (W_q - W) . x, whose expectation is
(W_q - W) . E[x]. This pass measures E[x] (per input channel) on the calibration data and moves
each bias by the opposite amount, so the quantize pass that follows lands on the float model's
means. It must run right before `quantize` with the same per_channel setting: it predicts the
exact int8 weights that pass will produce.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from edgec import ir
from edgec.compare import Tolerance
from edgec.graph_utils import NameGen, constant_value, set_constant_input
from edgec.pass_infra import Numerics, Pass, PassContext, PassResult
from edgec.quant import collect, qdq
from edgec.quant import scheme as schemes


class CorrectBiasPass(Pass):
    name = "correct-bias"
    summary = "Shift biases by the expected output error of int8 weight rounding (run right before quantize)."
    numerics = Numerics.LOSSY
    # On its own the float model moves by exactly the error quantize will take back.
    tolerance = Tolerance(min_cosine=0.999, min_sqnr_db=25.0)
    requires_calibration = True
    per_channel: bool = True

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        ir.infer_shapes(graph)
        layers = [n for n in graph.nodes if n.op in ("Conv", "Gemm") and _corrigible(n)]
        if not layers:
            return PassResult(False, {"layers": 0})
        means = _input_means(graph, layers, ctx)
        names = NameGen(graph)
        shifts = []
        for node in layers:
            mean = means.get(node.inputs[0].name)
            if mean is None:
                continue
            weight = constant_value(node.inputs[1])
            q, scale = schemes.quantize_weights(weight, qdq.weight_axis(node, self.per_channel))
            shape = [1] * weight.ndim
            axis = qdq.weight_axis(node, self.per_channel)
            if axis is not None:
                shape[axis] = -1
            error = q.astype(np.float64) * scale.reshape(shape) - weight.astype(np.float64)
            shift = _expected_output(node, error, mean)
            bias = constant_value(node.inputs[2]) if len(node.inputs) > 2 and not node.inputs[2].is_empty() else None
            base = np.zeros(shift.shape) if bias is None else bias.astype(np.float64)
            set_constant_input(node, 2, (base - shift).astype(weight.dtype), names, f"{node.name}_corrected_bias")
            if node.op == "Gemm":
                node.attrs["beta"] = 1.0 if bias is None else node.attrs.get("beta", 1.0)
            shifts.append(float(np.abs(shift).max()))
        return PassResult(bool(shifts), {"layers": len(shifts), "largest_shift": max(shifts, default=0.0)})


def _corrigible(node: gs.Node) -> bool:
    if constant_value(node.inputs[1]) is None or node.attrs.get("transA", 0):
        return False
    if node.op == "Gemm" and float(node.attrs.get("beta", 1.0)) != 1.0:
        return False
    if len(node.inputs) > 2 and not node.inputs[2].is_empty():
        bias = constant_value(node.inputs[2])
        return bias is not None and bias.ndim == 1
    return True


def _input_means(graph: gs.Graph, layers: list[gs.Node], ctx: PassContext) -> dict[str, np.ndarray]:
    """E[x] per channel (axis 1, averaged over batch and space) of each layer's input."""
    names = sorted({n.inputs[0].name for n in layers})
    exposed = collect.expose(ir.Model(graph), names)
    from edgec import runner

    session = runner.make_session(exposed)
    wanted = [o.name for o in session.get_outputs() if o.name in set(names)]
    sums: dict[str, np.ndarray] = {}
    count = 0
    inputs = [i.name for i in session.get_inputs()]
    for feeds, n in collect.batches(ctx.calibration, exposed):
        for name, value in zip(wanted, session.run(wanted, {k: feeds[k] for k in inputs})):
            axes = tuple(i for i in range(value.ndim) if i != 1)
            sums[name] = sums.get(name, 0.0) + value.astype(np.float64).mean(axis=axes) * n
        count += n
    return {name: total / count for name, total in sums.items()}


def _expected_output(node: gs.Node, error: np.ndarray, mean: np.ndarray) -> np.ndarray:
    if node.op == "Conv":
        group = int(node.attrs.get("group", 1))
        out_channels, per_group = error.shape[0], error.shape[1]
        # Output channel o reads input channels of its group: g * per_group ... (g + 1) * per_group.
        group_of = np.arange(out_channels) // (out_channels // group)
        channel_means = mean[(group_of[:, None] * per_group + np.arange(per_group)[None, :])]
        return (error.reshape(out_channels, per_group, -1).sum(axis=2) * channel_means).sum(axis=1)
    if node.attrs.get("transB", 0):
        return error @ mean  # B is [N, K]
    return mean @ error  # B is [K, N]
