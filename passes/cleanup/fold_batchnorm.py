"""Fold inference-mode BatchNormalization into the Conv, ConvTranspose, Gemm or MatMul before it;
one with nothing to fold into becomes Mul + Add (x * scale + shift per channel)."""

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
from edgec.quant import range_check

PRODUCERS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


class FoldBatchNormPass(Pass):
    name = "fold-batchnorm"
    summary = "Fold BatchNormalization into the Conv/ConvTranspose/Gemm/MatMul that feeds it."

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        names = NameGen(graph)
        folded = {op: 0 for op in PRODUCERS}
        affine = 0
        for g in list(iter_graphs(graph)):
            for bn in [n for n in g.nodes if n.op == "BatchNormalization"]:
                if _inference_with_constants(bn):  # for quantize's data-free range check
                    gamma, beta = (constant_value(t) for t in bn.inputs[1:3])
                    range_check.record(ctx.cache, bn.outputs[0].name, gamma, beta)
                producer = _foldable_producer(g, bn)
                if producer is not None:
                    x = bn.inputs[0]
                    scale, shift = _affine(bn)
                    if _FOLDERS[producer.op](g, producer, scale, shift, names):
                        absorb_into_producer(g, bn, x)
                        folded[producer.op] += 1
                        continue
                affine += _to_mul_add(g, bn, names)
        stats = {f"into_{op.lower()}": count for op, count in folded.items()} | {"to_mul_add": affine}
        return PassResult(sum(folded.values()) + affine > 0, stats)


def _inference_with_constants(bn: gs.Node) -> bool:
    """Inference mode, only Y read, and constant scale/bias/mean/var: an affine map."""
    if bn.attrs.get("training_mode", 0) or any(o.outputs for o in bn.outputs[1:]):
        return False
    return all(constant_value(t) is not None for t in bn.inputs[1:5])


def _foldable_producer(graph: gs.Graph, bn: gs.Node) -> gs.Node | None:
    if not _inference_with_constants(bn):
        return None
    x = bn.inputs[0]
    if len(x.inputs) != 1 or only_consumer(graph, x) is not bn:
        return None
    producer = x.inputs[0]
    if producer.op not in PRODUCERS or len(producer.outputs) != 1:
        return None
    return producer


def _to_mul_add(graph: gs.Graph, bn: gs.Node, names: NameGen) -> int:
    """A BatchNormalization after a Concat, an Add or an input: Mul and Add, which every backend
    lowers and quantization treats like any other arithmetic (TFLite has no BatchNormalization)."""
    x, out = bn.inputs[0], bn.outputs[0]
    if not _inference_with_constants(bn) or x.shape is None or len(x.shape) < 2:
        return 0
    dtype = constant_value(bn.inputs[1]).dtype
    scale, shift = _affine(bn)
    per_channel = [-1] + [1] * (len(x.shape) - 2)
    scaled = gs.Variable(names(f"{out.name}_bn_scaled"), dtype=out.dtype, shape=out.shape)
    mul = gs.Node(
        "Mul", names(f"{bn.name}_scale"),
        inputs=[x, gs.Constant(names(f"{bn.name}_scale_value"), scale.reshape(per_channel).astype(dtype))],
        outputs=[scaled],
    )
    add = gs.Node(
        "Add", names(f"{bn.name}_shift"),
        inputs=[scaled, gs.Constant(names(f"{bn.name}_shift_value"), shift.reshape(per_channel).astype(dtype))],
        outputs=[out],
    )
    bn.inputs.clear()
    bn.outputs.clear()
    at = next(i for i, n in enumerate(graph.nodes) if n is bn)
    graph.nodes[at : at + 1] = [mul, add]
    return 1


def _affine(bn: gs.Node) -> tuple[np.ndarray, np.ndarray]:
    """BN(x) = x * scale + shift, per channel, computed in float64."""
    gamma, beta, mean, var = (constant_value(t).astype(np.float64) for t in bn.inputs[1:5])
    eps = float(bn.attrs.get("epsilon", 1e-5))
    scale = gamma / np.sqrt(var + eps)
    return scale, beta - mean * scale


