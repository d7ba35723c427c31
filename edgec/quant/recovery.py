"""When -O int8 misses its budget: keep the most sensitive layers in float until it holds.

Attention-, softmax- and LSTM-heavy models failed `quantize` at cosine 0.95 < 0.98 and the build
stopped. Here the quantized model is measured on the check samples (no labels needed); if the
pass's budget fails, every quantized layer is ranked by the error it introduces on its own
(edgec.quant.debug: the layer fed float32 inputs, its output int8-rounded), the worst 1, 2, 4,
8, ... layers fall back to float until the budget holds, then a bisection finds the fewest between
the last miss and the first hold: a logarithmic number of model runs, not one per layer. When that
prefix is the whole ranking, blocks of it the budget does not need go back to int8 (a bounded
number of runs). Only when even the whole ranking in float misses does the build fail. What fell
back, and each layer's own SQNR, goes into the pass's stats and a warning.
"""

from __future__ import annotations

import math
from typing import Callable

import onnx_graphsurgeon as gs

from edgec import ir, quantities, runner
from edgec.compare import Comparison, Tolerance, compare
from edgec.quant import debug
from edgec.quant.scheme import ABSORBED_ACTIVATIONS, SCHEMES, SHARED_OPS

RANKING_SAMPLES = 8  # the ranking needs an order; the budget is judged on every check sample
# Model runs spent removing layers the budget did not need from the fallback: at most as many as
# the search that found it (which grows with the log of the ranking), so recovery at most doubles.
SHRINK_TRIALS = 24
# The ops that compute on int8 inputs in some scheme (rearrangements and absorbed activations
# follow the layer they belong to).
LAYER_OPS = tuple(
    sorted({op for s in SCHEMES.values() for op in s.quantized_ops} - set(SHARED_OPS) - set(ABSORBED_ACTIVATIONS))
)


def judge(
    reference: list[dict], model: ir.Model, samples: list[dict], tolerance: Tolerance, cache: dict | None = None
) -> Comparison:
    outputs = runner.run_model_shared(model, samples, cache)
    return quantities.judge(compare(reference, outputs, tolerance, "original"), reference, outputs)


def ranked_layers(float_model: ir.Model, quantized: ir.Model, samples: list[dict]) -> list[tuple[list[str], float]]:
    """(layers to keep in float, the error they add in dB), worst first. A row's "introduced" error is
    its layer run on float32 inputs that are still rounded by its input Q: keeping the layer in float
    is not enough, the layers writing its inputs must stop rounding them too (an outlier channel at a
    layer's input is lost at its writer's Q)."""
    producers = {t.name: n for n in quantized.graph.nodes for t in n.outputs}
    rows = debug.analyze(float_model, quantized, samples[:RANKING_SAMPLES])
    tensors = quantized.graph.tensors()
    writers = {w.name for w in (_writer_node(producers, row["tensor"]) for row in rows) if w is not None}
    ranked, seen = [], set()
    for row in rows:
        layer = _writer_node(producers, row["tensor"])
        if layer is None or math.isinf(row["introduced_sqnr_db"]):
            continue
        inputs = [t.name for t in layer.inputs if isinstance(t, gs.Variable) and t.name in producers]
        group = [layer.name] + [w.name for w in (_writer_node(producers, t) for t in inputs) if w is not None]
        group = [name for name in dict.fromkeys(group) if name not in seen]
        if group:
            seen.update(group)
            ranked.append((group, round(row["introduced_sqnr_db"], 2)))
        # The layers reading this tensor whose own output is never quantized (TensorRT's scheme
        # quantizes only inputs; every scheme leaves the model's outputs float) are in no row of
        # their own: they follow as a group of their own, or the last layers could never fall back
        # (PP-OCRv4's detector missed the TensorRT budget with every ranked layer in float, and the
        # OpenVINO one at cosine 0.97 with its output Sigmoid still reading rounded logits).
        readers = [r.name for r in _readers(tensors, row["tensor"]) if r.op in LAYER_OPS and r.name not in writers]
        readers = [name for name in dict.fromkeys(readers) if name not in seen]
        if readers:
            seen.update(readers)
            ranked.append((readers, round(row["introduced_sqnr_db"], 2)))
    return ranked


def _readers(tensors: dict, tensor: str) -> list[gs.Node]:
    """The nodes computing on `tensor` as the quantized model rounds it (past its Q/DQ pair)."""
    found = tensors.get(tensor)
    readers, frontier = [], list(found.outputs) if found is not None else []
    while frontier:
        node = frontier.pop()
        if node.op in ("QuantizeLinear", "DequantizeLinear"):
            frontier.extend(n for out in node.outputs for n in out.outputs)
        else:
            readers.append(node)
    return readers


