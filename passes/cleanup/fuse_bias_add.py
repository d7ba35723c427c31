"""Fuse an Add of a constant after Conv/ConvTranspose/Gemm into the bias, and MatMul + Add into Gemm."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from edgec.graph_utils import (
    NameGen,
    absorb_into_producer,
    constant_value,
    only_consumer,
    optional_constant,
    set_constant_input,
)
from edgec.ir import iter_graphs
from edgec.pass_infra import Pass, PassContext, PassResult


class FuseBiasAddPass(Pass):
    name = "fuse-bias-add"
    summary = "Fuse Conv/Gemm + Add(constant) into the bias input, and 2-D MatMul + Add into Gemm."

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        names = NameGen(graph)
        fused = {"conv": 0, "gemm": 0, "matmul_to_gemm": 0}
        for g in list(iter_graphs(graph)):
            for add in [n for n in g.nodes if n.op == "Add"]:
                match = _match(g, add)
                if match is None:
                    continue
                producer, x, bias = match
                kind = _FUSERS[producer.op](producer, bias, names)
                if kind:
                    absorb_into_producer(g, add, x)
                    fused[kind] += 1
        return PassResult(sum(fused.values()) > 0, fused)


def _match(graph: gs.Graph, add: gs.Node):
    """(producer, its output, constant addend) when `add` adds a constant to a fusible producer."""
    for x, other in (add.inputs, add.inputs[::-1]):
        bias = constant_value(other)
        if bias is None or len(x.inputs) != 1 or only_consumer(graph, x) is not add:
            continue
        producer = x.inputs[0]
        if producer.op in _FUSERS and len(producer.outputs) == 1:
            return producer, x, bias
    return None


def _channel_bias(bias: np.ndarray, rank: int, channels: int) -> np.ndarray | None:
    """The addend as a per-channel vector, if it only varies along axis 1 of a rank-`rank` output."""
    if bias.ndim > rank:
        return None
    shape = [1] * (rank - bias.ndim) + list(bias.shape)
    if any(d != 1 for axis, d in enumerate(shape) if axis != 1) or shape[1] not in (1, channels):
        return None
    return np.broadcast_to(bias.reshape(-1), (channels,)).astype(np.float64)


def _row_bias_fits(bias: np.ndarray, rows, cols: int) -> bool:
    """Whether adding `bias` to an [M, N] result keeps it [M, N] (M may be symbolic)."""
    if bias.ndim > 2:
        return False
    shape = [1] * (2 - bias.ndim) + list(bias.shape)
    return shape[1] in (1, cols) and (shape[0] == 1 or (isinstance(rows, int) and shape[0] == rows))


def _fuse_conv(conv: gs.Node, bias: np.ndarray, names: NameGen) -> str | None:
    w = constant_value(conv.inputs[1])
    if w is None:
        return None
    channels = w.shape[0] if conv.op == "Conv" else w.shape[1] * int(conv.attrs.get("group", 1))
    per_channel = _channel_bias(bias, w.ndim, channels)
    old = optional_constant(conv, 2)
    if per_channel is None or old is False or bias.dtype != w.dtype:
        return None
    total = per_channel + (0.0 if old is None else old.astype(np.float64))
    set_constant_input(conv, 2, total.astype(w.dtype), names, f"{conv.name}_bias")
    return "conv"


def _fuse_gemm(gemm: gs.Node, bias: np.ndarray, names: NameGen) -> str | None:
    b = constant_value(gemm.inputs[1])
    old = optional_constant(gemm, 2)
    if b is None or old is False or bias.dtype != b.dtype:
        return None
    trans_a, trans_b = int(gemm.attrs.get("transA", 0)), int(gemm.attrs.get("transB", 0))
    a_shape = gemm.inputs[0].shape
    rows = a_shape[1 if trans_a else 0] if a_shape is not None and len(a_shape) == 2 else None
    if not _row_bias_fits(bias, rows, b.shape[0 if trans_b else 1]):
        return None
    beta = float(gemm.attrs.get("beta", 1.0))
    total = bias.astype(np.float64) + (0.0 if old is None else beta * old.astype(np.float64))
    set_constant_input(gemm, 2, np.asarray(total, dtype=b.dtype), names, f"{gemm.name}_C")
    gemm.attrs["beta"] = 1.0
    return "gemm"


def _fuse_matmul(matmul: gs.Node, bias: np.ndarray, names: NameGen) -> str | None:
    # Gemm is MatMul + Add only for [M, K] x [K, N]; higher ranks have no Gemm spelling.
    a, b_tensor = matmul.inputs
    b = constant_value(b_tensor)
    if b is None or b.ndim != 2 or a.shape is None or len(a.shape) != 2 or bias.dtype != b.dtype:
        return None
    if not _row_bias_fits(bias, a.shape[0], b.shape[1]):
        return None
    matmul.op = "Gemm"
    matmul.attrs = {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0}
    matmul.inputs.append(gs.Constant(names(f"{matmul.name or 'gemm'}_C"), np.asarray(bias, order="C")))
    return "matmul_to_gemm"


_FUSERS = {"Conv": _fuse_conv, "ConvTranspose": _fuse_conv, "Gemm": _fuse_gemm, "MatMul": _fuse_matmul}
