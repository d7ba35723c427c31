"""Real-model sweep: every corpus model x backend x preset through the installed `edgec` CLI.

    python -m bench.realmodels.run                       # everything not yet measured
    python -m bench.realmodels.run --only nudenet-320n --backend onnx --config int8-random
    python -m bench.realmodels.run --report              # only rewrite results.md from results.json

Each build runs `edgec MODEL --target T --backend B -O ...` as a child process with a timeout and a
memory watchdog, and is classified by the exit-code table of issue 12:

    validated     exit 0 and the bundle's report says every check is ok
    refused       exit 2 with a one-line reason (bad input / unsupported op or feature)
    check-failed  exit 1 (a numeric check or budget failed)
    defect        exit 3, a traceback, a timeout, a kill, a pass that raised a Python exception but
                  exited 2, more than one error line, or exit 0 with something wrong (report not ok,
                  -O int8 that quantized nothing)

Recorded per build: outcome, the stderr error line, the report's final_check / backend_check
numbers, wall time and peak RSS (os.wait4 of the child), and for -O int8 builds on the onnx
backend the output SQNR of edgec's model against the float model next to onnxruntime
quantize_static's (same calibration samples; QDQ, per-channel, best of MinMax / Entropy /
Percentile) on the same held-out inputs. Results are cached per build key in results.json, so the
sweep resumes where it stopped; `--rerun` measures again.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench import machine
from bench.realmodels import data
from bench.realmodels.corpus import BY_NAME, CORPUS, ROOT, Entry

HERE = Path(__file__).parent
WORK = ROOT / "build" / "realmodels-work"
EDGEC = Path(sys.executable).with_name("edgec")
TIME = Path("/usr/bin/time")

# backend -> (target for -O2/-O int8, target for -O fp16)
TARGETS = {
    "onnx": ("x86-64", "x86-64"),
    "openvino": ("x86-64", "x86-64"),
    "tflite": ("raspberry-pi-4", "raspberry-pi-5"),  # the Pi 4 has no fp16 arithmetic
    "tvm": ("x86-64", "x86-64"),
    "tensorrt": ("jetson-orin-nano", "jetson-orin-nano"),
}
BACKENDS = list(TARGETS)
CONFIGS = ["O2", "int8-random", "int8-real", "fp16"]
CALIB_COUNT = 32
# Held-out inputs for the int8 SQNR comparison. 8 were too few to rank two quantizers: on PP-OCR's
# direction classifier (2 softmax values per sample) edgec was 0.7 dB below onnxruntime on 8 samples
# and 1.8 dB above it on 64; on oww-hey-jarvis 0.8 below on 8, 24.7 above on 64.
HELDOUT_COUNT = 64
# An exact build may miss the held-out floor on this share of samples (decodings that diverge after
# a near-tie argmax) before it is called wrong.
HELDOUT_DIVERGENT_SHARE = 0.05
# ...and, for models with small outputs, enough samples for HELDOUT_OUTPUT_VALUES output values:
# on 64 samples the 2-value classifier still swung 1.4 dB between two seeds, and the method
# calib=auto picked was 0.6 dB below minmax on 1024 (within inputs of HELDOUT_INPUT_BYTES). Up to
# 4096: oww-hey-jarvis (1 value a sample, switching branch at a sigmoid of 0.5) on 1024 samples
# ranked onnxruntime's Percentile model first (28.1 dB to edgec's 26.3) on which 6 samples flipped
# under each; on 4096, three seeds, edgec led every time (26.2 / 26.0 / 27.3 dB to 25.1 / 24.7 /
# 25.6; 18-20 flipped samples to 24-27).
HELDOUT_MAX = 4096
HELDOUT_OUTPUT_VALUES = 4096
HELDOUT_INPUT_BYTES = 256 << 20
TIMEOUT_S = 600
MEMORY_LIMIT = 8 << 30  # a build past this is killed and recorded as a defect
# The order the sweep fills cells in: the cheap, most telling ones first.
PHASES = [
    (("onnx", "openvino", "tflite"), ("O2", "int8-random")),
    (("onnx", "openvino", "tflite"), ("int8-real",)),
    (("onnx", "openvino", "tflite"), ("fp16",)),
    (("tvm", "tensorrt"), ("O2", "int8-random", "fp16", "int8-real")),
]
# Exit-2 messages that are edgec's own fault, not the input's: a pass that raised, a pass whose output
# onnxruntime cannot run, a valid dim_value -1 (dynamic) read as a fixed dimension (issue 12, item 3),
# and the same for a .tflite input whose shape_signature is dynamic (the corpus only fixes those).
INTERNAL = re.compile(
    r"raised [A-Z][A-Za-z_.]*:|raised [A-Za-z_.]*(Error|Exception|Interrupt|Exit)\b|Traceback \(most recent call last\)|internal error"
    r"|pass '[^']+' produced a model|dimension -1 is fixed|input shapes are fixed in the file"
)


def key(name: str, backend: str, config: str) -> str:
    return f"{name}|{backend}|{config}"


# --- inputs ---------------------------------------------------------------------------------------


def input_specs(entry: Entry, model: Path | None = None) -> list[tuple[str, tuple[int, ...], np.dtype]]:
    """(name, fixed shape, dtype) per model input, in order, with the corpus's shapes applied."""
    import onnx

    path = model or entry.path
    fixed = {}
    for name, spec in entry.input_shapes.items():
        dims, _, dtype = spec.partition(":")
        fixed[name] = tuple(int(d) for d in dims.split("x"))
    if path.suffix == ".tflite":
        # edgec's import, not the interpreter's list: a streaming model's resource variables become
        # explicit state inputs (mww-okay-nabu), which calibration files must hold too.
        from edgec.frontends import load_path

        graph = load_path(path).graph
        return [
            (t.name, fixed.get(t.name, tuple(int(d) if isinstance(d, int) and d > 0 else 1 for d in t.shape)), np.dtype(t.dtype))
            for t in graph.inputs
        ]
    graph = onnx.load(str(path), load_external_data=False).graph
    init = {i.name for i in graph.initializer}
    specs = []
    for value in graph.input:
        if value.name in init:
            continue
        tt = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in tt.shape.dim)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        specs.append((value.name, fixed.get(value.name, dims), dtype))
    return specs