def _writer_node(producers: dict, tensor: str) -> gs.Node | None:
    """The layer computing `tensor`, through the Q/DQ, activations and rearrangements between."""
    node = producers.get(tensor)
    while node is not None and node.op in SHARED_OPS + ABSORBED_ACTIVATIONS + ("QuantizeLinear", "DequantizeLinear"):
        source = node.inputs[0] if node.inputs else None
        node = producers.get(source.name) if isinstance(source, gs.Variable) else None
    return node


def search(
    float_model: ir.Model,
    quantized: ir.Model,
    requantize: Callable[[set[str]], ir.Model],
    samples: list[dict],
    tolerance: Tolerance,
    rank: Callable[[ir.Model, ir.Model, list[dict]], list[tuple[list[str], float | None]]] | None = None,
    shrink_always: bool = False,
    cache: dict | None = None,
) -> dict | None:
    """None when `quantized` meets the budget; otherwise {fallback, ranking, before, after, ok, model}
    with `model` the first trial that met it (or the last one tried). `rank` orders the groups of
    layers to fall back, most sensitive first (default: ranked_layers, for int8). The groups of the
    holding prefix the budget does not need are dropped when the prefix is the whole ranking, or
    always with `shrink_always`. Shrinking lands near the budget's edge: on every int8 build it took
    DNSMOS from 40 to 12 dB held out and left SLANet's decoder one rounding from another path.
    `cache` (a PassContext's): the float and the first quantized run are shared with the checks."""
    reference = runner.run_model_shared(float_model, samples, cache)
    before = judge(reference, quantized, samples, tolerance, cache)
    if before.ok:
        return None
    ranking = (rank or ranked_layers)(float_model, quantized, samples)
    trials, count, failed, model, after = 0, 1, 0, quantized, before

    def attempt(n: int):
        nonlocal trials
        trials += 1
        trial = requantize({name for group, _ in ranking[:n] for name in group})
        return trial, judge(reference, trial, samples, tolerance)

    while ranking:  # 1, 2, 4, ... groups until the budget holds
        count = min(count, len(ranking))
        model, after = attempt(count)
        if after.ok or count == len(ranking):
            break
        failed, count = count, count * 2
    while after.ok and count - failed > 1:  # then the fewest between the last miss and the first hold
        middle = (failed + count) // 2
        trial, measured = attempt(middle)
        if measured.ok:
            count, model, after = middle, trial, measured
        else:
            failed = middle
    kept = list(ranking[:count])
    if after.ok and count > 1 and (shrink_always or count == len(ranking)):
        # The ranking is by each layer's error on its own output; the check may fail on one slice
        # of one output that a low-ranked layer alone rounds away (MediaPipe's iris model: a
        # 0.8-peak channel among 50-peak ones at the last Conv, ranked last of 160). The shortest
        # prefix then holds every layer: drop blocks of it while the budget still holds.
        # (float16's ranking, outputs first, is only a guess: it always shrinks.)
        def holds(groups: list) -> tuple | None:
            nonlocal trials
            trials += 1
            trial = requantize({name for group, _ in groups for name in group})
            measured = judge(reference, trial, samples, tolerance)
            return (trial, measured) if measured.ok else None

        kept, found = _shrink(kept, holds, min(SHRINK_TRIALS, trials))
        if found is not None:
            model, after = found
    return {
        "ok": after.ok,
        "fallback": [name for group, _ in kept for name in group] if after.ok else [],
        "introduced_sqnr_db": {"+".join(group): db for group, db in kept[:12]},
        "before": _summary(before),
        "after": _summary(after),
        "trials": trials,
        "model": model,
    }


def _shrink(groups: list, holds: Callable[[list], tuple | None], budget: int) -> tuple[list, tuple | None]:
    """Fewer groups that still hold: remove blocks of half, a quarter, ... of them, least sensitive
    first, keeping each removal that holds (about 2 trials per halving when one group matters).
    Returns the groups kept and the last result that held (None when no removal held)."""
    kept, found, trials = list(groups), None, 0
    size = len(kept) // 2
    while size >= 1 and trials < budget and len(kept) > 1:
        start = len(kept) - size
        while trials < budget and len(kept) > 1:
            start = max(0, start)
            candidate = kept[:start] + kept[start + size :]
            trials += 1
            result = holds(candidate)
            if result is not None:
                kept, found = candidate, result
            if start == 0:
                break
            start -= size
        size //= 2
    return kept, found


def _summary(check: Comparison) -> dict:
    return {
        "ok": check.ok,
        "cosine": round(check.cosine, 5),
        "sqnr_db": None if math.isinf(check.sqnr_db) else round(check.sqnr_db, 2),
        "failures": check.failures[:3],
    }
