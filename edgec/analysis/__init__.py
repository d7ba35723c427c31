"""What `edgec inspect` reports: interface, parameters, MACs per layer, ops, peak memory, target fit."""

from __future__ import annotations

from collections import Counter
from typing import Iterable

import numpy as np

from edgec import ir
from edgec.analysis.costs import executed_layers, layer_costs, total_macs
from edgec.analysis.memory import peak_activation_memory
from edgec.analysis.roofline import fit, model_precision
from edgec.targets import Target


def inspect_model(model: ir.Model, targets: Iterable[Target]) -> dict:
    costs = layer_costs(model)  # runs shape inference first
    consts = ir.constants(model.graph).values()
    weight_dtypes = [np.dtype(c.values.dtype) for c in consts]
    params = ir.param_count(model.graph)
    weight_bytes = ir.param_bytes(model.graph)
    file_bytes = ir.serialized_size(model)
    peak = peak_activation_memory(model.graph)
    precision = model_precision(costs, weight_dtypes)
    run_once = executed_layers(costs)
    fits = [fit(run_once, t, precision, peak.bytes, weight_bytes, file_bytes) for t in targets]
    return {
        "model": model.source,
        # The file's own opset; the IR may have been upgraded on load (ir.load's version converter).
        "opset": getattr(model, "source_opset", None) or model.opset,
        "opset_converted_to": model.opset,
        "producer": " ".join(p for p in (model.graph.producer_name, model.graph.producer_version) if p),
        "inputs": model.input_specs(),
        "outputs": model.output_specs(),
        "precision": precision,
        "params": {"count": params, "bytes": weight_bytes},
        "file_bytes": file_bytes,
        "macs": {"total": total_macs(model.graph), "layers": [c.to_json() for c in costs if c.macs or c.params]},
        "ops": dict(Counter(c.op for c in costs).most_common()),
        "peak_activation_memory": peak.to_json(),
        "fit": [f.to_json() for f in fits],
        "notes": ["batch and other symbolic dimensions are taken as 1"] if _has_symbolic(model) else [],
    }


def _has_symbolic(model: ir.Model) -> bool:
    return any(t.shape is None or any(not isinstance(d, int) for d in t.shape) for t in model.graph.inputs)


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def human_count(n: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def format_text(info: dict) -> str:
    """The human-readable form of inspect_model's result: tables, not paragraphs."""
    lines = [
        f"model     {info['model']}  (opset {info['opset']}"
        + (
            f", converted to {info['opset_converted_to']}"
            if info.get("opset_converted_to", info["opset"]) != info["opset"]
            else ""
        )
        + f"{', ' + info['producer'] if info['producer'] else ''})",
        f"precision {info['precision']}",
        "",
    ]
    lines.append(
        _table(
            ["", "name", "dtype", "shape"],
            [["input", s["name"], s["dtype"], _shape(s["shape"])] for s in info["inputs"]]
            + [["output", s["name"], s["dtype"], _shape(s["shape"])] for s in info["outputs"]],
        )
    )
    lines += [
        "",
        f"parameters {info['params']['count']:,} ({human_bytes(info['params']['bytes'])}); "
        f"file {human_bytes(info['file_bytes'])}",
        f"MACs       {info['macs']['total']:,} ({human_count(info['macs']['total'])}) per inference",
        f"peak activation memory {human_bytes(info['peak_activation_memory']['bytes'])} "
        f"(at {info['peak_activation_memory']['node']})",
        "",
    ]
    total = max(info["macs"]["total"], 1)
    rows = [
        [
            (layer["scope"].replace("|", "/") + layer["name"])[-48:],
            layer["op"],
            f"{layer['macs']:,}",
            f"{100 * layer['macs'] / total:.1f}%",
            f"{layer['params']:,}",
            _shape(layer["output_shape"]),
        ]
        for layer in info["macs"]["layers"]
    ]
    lines += [_table(["layer", "op", "MACs", "share", "params", "output"], rows), ""]
    lines += [_table(["op", "count"], [[op, str(n)] for op, n in info["ops"].items()]), ""]
    fit_rows = []
    for f in info["fit"]:
        latency = "-" if f["latency_ms"] is None else f"{f['latency_ms']:.3g} ms ({f['bound']})"
        flash = (
            "streamed"
            if f["flash_available"] is None
            else f"{human_bytes(f['flash_needed'])}/{human_bytes(f['flash_available'])}"
        )
        fit_rows.append(
            [
                f["target"],
                "yes" if f["fits"] else "NO",
                f"{human_bytes(f['ram_needed'])}/{human_bytes(f['ram_available'])}",
                flash,
                latency,
                f["unit"] or "-",
                f["note"],
            ]
        )
    lines.append(
        _table(["target", "fits", "RAM need/have", "flash need/have", "est. latency", "unit", "note"], fit_rows)
    )
    lines += [f"note: {n}" for n in info["notes"]]
    return "\n".join(lines)


def _shape(shape) -> str:
    return "?" if shape is None else "[" + ", ".join(str(d) for d in shape) + "]"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    fmt = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])
