"""Quantization compile time: edgec -O int8 against NNCF and onnxruntime on ResNet-18/50/101.

    python -m bench.quant.compile_time [--rounds 3] [--models resnet18,resnet50,resnet101]
        # writes bench/quant/compile_time.{json,md}

ResNets are the torchvision architectures written out here (random init, seed 0: timing only),
exported to ONNX once. Every tool quantizes the same 100 calibration samples (seeded normal,
1x3x224x224) in a child process of its own, one tool after another within a round and the
rounds interleaved, so machine load moves every tool alike. Measured per run: CPU seconds
(user + sys of the child, what the issue's targets are written in), wall seconds and peak RSS.
edgec runs as users run it (the CLI, all checks on) for the openvino and onnx backends; its
report splits the time into passes and checks. Quoted: medians and the median of per-round ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench import machine

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).parent
WORK = ROOT / "build" / "bench-compile-time"
SAMPLES = 100
TIMEOUT_S = 1800
LAYERS = {"resnet18": ("basic", [2, 2, 2, 2]), "resnet50": ("bottleneck", [3, 4, 6, 3]), "resnet101": ("bottleneck", [3, 4, 23, 3])}
TOOLS = ("edgec openvino", "edgec onnx", "onnxruntime", "nncf")


def resnet(kind: str, blocks: list[int]):
    """torchvision's ResNet (v1.5: stride on the 3x3 of a bottleneck), without the download."""
    import torch
    from torch import nn

    class Basic(nn.Module):
        expansion = 1

        def __init__(self, cin, width, stride):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
            self.conv2, self.bn2 = nn.Conv2d(width, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width)
            self.down = _downsample(cin, width, stride)

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(y)) + (self.down(x) if self.down else x))

    class Bottleneck(nn.Module):
        expansion = 4

        def __init__(self, cin, width, stride):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
            self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
            self.conv3, self.bn3 = nn.Conv2d(width, width * 4, 1, bias=False), nn.BatchNorm2d(width * 4)
            self.down = _downsample(cin, width * 4, stride)

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            y = torch.relu(self.bn2(self.conv2(y)))
            return torch.relu(self.bn3(self.conv3(y)) + (self.down(x) if self.down else x))

    def _downsample(cin, cout, stride):
        if stride == 1 and cin == cout:
            return None
        return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    block = Basic if kind == "basic" else Bottleneck
    layers, cin = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)], 64
    for stage, count in enumerate(blocks):
        width = 64 * 2**stage
        for i in range(count):
            layers.append(block(cin, width, 2 if stage > 0 and i == 0 else 1))
            cin = width * block.expansion
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 1000)]
    return nn.Sequential(*layers)


def prepare(name: str) -> tuple[Path, Path]:
    """The ONNX model and the calibration .npz (made once, reused by every round)."""
    WORK.mkdir(parents=True, exist_ok=True)
    model, calib = WORK / f"{name}.onnx", WORK / "calib.npz"
    if not model.exists():
        import torch

        torch.manual_seed(0)
        module = resnet(*LAYERS[name]).eval()
        for m in module.modules():  # random BatchNorm statistics, so folding them is not a no-op
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        partial = model.with_suffix(".partial.onnx")
        torch.onnx.export(module, torch.zeros(1, 3, 224, 224), str(partial), input_names=["x"], output_names=["logits"],
                          opset_version=17, dynamo=False)
        partial.replace(model)
    if not calib.exists():
        x = np.random.default_rng(0).standard_normal((SAMPLES, 1, 3, 224, 224)).astype(np.float32)
        np.savez(WORK / "calib.partial.npz", x=x)
        (WORK / "calib.partial.npz").replace(calib)
    return model, calib


# Child programs: each quantizer alone in a fresh interpreter, as a user would run it.
ORT_CHILD = """
import sys, numpy as np
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
x = np.load(sys.argv[2])["x"]
class Reader(CalibrationDataReader):
    def __init__(self): self.items = iter([{"x": s} for s in x])
    def get_next(self): return next(self.items, None)
quantize_static(sys.argv[1], sys.argv[3], Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
"""
NNCF_CHILD = """
import logging, sys, numpy as np, onnx, nncf
logging.getLogger("nncf").setLevel(logging.ERROR)
x = np.load(sys.argv[2])["x"]
model = nncf.quantize(onnx.load(sys.argv[1]), nncf.Dataset([{"x": s} for s in x]), subset_size=len(x),
                      preset=nncf.QuantizationPreset.PERFORMANCE)
onnx.save(model, sys.argv[3])
"""


def command(tool: str, model: Path, calib: Path, out: Path) -> list[str]:
    if tool.startswith("edgec"):
        backend = tool.split()[1]
        return [sys.executable, "-m", "edgec", str(model), "--target", "x86-64", "--backend", backend, "-O", "int8",
                "--calib", str(calib), "-o", str(out), "--force", "--quiet"]
    child = ORT_CHILD if tool == "onnxruntime" else NNCF_CHILD
    return [sys.executable, "-c", child, str(model), str(calib), str(out) + ".onnx"]