def _conv_with(conv: gs.Node, new_w: np.ndarray, dtype, scale, shift, names: NameGen) -> bool:
    """Give a Conv/ConvTranspose the scaled weights and the bias BN implies (b * scale + shift)."""
    bias = optional_constant(conv, 2)
    if bias is False:
        return False  # a computed bias cannot absorb the shift
    bias = np.zeros(scale.size) if bias is None else bias.astype(np.float64)
    set_constant_input(conv, 1, new_w.astype(dtype), names, f"{conv.name}_weight_bn")
    set_constant_input(conv, 2, (bias * scale + shift).astype(dtype), names, f"{conv.name}_bias_bn")
    return True


def _fold_conv(graph, conv, scale, shift, names) -> bool:
    w = constant_value(conv.inputs[1])
    if w is None or w.shape[0] != scale.size:
        return False
    new_w = w.astype(np.float64) * scale.reshape([-1] + [1] * (w.ndim - 1))
    return _conv_with(conv, new_w, w.dtype, scale, shift, names)


def _fold_conv_transpose(graph, conv, scale, shift, names) -> bool:
    w = constant_value(conv.inputs[1])
    groups = int(conv.attrs.get("group", 1))
    if w is None or w.shape[1] * groups != scale.size:
        return False
    # Weight is [C_in, C_out/group, k...]; output channel g*(C_out/group)+j lives in group g, column j.
    per_group = w.astype(np.float64).reshape((groups, w.shape[0] // groups) + w.shape[1:])
    factor = scale.reshape((groups, 1, w.shape[1]) + (1,) * (w.ndim - 2))
    return _conv_with(conv, (per_group * factor).reshape(w.shape), w.dtype, scale, shift, names)


def _fold_gemm(graph, gemm, scale, shift, names) -> bool:
    b = constant_value(gemm.inputs[1])
    trans_b = int(gemm.attrs.get("transB", 0))
    if b is None or b.ndim != 2 or b.shape[0 if trans_b else 1] != scale.size:
        return False
    c = optional_constant(gemm, 2)
    if c is False:
        return False
    new_b = b.astype(np.float64) * (scale[:, None] if trans_b else scale[None, :])
    beta = float(gemm.attrs.get("beta", 1.0))
    new_c = (beta * c.astype(np.float64) if c is not None else 0.0) * scale + shift
    set_constant_input(gemm, 1, new_b.astype(b.dtype), names, f"{gemm.name}_B_bn")
    set_constant_input(gemm, 2, np.asarray(new_c, dtype=b.dtype), names, f"{gemm.name}_C_bn")
    gemm.attrs["beta"] = 1.0
    return True


def _fold_matmul(graph, matmul, scale, shift, names) -> bool:
    # Only [M, K] x [K, N]: BatchNorm's channel axis 1 is then MatMul's last axis.
    a, b_tensor = matmul.inputs
    b = constant_value(b_tensor)
    if b is None or b.ndim != 2 or b.shape[1] != scale.size or a.shape is None or len(a.shape) != 2:
        return False
    set_constant_input(matmul, 1, (b.astype(np.float64) * scale[None, :]).astype(b.dtype), names, f"{matmul.name}_B_bn")
    out = matmul.outputs[0]
    product = gs.Variable(names(f"{out.name}_scaled"), dtype=out.dtype, shape=out.shape)
    matmul.outputs[0] = product
    bias = gs.Constant(names(f"{matmul.name}_bias_bn"), shift.astype(b.dtype))
    add = gs.Node("Add", names(f"{matmul.name}_bias_add"), inputs=[product, bias], outputs=[out])
    graph.nodes.insert(next(i for i, n in enumerate(graph.nodes) if n is matmul) + 1, add)
    return True


_FOLDERS = {
    "Conv": _fold_conv,
    "ConvTranspose": _fold_conv_transpose,
    "Gemm": _fold_gemm,
    "MatMul": _fold_matmul,
}