def calib_file(entry: Entry, kind: str) -> Path | None:
    """The .npz of calibration ('random' or 'real') samples, written once."""
    if kind == "real" and entry.calib is None:
        return None
    path = WORK / "calib" / f"{entry.name}.{kind}.npz"
    if path.exists():  # written by an earlier corpus entry: the inputs may have changed since
        with np.load(path) as cached:
            if len(cached.files) != len(input_specs(entry)) - len(entry.fixed_inputs):
                path.unlink()
    if not path.exists():
        stacks = samples(entry, kind, CALIB_COUNT, seed=0)
        data.save_npz(path, {k: v for k, v in stacks.items() if k not in entry.fixed_inputs})  # builds freeze them
    return path


def samples(entry: Entry, kind: str, count: int, seed: int) -> dict[str, np.ndarray]:
    specs = input_specs(entry)
    if kind == "real":
        assert entry.calib is not None and len(specs) == 1
        return data.real_samples(entry.calib, specs[0][0], count, seed)
    stacks = data.random_samples(specs, count, seed)
    for name, value in entry.fixed_inputs.items():
        stacks[name] = np.full_like(stacks[name], value)
    return stacks


# --- running one build ------------------------------------------------------------------------------


def _group_rss(pgid: int) -> int:
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:  # field 5: pgrp
                total += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")  # field 24: rss pages
        except (OSError, IndexError, ValueError):
            continue
    return total


def snapshot(commit: str) -> Path:
    """edgec as committed at `commit`, laid out as installed (edgec/, edgec/passes, edgec/backends,
    edgec/models), so a sweep measures one known version even while the work tree is being edited."""
    where = WORK / f"edgec-{commit}"
    if (where / ".complete").exists():
        return where
    # Built in this process's own directory and renamed into place: two sweeps started together
    # (one per backend) each build one, and the second rename finds the first's and drops its own.
    WORK.mkdir(parents=True, exist_ok=True)
    mine = Path(tempfile.mkdtemp(prefix=f"edgec-{commit}.", dir=WORK))
    tree = mine / "tree"
    tree.mkdir()
    archive = subprocess.run(["git", "archive", commit], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    built = mine / "edgec-root"
    built.mkdir()
    shutil.move(str(tree / "edgec"), str(built / "edgec"))
    for sub, name in (("passes", "passes"), ("backends", "backends"), ("models", "models")):
        shutil.move(str(tree / sub), str(built / "edgec" / name))
    (built / ".complete").touch()
    if not (where / ".complete").exists():
        shutil.rmtree(where, ignore_errors=True)  # an incomplete one a killed sweep left
        try:
            os.rename(built, where)
        except OSError:  # another sweep's landed first
            pass
    shutil.rmtree(mine, ignore_errors=True)
    return where


EDGEC_ENV: dict[str, str] | None = None  # set by main(): PYTHONPATH of the snapshot, or None (installed)
EDGEC_CWD: Path = ROOT


def run_child(command: list[str], timeout: float, stderr_path: Path) -> dict:
    """Run with a timeout and a memory watchdog; returns rc, wall seconds, peak RSS, why killed."""
    start = time.monotonic()
    env = {**os.environ, **EDGEC_ENV} if EDGEC_ENV else None
    # The child's ru_maxrss from wait4 starts at this (large) process's RSS at fork: GNU time forks
    # edgec from a small process instead, so its %M is edgec's own peak.
    rss_file = stderr_path.with_suffix(".maxrss")
    rss_file.unlink(missing_ok=True)
    if TIME.exists():
        command = [str(TIME), "-f", "%M", "-o", str(rss_file), *command]
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True, cwd=EDGEC_CWD, env=env
        )
    killed: list[str] = []
    seen = [0]  # the largest RSS of the process group the watchdog saw (a killed build reports none)
    done = threading.Event()

    def watchdog():
        while not done.wait(1.0):
            rss = _group_rss(proc.pid)
            seen[0] = max(seen[0], rss)
            if time.monotonic() - start > timeout:
                killed.append(f"timeout after {timeout:.0f}s")
            elif rss > MEMORY_LIMIT:
                killed.append(f"killed at {MEMORY_LIMIT >> 30} GiB RSS")
            if killed:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                return

    thread = threading.Thread(target=watchdog, daemon=True)
    thread.start()
    _, status, usage = os.wait4(proc.pid, 0)
    done.set()
    thread.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    peak_kb, method = usage.ru_maxrss, "wait4 (upper bound)"
    try:
        peak_kb, method = int(rss_file.read_text().split()[-1]), "time"
    except (OSError, ValueError, IndexError):
        if seen[0]:
            peak_kb, method = seen[0] // 1024, "watchdog (sampled each second)"
    return {
        "rc": proc.returncode,
        "seconds": round(time.monotonic() - start, 1),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "rss_method": method,
        "killed": killed[0] if killed else None,
    }


def build_command(entry: Entry, backend: str, config: str, out: Path, calib: Path | None) -> list[str]:
    target = TARGETS[backend][1 if config == "fp16" else 0]
    opt = {"O2": ["-O2"], "fp16": ["-O", "fp16"]}.get(config, ["-O", "int8"])
    edgec = [sys.executable, "-m", "edgec"] if EDGEC_ENV else [str(EDGEC)]
    command = [*edgec, str(entry.path), "--target", target, "--backend", backend, *opt, "-o", str(out)]
    command += entry.shape_args()
    # A fixed input is a setting a deployment fixes (silero-vad's sample rate): the build freezes
    # it, so the If on it folds to the branch taken.
    command += [a for name, value in entry.fixed_inputs.items() for a in ("--freeze-input", f"{name}={value}")]
    if config.startswith("int8"):
        command += ["--calib", str(calib), "--seed", "0"]
    return command


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("edgec: error") or line.startswith("Traceback")]


