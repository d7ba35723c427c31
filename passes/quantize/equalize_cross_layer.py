"""Cross-layer equalization (Nagel et al. 2019): rescale channels between consecutive layers so their
per-channel weight ranges match, which makes per-tensor and per-channel int8 both lose less.

For layers W1 -> f -> W2 with f positively homogeneous (Relu, LeakyRelu, MaxPool, AveragePool,
or nothing), f(x / s) = f(x) / s for s > 0, so dividing output channel i of W1 (and its bias) by
s_i and multiplying what W2 reads from channel i by s_i computes the same function. With
s_i = sqrt(r1_i / r2_i) both ranges become sqrt(r1_i * r2_i). ReLU6/Clip and HardSwish are not
homogeneous, so pairs across them are left alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from edgec.graph_utils import NameGen, constant_value, only_consumer, set_constant_input
from edgec.pass_infra import Pass, PassContext, PassResult, option

HOMOGENEOUS = ("Relu", "LeakyRelu", "MaxPool", "AveragePool", "Identity", "Dropout")


@dataclass
class _Pair:
    producer: gs.Node
    consumer: gs.Node
    repeat: int  # consumer features per producer channel (a Flatten between them)


class EqualizeCrossLayerPass(Pass):
    name = "equalize-cross-layer"
    summary = "Balance per-channel weight ranges of consecutive layers through Relu/MaxPool (exact rescaling)."
    iterations: int = option(4, min=1)

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        pairs = [p for p in (_pair(graph, n) for n in graph.nodes) if p is not None]
        if not pairs:
            return PassResult(False, {"pairs": 0})
        spread_before = _spread(pairs)
        names = NameGen(graph)
        for _ in range(self.iterations):
            for pair in pairs:
                _equalize(pair, names)
        return PassResult(
            True,
            {
                "pairs": len(pairs),
                "range_ratio_before": round(spread_before, 3),
                "range_ratio_after": round(_spread(pairs), 3),
            },
        )


def _out_axis(node: gs.Node) -> int | None:
    if node.op == "Conv":
        return 0
    if node.op == "Gemm" and not node.attrs.get("transA", 0):
        return 0 if node.attrs.get("transB", 0) else 1
    return None


def _pair(graph: gs.Graph, producer: gs.Node) -> _Pair | None:
    if _out_axis(producer) is None or constant_value(producer.inputs[1]) is None:
        return None
    if len(producer.inputs) > 2 and not producer.inputs[2].is_empty():
        bias = constant_value(producer.inputs[2])
        if bias is None or bias.ndim == 0 or bias.shape[-1] != _channels(producer):
            return None  # a computed or scalar bias cannot be rescaled per channel
    tensor, repeat = producer.outputs[0], 1
    while True:
        consumer = only_consumer(graph, tensor)
        if consumer is None:
            return None
        if consumer.op in HOMOGENEOUS and len(consumer.outputs) >= 1:
            tensor = consumer.outputs[0]
            continue
        if consumer.op == "Flatten" and producer.op == "Conv" and tensor.shape is not None:
            dims = tensor.shape
            if not all(isinstance(d, int) for d in dims[2:]):
                return None
            repeat = int(np.prod(dims[2:]))
            tensor = consumer.outputs[0]
            continue
        break
    if not _reads_channels(consumer, tensor, _channels(producer)):
        return None
    return _Pair(producer, consumer, repeat)


def _channels(producer: gs.Node) -> int:
    return constant_value(producer.inputs[1]).shape[_out_axis(producer)]


def _reads_channels(consumer: gs.Node, tensor: gs.Tensor, channels: int) -> bool:
    if consumer.op not in ("Conv", "Gemm") or len(consumer.inputs) < 2:
        return False
    if consumer.inputs[0] is not tensor or constant_value(consumer.inputs[1]) is None:
        return False
    if consumer.op == "Conv":
        weight = constant_value(consumer.inputs[1])
        group = int(consumer.attrs.get("group", 1))
        return group == 1 and weight.shape[1] == channels or group == channels
    return consumer.op == "Gemm" and not consumer.attrs.get("transA", 0)


def _in_view(pair: _Pair) -> np.ndarray:
    """The consumer's weight as [producer channel, everything that channel multiplies]."""
    w = constant_value(pair.consumer.inputs[1])
    c = _channels(pair.producer)
    if pair.consumer.op == "Conv":
        if int(pair.consumer.attrs.get("group", 1)) == c and c > 1:  # depthwise: channel i -> filters of group i
            return w.reshape(c, -1)
        return np.moveaxis(w, 1, 0).reshape(c, -1)
    rows = w.T if pair.consumer.attrs.get("transB", 0) else w  # [features, N]
    return rows.reshape(c, pair.repeat * rows.shape[1])


def _equalize(pair: _Pair, names: NameGen) -> None:
    axis = _out_axis(pair.producer)
    w1 = constant_value(pair.producer.inputs[1]).astype(np.float64)
    r1 = np.abs(np.moveaxis(w1, axis, 0).reshape(w1.shape[axis], -1)).max(axis=1)
    r2 = np.abs(_in_view(pair)).max(axis=1)
    scale = np.ones_like(r1)
    ok = (r1 > 0) & (r2 > 0)
    scale[ok] = np.sqrt(r1[ok] / r2[ok])
    shape = [1] * w1.ndim
    shape[axis] = -1
    dtype = constant_value(pair.producer.inputs[1]).dtype
    set_constant_input(pair.producer, 1, (w1 / scale.reshape(shape)).astype(dtype), names, "equalized_weight")
    if len(pair.producer.inputs) > 2 and not pair.producer.inputs[2].is_empty():
        bias = constant_value(pair.producer.inputs[2]).astype(np.float64)
        set_constant_input(pair.producer, 2, (bias / scale).astype(dtype), names, "equalized_bias")
    _scale_consumer(pair, scale, names)


def _scale_consumer(pair: _Pair, scale: np.ndarray, names: NameGen) -> None:
    w = constant_value(pair.consumer.inputs[1]).astype(np.float64)
    c = scale.size
    if pair.consumer.op == "Conv":
        if int(pair.consumer.attrs.get("group", 1)) == c and c > 1:
            w = w * np.repeat(scale, w.shape[0] // c).reshape([-1] + [1] * (w.ndim - 1))
        else:
            w = w * scale.reshape([1, -1] + [1] * (w.ndim - 2))
    else:
        per_feature = np.repeat(scale, pair.repeat)
        w = w * (per_feature[None, :] if pair.consumer.attrs.get("transB", 0) else per_feature[:, None])
    set_constant_input(
        pair.consumer, 1, w.astype(constant_value(pair.consumer.inputs[1]).dtype), names, "equalized_weight"
    )


def _spread(pairs: list[_Pair]) -> float:
    """Mean over pairs of (largest / smallest) per-channel range of the producer: what CLE shrinks."""
    ratios = []
    for pair in pairs:
        axis = _out_axis(pair.producer)
        w = constant_value(pair.producer.inputs[1])
        r = np.abs(np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)).max(axis=1)
        r = r[r > 0]
        if r.size:
            ratios.append(float(r.max() / r.min()))
    return float(np.mean(ratios)) if ratios else 1.0
