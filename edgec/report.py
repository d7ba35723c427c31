"""report.json and report.md: what each pass did, what it cost, and what the checks measured."""

from __future__ import annotations

import math
from typing import Any

from edgec.compare import Comparison
from edgec.pass_manager import PassRecord


def build_report(
    *,
    version: str,
    source: str,
    target: str,
    backend: str,
    pipeline: str,
    records: list[PassRecord],
    final_check: Comparison | None,
    backend_check: Comparison | None,
    before: dict[str, int],
    after: dict[str, int],
    artifact_bytes: int,
    samples: dict,
    warnings: list[str],
    seconds: float,
    accuracy_control: dict | None = None,
    accuracy: dict | None = None,
    artifact: dict | None = None,
) -> dict[str, Any]:
    checks = [r.check for r in records if r.check is not None] + [
        c for c in (final_check, backend_check) if c is not None
    ]
    failed = [r.check for r in records if r.check is not None and not r.check]
    ok = not failed and all(c is None or c.ok for c in (final_check, backend_check))
    return {
        "edgec_version": version,
        "model": source,
        "target": target,
        "backend": backend,
        "pipeline": pipeline,
        "ok": ok,
        "checks_run": len(checks),
        "passes": [r.to_json() for r in records],
        "final_check": final_check.to_json() if final_check is not None else None,
        "backend_check": backend_check.to_json() if backend_check is not None else None,
        "size_bytes": {"before": before["size"], "after": after["size"], "artifact": artifact_bytes},
        "params": {"before": before["params"], "after": after["params"]},
        "nodes": {"before": before["nodes"], "after": after["nodes"]},
        "samples": samples,
        "accuracy_control": accuracy_control,
        "accuracy": accuracy,
        "artifact": artifact or {},
        "warnings": warnings,
        "seconds": round(seconds, 3),
    }