def classify(child: dict, stderr: str, report: dict | None, config: str) -> tuple[str, str]:
    rc = child["rc"]
    errors = error_lines(stderr)
    line = errors[-1] if errors else (stderr.strip().splitlines() or [""])[-1]
    if child["killed"]:
        return "defect", child["killed"]
    if "Traceback (most recent call last)" in stderr:
        return "defect", "traceback: " + (stderr.strip().splitlines() or [""])[-1]
    if rc == 0:
        if report is None:
            return "defect", "exit 0 but no report.json"
        checks = [report.get("final_check"), report.get("backend_check")]
        bad = [c for c in checks if isinstance(c, dict) and not c.get("ok", True)]
        if not report.get("ok", False) or bad:
            return "defect", "exit 0 but the report has a failed check"
        if config.startswith("int8") and quantized_nodes(report) == 0:
            return "defect", "exit 0 but -O int8 quantized 0 nodes"
        return "validated", line if errors else ""
    if rc not in (1, 2):
        return "defect", f"exit {rc}: {line}"
    if len(errors) > 1:
        return "defect", f"exit {rc} with {len(errors)} error lines: {line}"
    if rc == 2 and INTERNAL.search(line):
        return "defect", f"exit 2 for an internal error: {line}"
    return ("check-failed" if rc == 1 else "refused"), line


def quantized_nodes(report: dict) -> int | None:
    counts = [p.get("stats", {}).get("quantized_nodes") for p in report.get("passes", []) if p.get("name") == "quantize"]
    counts = [c for c in counts if isinstance(c, int)]
    return sum(counts) if counts else None


def quantize_choices(report: dict) -> dict | None:
    """What -O int8 chose (method, weight range, layers kept float), to tell why a cell moved."""
    stats = next((p.get("stats") or {} for p in report.get("passes", []) if p.get("name") == "quantize"), None)
    if not stats:
        return None
    recovery = stats.get("recovery") or {}
    return {
        "calib": stats.get("calib"),
        "calib_scores_db": stats.get("calib_scores_db"),
        "weight_range": stats.get("weight_range"),
        "float_layers": len(stats.get("fallback") or []),
        "recovery_trials": recovery.get("trials"),
        "bias_correction": (stats.get("bias_correction") or {}).get("chosen"),
    }


def check_numbers(check: dict | None) -> dict | None:
    if not isinstance(check, dict):
        return None
    keys = ("ok", "sqnr_db", "cosine", "max_abs_err", "max_rel_err", "top1_agreement", "against")
    return {k: check.get(k) for k in keys if k in check}


def run_build(entry: Entry, backend: str, config: str, earlier: dict | None = None) -> dict:
    kind = "real" if config == "int8-real" else "random"
    calib = calib_file(entry, kind) if config.startswith("int8") else None
    if config == "int8-real" and calib is None:
        return {"outcome": "n/a", "line": "no real data for this model"}
    out = WORK / "out" / f"{entry.name}.{backend}.{config}"
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = build_command(entry, backend, config, out, calib)
    stderr_path = WORK / "logs" / f"{entry.name}.{backend}.{config}.stderr"
    stderr_path.parent.mkdir(parents=True, exist_ok=True)
    child = run_child(command, TIMEOUT_S, stderr_path)
    stderr = stderr_path.read_text(errors="replace")
    report = None
    if (out / "report.json").is_file():
        try:
            report = json.loads((out / "report.json").read_text())
        except ValueError:
            report = None
    outcome, line = classify(child, stderr, report, config)
    result = {
        "model": entry.name,
        "backend": backend,
        "config": config,
        "command": " ".join(_short(c) for c in command),
        "outcome": outcome,
        "rc": child["rc"],
        "line": line[:400],
        "seconds": child["seconds"],
        "peak_rss_mb": child["peak_rss_mb"],
        "rss_method": child["rss_method"],
        "model_mb": round(entry.path.stat().st_size / 2**20, 2),
    }
    if report is not None and child["rc"] == 0:
        result["final_check"] = check_numbers(report.get("final_check"))
        result["backend_check"] = check_numbers(report.get("backend_check"))
        result["quantized_nodes"] = quantized_nodes(report)
        result["quantize"] = quantize_choices(report)
        result["artifact_bytes"] = (report.get("size_bytes") or {}).get("artifact")
        if backend == "onnx" and config == "O2" and entry.format == "tflite":
            float_onnx = WORK / "float" / f"{entry.name}.onnx"  # the float reference for SQNR
            float_onnx.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(out / "model.onnx", float_onnx)
        if backend == "onnx" and config in ("O2", "fp16") and entry.format == "onnx" and outcome == "validated":
            # Independent of edgec's own check samples: the artifact against the original model
            # on held-out inputs. An exact -O2 build far from the original is wrong although it exits 0.
            try:
                heldout = samples(entry, "random", HELDOUT_COUNT, seed=1)
                reference, artifact = _outputs(entry.path, heldout), _outputs(out / "model.onnx", heldout)
                value = sqnr_db(reference, artifact)
                result["heldout_sqnr_db"] = value
                floor = 60.0 if config == "O2" else 20.0
                # Per sample: a model that feeds argmax decisions back (SLANet's Loop decoder) turns
                # float32 rounding into a different decoding on a near-tie: 1 of 64 random inputs
                # after -O2 (max error 4.6e-6 on the others). A wrong model misses on most samples.
                missed = sum(sqnr_db([r], [a]) < floor for r, a in zip(reference, artifact))
                result["heldout_samples_below_floor"] = f"{missed}/{len(reference)}"
                if value < floor and missed > HELDOUT_DIVERGENT_SHARE * len(reference):
                    result["outcome"] = outcome = "defect"
                    result["line"] = (
                        f"exit 0 but the artifact is {value} dB from the original on held-out inputs (< {floor} "
                        f"on {missed} of {len(reference)} samples)"
                    )
            except Exception as exc:  # noqa: BLE001 - recorded, not fatal
                result["heldout_sqnr_db"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
        if backend == "onnx" and config.startswith("int8") and outcome == "validated":
            result["sqnr"] = sqnr_versus_ort(entry, out / "model.onnx", calib, kind, (earlier or {}).get("sqnr"))
        if backend == "openvino" and config.startswith("int8") and outcome == "validated":
            result["sqnr"], _ = heldout_sqnr(entry, out / "model.xml", kind, _openvino_outputs)
    shutil.rmtree(out, ignore_errors=True)
    return result


def _short(arg: str) -> str:
    return arg.replace(str(ROOT) + "/", "")


# --- int8 SQNR: edgec vs onnxruntime quantize_static ----------------------------------------------------


def _session(path: Path):
    """Every int8 model, edgec's and the baselines', runs in onnxruntime's non-saturating kernels
    (as edgec.runtime runs them): the comparison is of quantizers, not of a CPU's int8 kernels."""
    import onnxruntime as ort

    from edgec import unsaturated_int8

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), unsaturated_int8.configure(options), providers=["CPUExecutionProvider"])


