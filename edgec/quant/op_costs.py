"""Where int8 pays, predicted from a measured, committed cost table instead of timed at build time.

The table (edgec/targets/op_costs.json, written by `python -m bench.quant.op_costs`) holds, per
target and backend, single layers timed inside an int8 model: the fused int8 kernel against a
float island (DequantizeLinear, float layer, QuantizeLinear). A layer's prediction comes from the
rows of its kind nearest in dot length K, output channels and output size (log scale), averaged
over NEIGHBOURS rows so one noisy measurement cannot flip a decision. Builds read the table and
time nothing: the same command gives the same bytes on a loaded machine and on any other.
`select=latency` (edgec --measure-latency) still times the whole model on this machine.
"""

from __future__ import annotations

import functools
import json
import math
from importlib import resources

import numpy as np
import onnx_graphsurgeon as gs

from edgec.analysis.costs import concrete
from edgec.graph_utils import constant_value

NEIGHBOURS = 3
# A layer goes back to float when the table predicts its float island at least this much faster
# than its int8 kernel, and the saving is at least MIN_SHARE of the model's predicted int8 time
# (a float layer also stores 4x the weight bytes: small gains do not pay for a bigger file).
MIN_GAIN = 0.05
MIN_SHARE = 0.01


@functools.cache
def _tables() -> dict:
    return json.loads(resources.files("edgec.targets").joinpath("op_costs.json").read_text())


def table(target: str, backend: str) -> list[dict] | None:
    """The measured rows for this target and backend, None when none were measured."""
    entry = _tables().get(target, {}).get(backend)
    return entry["rows"] if entry else None


def layer_shape(node: gs.Node) -> tuple[str, int, int, int] | None:
    """(kind, K, C_out, spatial) of a layer with constant weights, as the table indexes it."""
    weight = constant_value(node.inputs[1]) if len(node.inputs) > 1 else None
    out = concrete(node.outputs[0].shape) if node.outputs else None
    if weight is None or out is None or not out:
        return None
    if node.op in ("Conv", "ConvTranspose") and weight.ndim >= 3:
        group = int(node.attrs.get("group", 1))
        kernel = math.prod(weight.shape[2:])
        c_out = out[1] if len(out) > 1 else 1
        if node.op == "Conv" and group > 1 and weight.shape[1] == 1 and group == c_out:
            return "depthwise", kernel, c_out, math.prod(out[2:])
        k = weight.shape[1] * kernel if node.op == "Conv" else weight.shape[0] // group * kernel
        return "conv", int(k), int(c_out), math.prod(out[2:])
    if node.op in ("Gemm", "MatMul") and weight.ndim == 2:
        transposed = node.op == "Gemm" and node.attrs.get("transB", 0)
        k, c_out = (weight.shape[1], weight.shape[0]) if transposed else weight.shape
        return "matmul", int(k), int(c_out), max(1, math.prod(out[:-1]))
    return None


def predict(rows: list[dict], shape: tuple[str, int, int, int]) -> tuple[float, float]:
    """(int8 microseconds, float island / int8 ratio) for one layer: the NEIGHBOURS rows of its
    kind nearest in log K, log C_out and log spatial; times scale with the layer's MACs."""
    kind, k, c_out, spatial = shape
    same = [r for r in rows if r["kind"] == kind] or rows
    point = np.log2([k, c_out, spatial])
    distance = [float(np.sum((np.log2([r["k"], r["c_out"], r["spatial"]]) - point) ** 2)) for r in same]
    nearest = [same[i] for i in np.argsort(distance, kind="stable")[:NEIGHBOURS]]
    macs = k * c_out * spatial
    int8_us = float(np.mean([r["int8_us"] * macs / r["macs"] for r in nearest]))
    return int8_us, float(np.mean([r["ratio"] for r in nearest]))


def cost_search(nodes: list[gs.Node], rows: list[dict], float_weight_budget: float) -> dict:
    """The layers the table predicts faster as float islands, most saved first, within the float
    weight budget (a share of the candidates' weight elements); and what it predicted."""
    predicted = {}
    for node in nodes:
        shape = layer_shape(node)
        if shape is not None:
            predicted[node.name] = (*predict(rows, shape), int(constant_value(node.inputs[1]).size))
    total = sum(int8_us for int8_us, _, _ in predicted.values())
    budget = float_weight_budget * sum(size for _, _, size in predicted.values())
    gains = {
        name: int8_us * (1 - ratio)
        for name, (int8_us, ratio, _) in predicted.items()
        if ratio <= 1 - MIN_GAIN and int8_us * (1 - ratio) >= MIN_SHARE * total
    }
    chosen, used = [], 0
    for name in sorted(gains, key=lambda n: -gains[n]):
        if used + predicted[name][2] <= budget:
            chosen.append(name)
            used += predicted[name][2]
    order = [n.name for n in nodes]
    return {
        "fallback": sorted(chosen, key=order.index),
        "predicted_int8_us": round(total, 1),
        "predicted_saving_us": round(sum(gains[n] for n in chosen), 1),
        "layers_costed": len(predicted),
    }
