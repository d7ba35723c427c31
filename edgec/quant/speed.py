"""Where int8 pays on this machine (`--measure-latency`): a timed search over which layers to keep
in float. The default predicts it from a cost table instead (edgec.quant.op_costs), because a timed
choice moves with machine load and the same command then builds different models.

Layers kept in float keep float weights: onnxruntime dequantizes an int8 weight on every run
(it does not constant-fold DequantizeLinear), which costs more than the float kernel saves.

int8 is not automatically faster: onnxruntime's int8 depthwise kernels are slower than its fp32
ones here, a stem convolution over 1-3 channels has nothing to gain, and every float island
costs a dequantize and a quantize. The search times the whole model in onnxruntime (batch 1,
1 thread, the deployment setting on this host) and greedily keeps a layer in float when that
makes the model at least 5% faster (a float layer also stores float weights, so small gains do
not pay for a bigger file). Layers are tried cheapest-in-int8 first: depthwise and short dot
products (K = C_in/group x kernel) before the rest, until the time budget runs out.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import numpy as np
import onnx_graphsurgeon as gs

from edgec import ir, runner
from edgec.graph_utils import constant_value
from edgec.quant.scheme import COMPUTE_OPS

MIN_GAIN = 0.05
RUNS = 30
# Float layers keep float weights (4x their int8 size); at most this share of the model's
# weights may go back to float, so speed never quietly undoes the file-size win.
FLOAT_WEIGHT_BUDGET = 0.10


def latency_us(model: ir.Model, runs: int = RUNS) -> float:
    session = runner.make_session(model, optimize=True, threads=1)
    feeds = {}
    rng = np.random.default_rng(0)
    for tensor in session.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in tensor.shape]
        dtype = runner.ORT_DTYPES.get(tensor.type, np.float32)
        if np.issubdtype(dtype, np.floating):
            feeds[tensor.name] = rng.standard_normal(shape).astype(dtype)
        else:
            # Token ids, indices, sample rates, flags: zeros are valid for any of them (an index
            # into any table), random integers may not be. magika's input is int32 byte tokens.
            feeds[tensor.name] = np.zeros(shape, dtype)
    for _ in range(5):
        session.run(None, feeds)
    return median_run_us(session, feeds, runs)


def median_run_us(session, feeds: dict, runs: int) -> float:
    """Median wall time of `runs` calls of an onnxruntime session, in microseconds."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def _weight_elements(node: gs.Node) -> int:
    weight = constant_value(node.inputs[1]) if len(node.inputs) > 1 else None
    return 0 if weight is None else int(weight.size)


def _dot_length(node: gs.Node) -> int:
    weight = constant_value(node.inputs[1]) if len(node.inputs) > 1 else None
    if weight is None:
        return 1 << 30
    if node.op == "Conv":
        return int(np.prod(weight.shape[1:]))
    return int(weight.shape[0] if not node.attrs.get("transB", 0) else weight.shape[-1])


def latency_search(
    graph: gs.Graph,
    rewrite: Callable[[gs.Graph, set[str]], object],
    nodes: list[gs.Node],
    budget_seconds: float,
) -> dict:
    """Returns the layers to keep in float (`rewrite(graph, layers)` builds that candidate) and
    what was measured. Two sweeps: keeping one layer float can make its neighbour's int8 pay less."""
    start = time.perf_counter()

    def timed(extra: set[str]) -> float:
        trial = ir.Model(graph).copy()
        rewrite(trial.graph, extra)
        return latency_us(trial)

    candidates = sorted((n for n in nodes if n.op in COMPUTE_OPS), key=_dot_length)
    sizes = {n.name: _weight_elements(n) for n in candidates}
    budget = FLOAT_WEIGHT_BUDGET * sum(sizes.values())
    all_int8 = best = timed(set())
    chosen: set[str] = set()
    trials = 1
    for _sweep in range(2):
        changed = False
        for node in candidates:
            if time.perf_counter() - start > budget_seconds:
                break
            trial = chosen ^ {node.name}  # add it, or (second sweep) take it back out
            if sum(sizes[n] for n in trial) > budget:
                continue
            latency = timed(trial)
            trials += 1
            if latency < best * (1 - MIN_GAIN):
                chosen, best, changed = trial, latency, True
        if not changed:
            break
    return {
        "fallback": [n.name for n in candidates if n.name in chosen],
        "all_int8_us": round(all_int8, 1),
        "chosen_us": round(best, 1),
        "trials": trials,
        "seconds": round(time.perf_counter() - start, 2),
        "complete": time.perf_counter() - start <= budget_seconds,
    }