def _outputs(path: Path, stacks: dict[str, np.ndarray]) -> list[list[np.ndarray]]:
    """Per sample, the float outputs; inputs matched by name (a build may have frozen one), else
    by position (a .tflite's names differ from its ONNX import's)."""
    session = _session(path)
    names = [i.name for i in session.get_inputs()]
    arrays = [stacks[n] for n in names] if all(n in stacks for n in names) else list(stacks.values())
    results = []
    for i in range(len(arrays[0])):
        feed = {name: np.asarray(arrays[k][i]) for k, name in enumerate(names)}  # a 0-d input: an array, not a scalar
        results.append([np.asarray(o, np.float64) for o in session.run(None, feed) if np.asarray(o).dtype.kind == "f"])
    return results


def sqnr_db(reference: list[list[np.ndarray]], test: list[list[np.ndarray]]) -> float:
    """Worst output's SQNR over all held-out samples (a large output cannot hide a destroyed one)."""
    worst = np.inf
    for k in range(len(reference[0])):
        ref = np.concatenate([r[k].ravel() for r in reference])
        got = np.concatenate([t[k].ravel() for t in test])
        noise = float(np.sum((ref - got) ** 2))
        signal_ = float(np.sum(ref**2))
        value = np.inf if noise == 0 else (10 * np.log10(signal_ / noise) if signal_ > 0 else -np.inf)
        worst = min(worst, value)
    return round(float(worst), 2)


def worst_slice_db(reference: list[list[np.ndarray]], test: list[list[np.ndarray]]) -> float | None:
    """Worst SQNR over the slices along axis 1 of every output (axis size 2..256): a concatenated
    head's class scores cannot hide behind its box coordinates (issue 12, item 8)."""
    worst = None
    for k in range(len(reference[0])):
        ref = np.stack([r[k] for r in reference])
        got = np.stack([t[k] for t in test])
        if ref.ndim < 3 or not 2 <= ref.shape[2] <= 256:  # (samples, batch, axis 1, ...)
            continue
        for j in range(ref.shape[2]):
            a, b = ref[:, :, j], got[:, :, j]
            noise, power = float(np.sum((a - b) ** 2)), float(np.sum(a**2))
            if power == 0:
                continue
            value = np.inf if noise == 0 else 10 * np.log10(power / noise)
            worst = value if worst is None else min(worst, value)
    return None if worst is None else round(float(worst), 2)


def float_model(entry: Entry) -> Path | None:
    if entry.format == "onnx":
        return entry.path
    path = WORK / "float" / f"{entry.name}.onnx"
    return path if path.exists() else None