def run(tool: str, model: Path, calib: Path, out: Path) -> dict:
    """One quantization in a child process: its own CPU seconds and peak RSS (os.wait4's rusage is
    the child's alone), wall seconds, and for edgec the report's split into passes and checks."""
    import tempfile
    import threading

    load = os.getloadavg()[0]  # other work on the machine inflates every tool's CPU seconds alike
    with tempfile.TemporaryFile() as stderr:
        start = time.perf_counter()
        process = subprocess.Popen(command(tool, model, calib, out), stdout=subprocess.DEVNULL, stderr=stderr)
        timer = threading.Timer(TIMEOUT_S, process.kill)
        timer.start()
        _, status, usage = os.wait4(process.pid, 0)
        timer.cancel()
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        stderr.seek(0)
        lines = stderr.read().decode(errors="replace").strip().splitlines()
    result = {
        "rc": process.returncode,
        "wall_s": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "load_before": round(load, 2),
    }
    if process.returncode != 0:
        result["error"] = (lines[-1] if lines else "?")[:200]
    elif tool.startswith("edgec"):
        result["breakdown"] = _edgec_breakdown(out / "report.json")
    return result


def _edgec_breakdown(report_path: Path) -> dict:
    report = json.loads(report_path.read_text())
    passes = report["passes"]
    quantize = next((p for p in passes if p["name"] == "quantize"), {})
    return {
        "passes_s": round(sum(p.get("seconds") or 0 for p in passes), 2),
        "checks_s": round(sum(p.get("check_seconds") or 0 for p in passes), 2),
        "quantize_s": round(quantize.get("seconds") or 0, 2),
        "total_s": report.get("seconds"),
        "backend_check_s": (report.get("backend_check") or {}).get("seconds"),
    }


def summarize(rounds: list[dict]) -> dict:
    table = {}
    for tool in TOOLS:
        runs = [r[tool] for r in rounds if "error" not in r[tool]]
        if not runs:
            table[tool] = {"error": rounds[0][tool].get("error")}
            continue
        table[tool] = {
            "cpu_s": round(statistics.median(r["cpu_s"] for r in runs), 2),
            "wall_s": round(statistics.median(r["wall_s"] for r in runs), 2),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
            "runs": len(runs),
        }
        if "breakdown" in runs[0]:
            table[tool]["breakdown"] = {
                k: round(statistics.median(r["breakdown"][k] or 0 for r in runs), 2) for k in runs[0]["breakdown"]
            }
    for ours in ("edgec openvino", "edgec onnx"):
        for other in ("nncf", "onnxruntime"):
            ratios = [r[ours]["cpu_s"] / r[other]["cpu_s"] for r in rounds if "error" not in r[ours] and "error" not in r[other]]
            if ratios:
                table[ours][f"cpu_vs_{other}"] = round(statistics.median(ratios), 3)
    return table


def markdown(results: dict) -> str:
    loads = [r[tool]["load_before"] for rounds in results["runs"].values() for r in rounds for tool in r if "load_before" in r[tool]]
    load = statistics.median(loads) if loads else None
    shared = " (other work shared the machine: absolute seconds are inflated, ratios less so)" if load and load > 1.5 else ""
    lines = [
        "# Quantization compile time (ResNets, 100 calibration samples)",
        "",
        f"1-minute load average before the runs: median {load:.1f} on {results['machine']}{shared}." if loads else "",
        "",
        f"Written by `python -m bench.quant.compile_time` on {results['machine']}; {results['rounds']} interleaved rounds, "
        "medians; ratios are medians of per-round ratios. CPU s = user + sys of the quantizing process. edgec: "
        "`-O int8` through the CLI for x86-64, all checks on. onnxruntime: quantize_static, QDQ, per-channel, MinMax. "
        "NNCF: nncf.quantize on the ONNX model, PERFORMANCE preset. Targets (issue 13): edgec <= 0.8x NNCF and <= 1.3x "
        "onnxruntime in CPU seconds; checks <= 20% of the build.",
        "",
        "| model | tool | CPU s | wall s | peak RSS MB | vs NNCF | vs onnxruntime | passes s | quantize s | checks s | checks share |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, table in results["models"].items():
        for tool, row in table.items():
            if "error" in row:
                lines.append(f"| {name} | {tool} | failed: {row['error']} | | | | | | | | |")
                continue
            b = row.get("breakdown") or {}
            share = f"{b['checks_s'] / b['total_s']:.0%}" if b.get("total_s") else ""
            lines.append(
                f"| {name} | {tool} | {row['cpu_s']} | {row['wall_s']} | {row['peak_rss_mb']} | {row.get('cpu_vs_nncf', '')} | "
                f"{row.get('cpu_vs_onnxruntime', '')} | {b.get('passes_s', '')} | {b.get('quantize_s', '')} | "
                f"{b.get('checks_s', '')} | {share} |"
            )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", default="resnet18,resnet50,resnet101")
    args = parser.parse_args(argv)
    results = {"machine": machine(), "rounds": args.rounds, "models": {}, "runs": {}}
    for name in args.models.split(","):
        model, calib = prepare(name)
        rounds = []
        for i in range(args.rounds):
            row = {}
            for tool in TOOLS:
                row[tool] = run(tool, model, calib, WORK / f"out-{name}-{tool.replace(' ', '-')}")
                print(f"{name} round {i + 1}: {tool:15s} {row[tool]}", flush=True)
            rounds.append(row)
        results["runs"][name] = rounds
        results["models"][name] = summarize(rounds)
        (HERE / "compile_time.json").write_text(json.dumps(results, indent=1) + "\n")
        (HERE / "compile_time.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
