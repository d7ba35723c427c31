"""Per-layer precision debugging: where does int8 lose the signal?

For every activation the quantized model quantizes (every QuantizeLinear input T):
  accumulated  SQNR of T as the int8 model computes it (dequantized) against float32: all error
               up to this point;
  introduced   SQNR of T when the layer that produces it gets the float32 model's inputs
               (quantized as the int8 model would quantize them): this layer's own error.
A layer with a low introduced SQNR is the one to fix (fall back, recalibrate); a low accumulated
but high introduced SQNR means the damage came from upstream.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx_graphsurgeon as gs

from edgec import ir, runner
from edgec.graph_utils import NameGen
from edgec.quant import collect


class _Energy:
    """Running signal and noise sums of one tensor over the samples: SQNR without keeping values."""

    def __init__(self):
        self.signal = self.noise = 0.0

    def add(self, reference: np.ndarray, got: np.ndarray) -> None:
        ref = np.asarray(reference, np.float64)
        self.signal += float(np.sum(ref**2))
        self.noise += float(np.sum((ref - np.asarray(got, np.float64)) ** 2))

    @property
    def sqnr_db(self) -> float:
        if self.noise == 0:
            return math.inf
        return 10 * math.log10(self.signal / self.noise) if self.signal > 0 else -math.inf


def _quantizers(graph: gs.Graph) -> list[tuple[gs.Node, gs.Node]]:
    """(QuantizeLinear, its DequantizeLinear) for every quantized activation."""
    pairs = []
    for q in graph.nodes:
        if q.op == "QuantizeLinear" and not isinstance(q.inputs[0], gs.Constant):
            dq = next((n for n in q.outputs[0].outputs if n.op == "DequantizeLinear"), None)
            if dq is not None:
                pairs.append((q, dq))
    return pairs


class _Session:
    """A model with the named tensors exposed as outputs, run one sample at a time."""

    def __init__(self, model: ir.Model, names: list[str]):
        self.session = runner.make_session(collect.expose(model, names))
        self.names = [o.name for o in self.session.get_outputs() if o.name in set(names)]
        self.inputs = [i.name for i in self.session.get_inputs()]

    def run(self, feeds: dict) -> dict[str, np.ndarray]:
        return dict(zip(self.names, self.session.run(self.names, {k: feeds[k] for k in self.inputs})))


def _isolated(quantized: ir.Model) -> tuple[ir.Model, dict[str, str], dict[str, str]]:
    """The int8 model with every Q fed from a float32 input, plus a fresh Q/DQ on each layer's own
    output: (model, T -> its new input, T -> the local dequantized output)."""
    model = quantized.copy()
    graph = model.graph
    names = NameGen(graph)
    feeds, local = {}, {}
    for q, dq in _quantizers(graph):
        tensor = q.inputs[0]
        feed = gs.Variable(names(f"{tensor.name}__float32"), dtype=tensor.dtype, shape=tensor.shape)
        graph.inputs.append(feed)
        q.inputs[0] = feed
        feeds[tensor.name] = feed.name
        if tensor.inputs:  # produced by a layer (graph inputs have no layer of their own)
            mid = gs.Variable(names(f"{tensor.name}__local_q"), dtype=q.outputs[0].dtype)
            out = gs.Variable(names(f"{tensor.name}__local"), dtype=tensor.dtype, shape=tensor.shape)
            graph.nodes.append(gs.Node("QuantizeLinear", inputs=[tensor, *q.inputs[1:]], outputs=[mid]))
            graph.nodes.append(gs.Node("DequantizeLinear", inputs=[mid, *dq.inputs[1:]], outputs=[out]))
            graph.outputs.append(out)
            local[tensor.name] = out.name
    graph.toposort(recurse_subgraphs=False)
    return model, feeds, local


def analyze(float_model: ir.Model, quantized: ir.Model, samples: list[dict]) -> list[dict]:
    """One row per quantized activation, worst introduced SQNR first. Streams the samples: memory
    holds one sample's tensors, not every tensor of every sample (a 640x640 detector's table once
    took 17.7 GB that way)."""
    pairs = _quantizers(quantized.graph)
    # A quantized graph output keeps its name on the DequantizeLinear (the Q reads "<name>_f"):
    # its float32 counterpart is the float model's tensor of that name.
    known = float_model.graph.tensors()
    float_name = {
        q.inputs[0].name: q.inputs[0].name if q.inputs[0].name in known else dq.outputs[0].name for q, dq in pairs
    }
    reference = _Session(float_model, sorted(set(float_name.values())))
    accumulated = _Session(quantized, [dq.outputs[0].name for _, dq in pairs])
    isolated_model, feeds, local = _isolated(quantized)
    isolated = _Session(isolated_model, list(local.values()))
    ranges: dict[str, list[float]] = {}
    total = {name: _Energy() for name in float_name}
    own = {name: _Energy() for name in float_name}
    for sample in samples:
        computed = reference.run(sample)
        ref = {name: computed[f] for name, f in float_name.items() if f in computed}
        acc = accumulated.run(sample)
        lone = isolated.run({**sample, **{feeds[t]: ref[t] for t in feeds if t in ref}})
        for q, dq in pairs:
            name = q.inputs[0].name
            if name not in ref:
                continue
            low, high = ranges.setdefault(name, [math.inf, -math.inf])
            ranges[name] = [min(low, float(ref[name].min())), max(high, float(ref[name].max()))]
            total[name].add(ref[name], acc.get(dq.outputs[0].name, ref[name]))
            own[name].add(ref[name], lone[local[name]] if name in local else acc.get(dq.outputs[0].name, ref[name]))
    order = {name: i for i, name in enumerate(float_model.graph.tensors())}
    rows = []
    for q, _ in pairs:
        name = q.inputs[0].name
        if name not in ranges:
            continue
        producer = q.inputs[0].inputs[0] if q.inputs[0].inputs else None
        scale, zero_point = q.inputs[1].values, q.inputs[2].values if len(q.inputs) > 2 else 0
        rows.append(
            {
                "tensor": name,
                "layer": producer.name if producer is not None else "(model input)",
                "op": producer.op if producer is not None else "input",
                "position": order.get(name, -1),
                "range": ranges[name],
                "scale": float(np.ravel(scale)[0]),
                "zero_point": int(np.ravel(zero_point)[0]),
                "accumulated_sqnr_db": total[name].sqnr_db,
                "introduced_sqnr_db": own[name].sqnr_db,
            }
        )
    rows.sort(key=lambda r: r["introduced_sqnr_db"])
    return rows


def format_table(rows: list[dict], limit: int | None = None) -> str:
    shown = rows if limit is None else rows[:limit]
    lines = [
        "| layer | op | tensor | introduced SQNR dB | accumulated SQNR dB | range | scale |",
        "|---|---|---|---:|---:|---|---:|",
    ]
    for r in shown:
        lines.append(
            f"| `{r['layer']}` | {r['op']} | `{r['tensor']}` | {_db(r['introduced_sqnr_db'])} | "
            f"{_db(r['accumulated_sqnr_db'])} | [{r['range'][0]:.3g}, {r['range'][1]:.3g}] | "
            f"{r['scale']:.3g} |"
        )
    return "\n".join(lines)


def _db(value: float) -> str:
    return "inf" if math.isinf(value) and value > 0 else f"{value:.1f}"


def plot(rows: list[dict], path: Path, title: str) -> Path:
    """SQNR per quantized tensor in graph order: accumulated vs introduced."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ordered = sorted(rows, key=lambda r: r["position"])
    x = np.arange(len(ordered))
    cap = lambda v: 100.0 if math.isinf(v) else v  # noqa: E731 - exact tensors plot at the top
    fig, ax = plt.subplots(figsize=(max(8, len(ordered) * 0.25), 4.5))
    ax.plot(x, [cap(r["accumulated_sqnr_db"]) for r in ordered], "o-", label="accumulated (int8 model vs float32)")
    ax.bar(x, [cap(r["introduced_sqnr_db"]) for r in ordered], alpha=0.4, label="introduced by the layer")
    ax.set_xticks(x)
    ax.set_xticklabels([r["layer"][-24:] for r in ordered], rotation=90, fontsize=6)
    ax.set_ylabel("SQNR (dB)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