def heldout_samples(entry: Entry, kind: str, reference_model: Path) -> tuple[dict[str, np.ndarray], str]:
    """The held-out inputs of the int8 SQNR comparison and what they are (see HELDOUT_COUNT)."""
    probe = samples(entry, kind, 1, seed=1)
    values = sum(o.size for o in _outputs(reference_model, probe)[0])
    input_bytes = sum(a[0].nbytes for a in probe.values())
    count = min(HELDOUT_MAX, -(-HELDOUT_OUTPUT_VALUES // max(values, 1)), HELDOUT_INPUT_BYTES // max(input_bytes, 1))
    count = max(HELDOUT_COUNT, count)
    return samples(entry, kind, count, seed=1), f"{count} {kind} samples (seed 1)"


def _openvino_outputs(xml: Path, stacks: dict[str, np.ndarray]) -> list[list[np.ndarray]]:
    """_outputs for an OpenVINO IR, run by OpenVINO's CPU plugin (f32 hint: int8 where the IR's
    FakeQuantize layers say so, float32 elsewhere)."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": "1"})
    request = compiled.create_infer_request()
    names = [port.get_any_name() for port in compiled.inputs]
    arrays = [stacks[n] for n in names] if all(n in stacks for n in names) else list(stacks.values())
    results = []
    for i in range(len(arrays[0])):
        got = request.infer({k: np.asarray(arrays[k][i]) for k in range(len(names))})
        results.append([np.asarray(got[port], np.float64) for port in compiled.outputs if np.asarray(got[port]).dtype.kind == "f"])
    return results


def heldout_sqnr(entry: Entry, artifact: Path, kind: str, run=None) -> tuple[dict, tuple | None]:
    """The int8 artifact's SQNR against the float model on the held-out inputs (run by `run`:
    onnxruntime unless told), and (float model, held-out inputs, its outputs) when measured."""
    reference_model = float_model(entry)
    if reference_model is None:
        return {"error": "no float ONNX reference (the onnx -O2 build did not validate)"}, None
    try:
        heldout, described = heldout_samples(entry, kind, reference_model)
    except Exception as exc:  # noqa: BLE001 - measured, not fatal
        return {"error": f"float model: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}, None
    result: dict = {"heldout": described}
    try:
        reference = _outputs(reference_model, heldout)
        edgec_out = (run or _outputs)(artifact, heldout)
        result["edgec_db"] = sqnr_db(reference, edgec_out)
        result["edgec_worst_slice_db"] = worst_slice_db(reference, edgec_out)
    except Exception as exc:  # noqa: BLE001 - measured, not fatal
        return {"error": f"edgec int8 model: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}, None
    return result, (reference_model, heldout, reference)


def sqnr_versus_ort(entry: Entry, edgec_int8: Path, calib: Path, kind: str, earlier: dict | None = None) -> dict:
    """`earlier`: this cell's previous `sqnr`; its baselines (onnxruntime's, NNCF's) are kept when
    measured on the same held-out set: they depend on the float model, the calibration file and
    those inputs, not on edgec (a re-sweep of the onnx int8 cells then costs edgec's builds only)."""
    result, measured = heldout_sqnr(entry, edgec_int8, kind)
    if measured is None:
        return result
    reference_model, heldout, reference = measured
    if earlier and earlier.get("heldout") == result["heldout"] and isinstance(earlier.get("ort"), dict):
        result["ort"] = earlier["ort"]
        result.update({k: v for k, v in earlier.items() if k in ("nncf", "nncf_best_db")})
    else:
        result["ort"] = ort_quantize_capped(reference_model, calib, heldout, reference, entry)
    best = [v for v in result["ort"].values() if isinstance(v, float)]
    result["ort_best_db"] = max(best) if best else None
    return result


# onnxruntime's calibrators keep every intermediate output of every sample (its
# CalibMaxIntermediateOutputs drops MinMax's data unmerged in 1.32, and histograms ignore it):
# on PP-OCRv4's detector at 640x640 the three methods in one process passed 23 GB and took the
# machine. Each method runs in its own child process with its address space capped.
ORT_MEMORY_CAP = 14 * 2**30
ORT_METHODS = ("MinMax", "Entropy", "Percentile")


def _cap_memory() -> None:
    """Initializer of the baseline workers: their address space capped, and (Linux) killed with
    the sweep: a sweep stopped with kill left its onnxruntime workers busy on both cores."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (ORT_MEMORY_CAP, ORT_MEMORY_CAP))
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def ort_quantize_capped(source: Path, calib: Path, heldout, reference, entry: Entry) -> dict:
    """ort_quantize, one calibration method per child process under ORT_MEMORY_CAP; what stopped
    a child is that method's score."""
    return _capped(ort_quantize, ORT_METHODS, "onnxruntime's quantizer", source, calib, heldout, reference, entry)


# A baseline quantizer's time limit per method grows with the model: onnxruntime 1.32's
# _quantize_sharing_param_tensors loops forever on microWakeWord's streaming model (a tensor
# sharing the parameters of one it never quantizes), which cost 3 x TIMEOUT_S per sweep.
BASELINE_SECONDS = 180.0
BASELINE_SECONDS_PER_MB = 40.0


def _baseline_timeout(source: Path) -> float:
    return min(TIMEOUT_S, BASELINE_SECONDS + BASELINE_SECONDS_PER_MB * source.stat().st_size / 2**20)


def _capped(quantize, methods, who: str, *args) -> dict:
    """quantize(*args, (method,)) per method, each in a child process under ORT_MEMORY_CAP and
    _baseline_timeout(source) (args[0])."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    context = multiprocessing.get_context("spawn")
    scores: dict = {}
    for method in methods:
        with ProcessPoolExecutor(1, mp_context=context, initializer=_cap_memory) as pool:
            try:
                scores |= pool.submit(quantize, *args, (method,)).result(timeout=_baseline_timeout(args[0]))
            except (BrokenProcessPool, MemoryError):
                scores[method] = f"{who} died (memory capped at {ORT_MEMORY_CAP / 2**30:.0f} GiB)"
            except TimeoutError:
                for process in list(pool._processes.values()):  # noqa: SLF001 - no public way to stop a stuck worker
                    process.kill()
                scores[method] = f"{who} took over {_baseline_timeout(args[0]):.0f} s"
    return scores


# OpenVINO's NNCF (nncf.quantize on the ONNX model, evaluated in onnxruntime like the others):
# PERFORMANCE (symmetric activations) and MIXED (asymmetric) presets, its defaults otherwise
# (mean of per-sample min/max for activations, fast bias correction).
NNCF_PRESETS = ("PERFORMANCE", "MIXED")


def nncf_quantize(source: Path, calib: Path, heldout, reference, entry: Entry, presets=NNCF_PRESETS) -> dict:
    import logging

    import nncf
    import onnx
    from onnx import version_converter

    logging.getLogger("nncf").setLevel(logging.ERROR)
    with np.load(calib) as npz:
        arrays = [npz[k] for k in sorted(npz.files, key=lambda k: int(k.split("_")[1]))]
    names = [i.name for i in _session(source).get_inputs() if i.name not in entry.fixed_inputs]
    fixed = {n: np.full(shape, entry.fixed_inputs[n], dtype) for n, shape, dtype in input_specs(entry) if n in entry.fixed_inputs}
    feeds = [{**{n: a[i] for n, a in zip(names, arrays)}, **fixed} for i in range(len(arrays[0]))]
    model = onnx.load(str(source))
    if max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0) < 13:
        model = version_converter.convert_version(model, 13)  # NNCF quantizes per channel from opset 13
    scores = {}
    with tempfile.TemporaryDirectory() as tmp:
        for preset in presets:
            try:
                quantized = nncf.quantize(
                    model, nncf.Dataset(feeds), preset=getattr(nncf.QuantizationPreset, preset), subset_size=len(feeds)
                )
                out = Path(tmp) / f"{preset}.onnx"
                onnx.save(quantized, str(out))
                if not _quantizes_anything(out):  # silero-vad: every layer inside If branches
                    scores[preset] = "NNCF quantized no layer"
                    continue
                got = _outputs(out, heldout)
                scores[preset] = sqnr_db(reference, got)
                scores[f"{preset}_worst_slice"] = worst_slice_db(reference, got)
            except Exception as exc:  # noqa: BLE001 - NNCF fails on some real models too
                scores[preset] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
    return scores


def nncf_baselines(results: dict, args) -> None:
    """NNCF's int8 SQNR next to edgec's and onnxruntime's, on the same held-out inputs."""
    for entry in [BY_NAME[n] for n in args.only] if args.only else CORPUS:
        for config in ("int8-random", "int8-real"):
            build = results["builds"].get(key(entry.name, "onnx", config))
            s = (build or {}).get("sqnr")
            if not s or "heldout" not in s or ("nncf" in s and not args.rerun):
                continue
            kind = "real" if config == "int8-real" else "random"
            reference_model = float_model(entry)
            heldout, described = heldout_samples(entry, kind, reference_model)
            if described != s["heldout"]:
                print(f"{key(entry.name, 'onnx', config)}: measured on {s['heldout']}, now {described}: rerun the build", flush=True)
                continue
            reference = _outputs(reference_model, heldout)
            scores = _capped(nncf_quantize, NNCF_PRESETS, "NNCF", reference_model, calib_file(entry, kind), heldout, reference, entry)
            best = [v for k, v in scores.items() if k in NNCF_PRESETS and isinstance(v, float)]
            s["nncf"], s["nncf_best_db"] = scores, max(best) if best else None
            print(f"{key(entry.name, 'onnx', config):45s} nncf {s['nncf_best_db']} (edgec {s.get('edgec_db')}, onnxruntime {s.get('ort_best_db')})", flush=True)
            save(results, args.out)


def ort_quantize(source: Path, calib: Path, heldout, reference, entry: Entry, methods=ORT_METHODS) -> dict:
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    with np.load(calib) as npz:
        arrays = [npz[k] for k in sorted(npz.files, key=lambda k: int(k.split("_")[1]))]
    # The calibration file leaves out the inputs builds freeze; the original model takes them.
    names = [i.name for i in _session(source).get_inputs() if i.name not in entry.fixed_inputs]
    fixed = {n: np.full(shape, entry.fixed_inputs[n], dtype) for n, shape, dtype in input_specs(entry) if n in entry.fixed_inputs}

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{**{n: a[i] for n, a in zip(names, arrays)}, **fixed} for i in range(len(arrays[0]))])

        def get_next(self):
            return next(self.items, None)

    import logging

    logging.getLogger().setLevel(logging.ERROR)
    scores = {}
    with tempfile.TemporaryDirectory() as tmp:
        # onnxruntime's recommended pre-processing (shape inference, graph optimization: Constant-node
        # weights become initializers it can quantize) and the raw model; per method the better one.
        sources = {"raw": source}
        try:  # per-channel Q/DQ needs opset >= 13 (DequantizeLinear's axis): upgrade older models
            import onnx
            from onnx import version_converter

            model = onnx.load(str(source))
            opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
            if opset < 13:
                upgraded = Path(tmp) / "opset13.onnx"
                onnx.save(version_converter.convert_version(model, 13), str(upgraded))
                sources = {"opset13": upgraded}
                source = upgraded
        except Exception as exc:  # noqa: BLE001
            scores["upgrade"] = f"failed ({type(exc).__name__})"
        try:
            from onnxruntime.quantization.shape_inference import quant_pre_process

            prepared = Path(tmp) / "pre.onnx"
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            sources["pre-processed"] = prepared
        except Exception as exc:  # noqa: BLE001
            scores["pre_process"] = f"failed ({type(exc).__name__})"
        for method in (getattr(CalibrationMethod, name) for name in methods):
            best, errors = None, []
            for label, model in sources.items():
                out = Path(tmp) / f"{method.name}.{label}.onnx"
                try:
                    quantize_static(
                        str(model), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=method,
                    )
                    if not _quantizes_anything(out):  # e.g. every layer inside If branches (silero-vad)
                        errors.append(f"{label}: onnxruntime quantized no layer")
                        continue
                    got = _outputs(out, heldout)
                    value = sqnr_db(reference, got)
                    if best is None or value > best[0]:
                        best = (value, label, worst_slice_db(reference, got))
                except Exception as exc:  # noqa: BLE001 - onnxruntime's quantizer fails on some real models too
                    errors.append(f"{label}: {type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}")
            scores[method.name] = best[0] if best else "; ".join(errors)
            if best:
                scores[f"{method.name}_from"] = best[1]
                scores[f"{method.name}_worst_slice"] = best[2]
    return scores