def _err(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return "0" if value == 0 else f"{value:.1e}"


def _db(value: float | None) -> str:
    return "inf" if value is None else f"{value:.1f}"


def _check_cell(check: dict | None) -> str:
    if check is None:
        return "not run (unchanged)"
    verdict = "ok" if check["ok"] else "**FAILED**"
    return f"{verdict} vs {check['against']}"


# Stats shown as their own tables rather than squeezed into a cell.
_DETAIL_STATS = ("layers", "storage")


def _compression_table(report: dict) -> list[str]:
    """Per stage: what the weights take as a device would store them, and what it cost."""
    stages = [p for p in report["passes"] if "storage" in p["stats"]]
    if not stages:
        return []
    first = stages[0]["stats"]["storage"]
    dense = first["dense_bytes"] + first["other_constant_bytes"]
    accuracy = report.get("accuracy") or {}
    lines = [
        "",
        "## Compression",
        "",
        "| stage | weight bytes | vs dense fp32 | nonzeros | top-1 agreement | SQNR dB | accuracy |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| dense fp32 (before) | {dense:,} | 1.0x | {first['elements']:,} | | | "
        + (f"{accuracy['original']:.2%} |" if accuracy.get("original") is not None else "|"),
    ]
    for p in report["passes"]:
        storage = p["stats"].get("storage")
        c = p["check"] or {}
        if storage is None and not (p["name"] == "finetune" and p["modified"]):
            continue
        cells = [f"{p['index']}. `{p['name']}`"]
        if storage:
            ratio = f"{dense / storage['weight_bytes']:.1f}x"
            cells += [f"{storage['weight_bytes']:,} ({storage['coding']})", ratio, f"{storage['nonzeros']:,}"]
        else:
            cells += ["(as above)", "", ""]
        cells.append(f"{c['top1_agreement']:.2%}" if c.get("top1_agreement") is not None else "")
        cells.append(_db(c.get("sqnr_db")) if c else "")
        cells.append(f"{p['accuracy']:.2%}" if p.get("accuracy") is not None else "")
        lines.append("|" + "|".join(f" {cell} " if cell else " " for cell in cells) + "|")
    size = report["size_bytes"]
    ratio = size["before"] / max(size["artifact"], 1)
    lines += ["", f"Artifact files: {size['artifact']:,} bytes ({ratio:.1f}x smaller than the original model file)."]
    return lines


def _structured_table(report: dict) -> list[str]:
    """Structured pruning's effect on cost: MACs, parameters, onnxruntime latency (batch 1, 1 thread)."""
    rows = [p for p in report["passes"] if "macs_before" in p["stats"]]
    if not rows:
        return []
    lines = [
        "",
        "## Structured pruning",
        "",
        "| step | MACs | params | latency ms (onnxruntime, batch 1, 1 thread) | channels |",
        "|---|---|---|---|---|",
    ]
    for p in rows:
        s = p["stats"]
        latency = (
            f"{s['latency_ms_before']:.3f} -> {s['latency_ms_after']:.3f} "
            f"({s['latency_ms_after'] / s['latency_ms_before']:.2f}x)"
            if s.get("latency_ms_before")
            else "not measured"
        )
        lines.append(
            f"| {p['index']}. `{p['name']}` | {s['macs_before']:,} -> {s['macs_after']:,} "
            f"({s['macs_after'] / max(s['macs_before'], 1):.2f}x) | {s['params_before']:,} -> {s['params_after']:,} "
            f"| {latency} | {s['channels_before']:,} -> {s['channels_after']:,} |"
        )
    return lines


def _artifact_section(report: dict) -> list[str]:
    """What the backend wrote, as its runtime sees it: precision, ports, operators, notes."""
    info = report.get("artifact") or {}
    if "inputs" not in info:
        return []
    lines = ["", f"## Artifact ({report['backend']}, {info.get('precision', '?')})", ""]
    lines += [
        "| port | name | shape | dtype | layout | quantization (scale, zero point) |",
        "|---|---|---|---|---|---|",
    ]
    for kind in ("inputs", "outputs"):
        for port in info[kind]:
            q = port.get("quantization")
            quant = f"{q['scale']:.6g}, {q['zero_point']}" if q else ""
            shape = "x".join(str(d) for d in port["shape"])
            lines.append(
                f"| {kind[:-1]} | `{port['name']}` | {shape} | {port['dtype']} | {port['layout'] or ''} | {quant} |"
            )
    if info.get("operators"):
        lines += ["", "Operators: " + ", ".join(f"{name} x{count}" for name, count in info["operators"].items()) + "."]
    lines += [f"- {note}" for note in info.get("notes", [])]
    return lines


def render_markdown(report: dict) -> str:
    status = "all checks ok" if report["ok"] else "**checks FAILED**"
    size, params, nodes = report["size_bytes"], report["params"], report["nodes"]
    lines = [
        f"# edgec build: {report['model']} for {report['target']}",
        "",
        f"- backend: `{report['backend']}`; {status} ({report['checks_run']} checks on "
        f"{report['samples']['count']} {report['samples']['source']} samples)",
        f"- pipeline: `{report['pipeline'] or '(empty)'}`",
        f"- edgec {report['edgec_version']}, {report['seconds']:.2f} s",
        "",
        "| | before | after | ratio |",
        "|---|---:|---:|---:|",
        *(
            f"| {label} | {pair['before']:,} | {pair['after']:,} | {pair['after'] / max(pair['before'], 1):.3f} |"
            for label, pair in (("model bytes", size), ("parameters", params), ("nodes", nodes))
        ),
        "",
        "| # | pass | numerics | modified | seconds | check | max abs err | max rel err | cosine | SQNR dB | stats |",
        "|---:|---|---|---|---:|---|---:|---:|---:|---:|---|",
    ]
    for p in report["passes"]:
        c = p["check"] or {}
        stats = ", ".join(
            f"{k}={v}" for k, v in p["stats"].items() if v not in (0, None, [], {}) and k not in _DETAIL_STATS
        )
        cosine = f"{c['cosine']:.6f}" if c else "-"
        sqnr = _db(c.get("sqnr_db")) if c else "-"
        lines.append(
            f"| {p['index']} | `{p['name']}` | {p['numerics']} | {'yes' if p['modified'] else 'no'} | "
            f"{p['seconds']:.3f} | {_check_cell(p['check'])} | {_err(c.get('max_abs_err'))} | "
            f"{_err(c.get('max_rel_err'))} | {cosine} | {sqnr} | {stats} |"
        )
    for label in ("final_check", "backend_check"):
        c = report[label]
        if c:
            lines.append("")
            lines.append(
                f"**{label.replace('_', ' ')}** ({'ok' if c['ok'] else 'FAILED'} vs {c['against']}): "
                f"max abs err {_err(c['max_abs_err'])}, max rel err {_err(c['max_rel_err'])}, "
                f"cosine {c['cosine']:.6f}, SQNR {_db(c['sqnr_db'])} dB"
                + (f"; {c['within_lsb']:.2%} of int8 output elements within 1 LSB" if "within_lsb" in c else "")
                + (f"; {'; '.join(c['failures'])}" if c["failures"] else "")
            )
    lines += _artifact_section(report)
    if report.get("error"):
        lines[2:2] = [f"- **build failed**: {report['error']}"]
    lines += _compression_table(report)
    lines += _structured_table(report)
    for p in report["passes"]:
        if p.get("debug_precision"):
            from edgec.quant.debug import format_table

            lines += [
                "",
                f"## Where `{p['name']}` lost precision (worst layers first)",
                "",
                format_table(p["debug_precision"], 20),
            ]
    control = report.get("accuracy_control")
    if control:
        lines += [
            "",
            "## Accuracy control",
            "",
            f"Bound: {control['bound']} ({control['search_samples']} search / {control['holdout_samples']} held-out "
            f"samples, {control['evaluations']} quantized variants evaluated in {control['seconds']} s).",
            "",
            "| | search | held-out |",
            "|---|---:|---:|",
            f"| float32 | {control['float32']['search']:.3f} | {control['float32']['holdout']:.3f} |",
            f"| all int8 | {control['all_int8']['search']:.3f} | |",
            f"| final | {control['final']['search']:.3f} | {control['final']['holdout']:.3f} |",
            "",
            f"Layers kept in float: {', '.join(f'`{n}`' for n in control['fallback']) or 'none'}.",
        ]
    if report["warnings"]:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in report["warnings"]]
    return "\n".join(lines) + "\n"