def _quantizes_anything(path: Path) -> bool:
    """Whether onnxruntime's output rounds any activation (a QuantizeLinear in the main graph)."""
    import onnx

    return any(n.op_type == "QuantizeLinear" for n in onnx.load(str(path), load_external_data=False).graph.node)


# --- results ------------------------------------------------------------------------------------------


def load_results(path: Path) -> dict:
    if path.exists():
        return json.loads(path.read_text())
    return {"builds": {}}


def save(results: dict, out: Path) -> None:
    results["corpus"] = [
        {
            "name": e.name, "package": e.package.requirement, "member": e.member, "format": e.format,
            "mb": round(e.size / 2**20, 2), "kind": e.kind, "origin": e.origin, "features": list(e.features),
            "input_shapes": e.input_shapes, "real_calib": e.calib,
        }
        for e in CORPUS
    ]
    (out / "results.json").write_text(json.dumps(results, indent=1, sort_keys=True, default=str) + "\n")
    (out / "results.md").write_text(markdown(results))


def _fmt(value, digits=1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "inf" if value == np.inf else f"{value:.{digits}f}"
    return str(value)


def _sqnr_cells(builds: dict, backend: str):
    """(corpus entry, int8 config, its held-out SQNR record) of every measured int8 cell."""
    for e in CORPUS:
        for config in ("int8-random", "int8-real"):
            b = builds.get(key(e.name, backend, config))
            if b and "sqnr" in b:
                yield e, config, b["sqnr"]


def _sqnr_row_start(e: Entry, config: str, s: dict) -> str:
    """The first cells of an SQNR table row: model, calibration, held-out count, edgec, its worst slice."""
    return (
        f"| {e.name} | {config.removeprefix('int8-')} | {str(s.get('heldout', '')).split(' ')[0]} | "
        f"{_fmt(s.get('edgec_db'))} | {_fmt(s.get('edgec_worst_slice_db'))} | "
    )


def markdown(results: dict) -> str:
    builds = results["builds"]
    lines = [
        "# Real-model sweep",
        "",
        "Written by `make sweep` (`python -m bench.realmodels.run`): every model of",
        "bench/realmodels/corpus.py built by the installed `edgec` CLI for each backend and preset.",
        "onnx/openvino/tvm build for `x86-64`, tflite for `raspberry-pi-4` (fp16: `raspberry-pi-5`),",
        "tensorrt for `jetson-orin-nano`. int8: `--calib` 32 samples, `int8-random` the samples of",
        "`random:32` (seed 0), `int8-real` crops of scikit-image's pictures normalized as the package",
        "does. Outcomes: validated (exit 0, all checks ok), refused (exit 2, one-line reason),",
        "check-failed (exit 1), defect (exit 3, traceback, timeout, kill, an internal error reported",
        "as exit 2, or exit 0 with a failed check / nothing quantized). `not run` = not measured yet.",
        f"SQNR (dB, worst output, {HELDOUT_COUNT} to {HELDOUT_MAX} held-out samples: >= {HELDOUT_OUTPUT_VALUES} output values) of the onnx backend's int8 model vs float, next",
        "to onnxruntime quantize_static (same calibration, QDQ, per-channel, best of MinMax/Entropy/",
        "Percentile).",
        "",
    ]
    if results.get("edgec_commit"):
        by_commit: dict[str, list[str]] = {}
        for b in builds.values():
            by_commit.setdefault(b.get("edgec_commit", "?"), []).append(b.get("backend", "?"))
        commits = "; ".join(
            f"`{c}` ({len(bs)} builds: {', '.join(sorted(set(bs)))})" for c, bs in sorted(by_commit.items(), key=lambda i: -len(i[1]))
        )
        hosts: dict[str, int] = {}
        for b in builds.values():
            hosts[b.get("machine", "not recorded")] = hosts.get(b.get("machine", "not recorded"), 0) + 1
        machines = "; ".join(f"{m} ({n} builds)" for m, n in sorted(hosts.items(), key=lambda i: -i[1]))
        lines += [f"edgec commits: {commits}", "", f"machines: {machines}", ""]
    lines += ["## Corpus", "", "| model | package | format | MB | kind | origin | features |", "|---|---|---|---|---|---|---|"]
    for e in CORPUS:
        lines.append(
            f"| {e.name} | {e.package.requirement} | {e.format} | {e.size / 2**20:.2f} | {e.kind} | {e.origin} | {', '.join(e.features)} |"
        )
    lines += ["", "## Summary per backend", ""]
    lines += ["| backend | config | validated | refused | check-failed | defect | n/a | not run | validated % |", "|---|---|---|---|---|---|---|---|---|"]
    for backend in BACKENDS:
        for config in CONFIGS:
            cells = [builds.get(key(e.name, backend, config)) for e in CORPUS]
            counts = {o: sum(1 for c in cells if c and c["outcome"] == o) for o in ("validated", "refused", "check-failed", "defect", "n/a")}
            missing = sum(1 for c in cells if c is None)
            applicable = len(cells) - counts["n/a"] - missing
            pct = f"{100 * counts['validated'] / applicable:.0f}% of {applicable}" if applicable else "-"
            lines.append(
                f"| {backend} | {config} | {counts['validated']} | {counts['refused']} | {counts['check-failed']} | {counts['defect']} | {counts['n/a']} | {missing} | {pct} |"
            )
    lines += ["", "## Distinct failures", "", "Non-validated builds grouped by outcome and error line (numbers and names masked).", ""]
    lines += ["| outcome | builds | error line (first of the group) | cells |", "|---|---|---|---|"]
    groups: dict[tuple[str, str], list[dict]] = {}
    for b in builds.values():
        if b["outcome"] in ("validated", "n/a"):
            continue
        text = b.get("line", "").replace(str(ROOT) + "/", "")
        shape = re.sub(r"build/realmodels/[\w.-]+", "MODEL", text)
        shape = re.sub(r"'[^']*'|\d+(\.\d+)?(e-?\d+)?", "#", shape)[:90]
        groups.setdefault((b["outcome"], shape), []).append(b)
    order = {"defect": 0, "check-failed": 1, "refused": 2}
    for (outcome, _), members in sorted(groups.items(), key=lambda g: (order.get(g[0][0], 3), -len(g[1]))):
        first = members[0].get("line", "").replace(str(ROOT) + "/", "").replace("|", "\\|")[:200]
        cells = ", ".join(f"{m['model']}/{m['backend']}/{m['config']}" for m in members)
        lines.append(f"| {outcome} | {len(members)} | {first} | {cells} |")
    lines += ["", "## int8 SQNR, onnx backend (dB, worst output, held-out)", ""]
    lines += [
        "Worst slice: the lowest SQNR over the channels (axis 1) of any output with 2..256 of them, so a",
        "concatenated head's scores cannot hide behind its boxes; onnxruntime's is that of its best method.",
        "",
        "| model | calib | held out | edgec | edgec worst slice | onnxruntime best | its worst slice | MinMax | Entropy | Percentile | NNCF best | NNCF performance | NNCF mixed |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e, config, s in _sqnr_cells(builds, "onnx"):
        ort_scores = s.get("ort", {})
        best_method = max(
            (m for m in ("MinMax", "Entropy", "Percentile") if isinstance(ort_scores.get(m), float)),
            key=lambda m: ort_scores[m], default=None,
        )
        ort_slice = ort_scores.get(f"{best_method}_worst_slice") if best_method else None
        nncf_scores = s.get("nncf", {})
        lines.append(
            _sqnr_row_start(e, config, s) + f"{_fmt(s.get('ort_best_db'))} | {_fmt(ort_slice)} | "
            + " | ".join(_fmt(ort_scores.get(m)) if isinstance(ort_scores.get(m), (float, type(None))) else "failed" for m in ("MinMax", "Entropy", "Percentile"))
            + f" | {_fmt(s.get('nncf_best_db'))} | "
            + " | ".join(_fmt(nncf_scores.get(p)) if isinstance(nncf_scores.get(p), (float, type(None))) else "failed" for p in NNCF_PRESETS)
            + (f" {s['error']}" if "error" in s else "")
            + " |"
        )
    lines += ["", "## int8 SQNR, openvino backend (dB, worst output, held-out, run by OpenVINO's CPU plugin)", ""]
    lines += [
        "The same held-out inputs as above. NNCF's and onnxruntime's models are the onnx table's (run by",
        "onnxruntime, which computes OpenVINO's FakeQuantize arithmetic in float32).",
        "",
        "| model | calib | held out | edgec openvino | its worst slice | edgec onnx | onnxruntime best | NNCF best |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e, config, s in _sqnr_cells(builds, "openvino"):
        onnx_s = (builds.get(key(e.name, "onnx", config)) or {}).get("sqnr") or {}
        lines.append(
            _sqnr_row_start(e, config, s) + f"{_fmt(onnx_s.get('edgec_db'))} | {_fmt(onnx_s.get('ort_best_db'))} | "
            f"{_fmt(onnx_s.get('nncf_best_db'))}{(' ' + s['error']) if 'error' in s else ''} |"
        )
    lines += ["", "## Every build", ""]
    lines += [
        "| model | backend | config | outcome | exit | s | peak RSS MB | final check (SQNR dB / cosine) | backend check | stderr line |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in CORPUS:
        for backend in BACKENDS:
            for config in CONFIGS:
                b = builds.get(key(e.name, backend, config))
                if b is None:
                    lines.append(f"| {e.name} | {backend} | {config} | not run | | | | | | |")
                    continue
                if b["outcome"] == "n/a":
                    continue
                fc, bc = b.get("final_check") or {}, b.get("backend_check") or {}
                text = b.get("line", "").replace("|", "\\|").replace(str(ROOT) + "/", "")
                lines.append(
                    f"| {e.name} | {backend} | {config} | {b['outcome']} | {b.get('rc', '')} | {_fmt(b.get('seconds'))} | "
                    f"{'' if b.get('rss_method') == 'time' else '≥' if str(b.get('rss_method')).startswith('watchdog') else '≤'}{_fmt(b.get('peak_rss_mb'), 0)} | {_fmt(fc.get('sqnr_db'))} / {_fmt(fc.get('cosine'), 4)} | "
                    f"{_fmt(bc.get('sqnr_db'))} / {_fmt(bc.get('cosine'), 4)} | {text[:220]} |"
                )
    return "\n".join(lines) + "\n"


def ort_baselines(results: dict, args) -> None:
    """onnxruntime quantize_static's SQNR for int8 cells where edgec built nothing to compare."""
    for entry in [BY_NAME[n] for n in args.only] if args.only else CORPUS:
        for config in ("int8-random", "int8-real"):
            build = results["builds"].get(key(entry.name, "onnx", config))
            if build is None or build["outcome"] in ("validated", "n/a") or "sqnr" in build:
                continue
            kind = "real" if config == "int8-real" else "random"
            reference_model = float_model(entry)
            if reference_model is None:
                continue
            try:
                heldout, described = heldout_samples(entry, kind, reference_model)
                reference = _outputs(reference_model, heldout)
            except Exception as exc:  # noqa: BLE001
                build["sqnr"] = {"error": f"float model: {type(exc).__name__}"}
                continue
            scores = ort_quantize_capped(reference_model, calib_file(entry, kind), heldout, reference, entry)
            best = [v for v in scores.values() if isinstance(v, float)]
            build["sqnr"] = {"edgec_db": None, "ort": scores, "ort_best_db": max(best) if best else None,
                             "heldout": described}
            print(f"{key(entry.name, 'onnx', config):45s} onnxruntime only: {build['sqnr']['ort_best_db']}", flush=True)
            save(results, args.out)


def reclassify(results: dict) -> None:
    """Apply the current classification rules to stored exit-1/2 builds (from their kept stderr)."""
    for result in results["builds"].values():
        if result.get("outcome") not in ("refused", "check-failed"):
            continue
        log = WORK / "logs" / f"{result['model']}.{result['backend']}.{result['config']}.stderr"
        if not log.exists():
            continue
        child = {"rc": result["rc"], "killed": None}
        result["outcome"], line = classify(child, log.read_text(errors="replace"), None, result["config"])
        result["line"] = line[:400]


def plan(args) -> list[tuple[Entry, str, str]]:
    entries = [BY_NAME[n] for n in args.only] if args.only else CORPUS
    todo = []
    for backends, configs in PHASES:
        for config in configs:
            for entry in entries:
                for backend in backends:
                    if args.backend and backend not in args.backend:
                        continue
                    if args.config and config not in args.config:
                        continue
                    todo.append((entry, backend, config))
    return todo


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=sorted(BY_NAME), help="corpus model (repeatable)")
    parser.add_argument("--backend", action="append", choices=BACKENDS)
    parser.add_argument("--config", action="append", choices=CONFIGS)
    parser.add_argument("--rerun", action="store_true", help="measure again builds already in results.json")
    parser.add_argument("--rerun-outcome", action="append", default=[], help="measure again builds with this outcome")
    parser.add_argument("--report", action="store_true", help="only rewrite results.md")
    parser.add_argument("--merge", type=Path, action="append", default=[], help="with --report: add the builds of another results.json (a sweep run with --out elsewhere)")
    parser.add_argument("--ort-baseline", action="store_true", help="only add onnxruntime's int8 SQNR where edgec built none")
    parser.add_argument("--nncf-baseline", action="store_true", help="only add NNCF's int8 SQNR to the onnx int8 cells")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--budget", type=float, default=0, help="stop starting builds after this many seconds")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument(
        "--edgec", default="HEAD",
        help="commit to measure (a snapshot of it runs, default HEAD), or 'installed' for the work tree's edgec",
    )
    args = parser.parse_args(argv)
    global TIMEOUT_S
    TIMEOUT_S = args.timeout
    args.out.mkdir(parents=True, exist_ok=True)
    results = load_results(args.out / "results.json")
    if args.ort_baseline or args.nncf_baseline:
        (ort_baselines if args.ort_baseline else nncf_baselines)(results, args)
        save(results, args.out)
        return 0
    if args.report:
        for other in args.merge:
            results["builds"].update(load_results(other)["builds"])
        reclassify(results)
        save(results, args.out)
        return 0
    missing = [e.name for e in CORPUS if not e.path.exists()]
    if missing:
        print(f"realmodels: run scripts/fetch-realmodels first (missing: {', '.join(missing)})", file=sys.stderr)
        return 2
    global EDGEC_ENV, EDGEC_CWD
    if args.edgec == "installed":
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "edgec", "passes", "backends"], cwd=ROOT, capture_output=True, text=True).stdout
        commit += "+dirty" if dirty.strip() else ""
    else:
        commit = subprocess.run(["git", "rev-parse", "--short", args.edgec], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        EDGEC_CWD = snapshot(commit)
        EDGEC_ENV = {"PYTHONPATH": str(EDGEC_CWD)}
        probe = subprocess.run([sys.executable, "-c", "import edgec.passes, edgec.backends; print(edgec.__file__)"], cwd=EDGEC_CWD, env={**os.environ, **EDGEC_ENV}, capture_output=True, text=True)
        if not probe.stdout.startswith(str(EDGEC_CWD)):
            print(f"realmodels: the snapshot of {commit} does not import ({probe.stderr.strip()[-300:]})", file=sys.stderr)
            return 2
    results["edgec_commit"] = commit
    results["machine"] = machine()
    start = time.monotonic()
    for entry, backend, config in plan(args):
        k = key(entry.name, backend, config)
        old = results["builds"].get(k)
        if old and not args.rerun and old["outcome"] not in args.rerun_outcome:
            continue
        if args.budget and time.monotonic() - start > args.budget:
            print("realmodels: time budget spent; rerun to continue", file=sys.stderr)
            break
        result = run_build(entry, backend, config, old)
        result["edgec_commit"] = commit
        result["machine"] = results["machine"]
        results["builds"][k] = result
        sqnr = result.get("sqnr", {})
        print(
            f"{k:45s} {result['outcome']:12s} {result.get('seconds', 0):6.1f}s {result.get('peak_rss_mb', 0):7.0f}MB "
            f"{('sqnr edgec %s ort %s' % (sqnr.get('edgec_db'), sqnr.get('ort_best_db'))) if sqnr else ''} {result['line'][:150]}",
            flush=True,
        )
        save(results, args.out)
    save(results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
