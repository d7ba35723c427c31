"""The TensorRT backend: what a Jetson builds its engine from, checked in onnxruntime here.

TensorRT installs only from NVIDIA's index, and an engine is specific to the GPU and the
TensorRT version, so edgec builds no engine. It writes the ONNX that TensorRT 8.2's parser reads
(legalize.py: opset 13, its operators, float32 or explicit symmetric int8), the int8
calibration cache (calibration_cache.py), engine.json with the build flags, build_engine.py
(engine.py, run on the device) and ENGINE.md with the equivalent trtexec command. The host check
runs model.trt.onnx in onnxruntime against the IR.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx

from edgec import ir
from edgec.backend import Artifact, Backend, BackendOption, Runner
from edgec.compare import Tolerance
from edgec.backends.tensorrt import calibration_cache, engine
from edgec.backends.tensorrt.legalize import legalize
from edgec.backends.tensorrt.opset import TARGET_OPSET
from edgec.backends.tensorrt.plan import (
    CACHE_FILE,
    ENGINE_FILE,
    FLOAT_ONNX,
    INT8_ONNX,
    TRT_ONNX,
    EnginePlan,
    Release,
    choose,
    release_for,
)
from edgec.backends.tensorrt.precision import activation_scales

BUILD_SCRIPT = "build_engine.py"
README = "ENGINE.md"

# Budgets of the host check, by what it compares (see EnginePlan.check); measured on LeNet-5,
# MobileNetV2-FMNIST and PP-LCNet (tests/backends/test_tensorrt_backend.py).
TOLERANCES = {
    # The same float32 function in another opset: only the decompositions (HardSwish ->
    # x * HardSigmoid) may round differently.
    "fp32": Tolerance(max_rel_err=1e-5),
    # (fp16, the float16 IR against its float32 widening: Backend.fp16_check, see check_tolerance)
    # The same Q/DQ, weights re-quantized to the same int8 (measured: identical outputs); a
    # decomposed operator before a QuantizeLinear may still move a value across a rounding step.
    "int8-explicit": Tolerance(min_cosine=0.9999, min_sqnr_db=40.0),
    # The float graph against the Q/DQ IR: they differ by the IR's activation quantization, a
    # loss the quantize pass already judged against float32, so it gets that pass's budget
    # (measured: 43.7 dB LeNet-5, 31.5 dB MobileNetV2, 39.7 dB PP-LCNet calibrated on document
    # pages, 22.1 dB on Gaussian-noise calibration).
    "int8-as-float": Tolerance(min_cosine=0.98, min_sqnr_db=12.0),
}
CHECKS = {
    "fp32": "model.trt.onnx (float32) against the IR in onnxruntime",
    "fp16": "model.trt.onnx (float32 on float16-rounded weights) against the float16 IR in onnxruntime",
    "int8-explicit": "model.trt.onnx (explicit Q/DQ) against the Q/DQ IR in onnxruntime",
    "int8-as-float": "model.trt.onnx (float, int8-rounded weights) against the Q/DQ IR in onnxruntime",
}


QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


class TensorrtBackend(Backend):
    name = "tensorrt"
    summary = "TensorRT (Jetson): ONNX for TensorRT 8.2+, int8 calibration cache, engine build script for the device"
    # The host side needs only onnxruntime; TensorRT itself runs on the device.
    requires = ("onnxruntime",)
    install_hint = "pip install onnxruntime (engines are built on the device: build_engine.py or trtexec)"
    quant_scheme = "tensorrt"
    options = {
        "engine_precision": BackendOption(
            str,
            "auto",
            "float engines in fp16 or fp32 (auto: fp16 where the target's TensorRT runs it)",
            ("auto", "fp32", "fp16"),
        ),
    }

    def __init__(self) -> None:
        super().__init__()
        self._check: str | None = None  # what the last lower() wrote, for check_tolerance

    def prepare_passes(self, target, graph) -> str:
        # TensorRT's ONNX parser has no ConvInteger, MatMulInteger or DynamicQuantizeLSTM:
        # onnxruntime's dynamic int8 becomes float layers reading int8 weights first.
        return "float-integer-ops" if ir.has_integer_arithmetic(graph) else ""

    def check_tolerance(self, model: ir.Model) -> Tolerance:
        """lower() decided what model.trt.onnx holds; judge it by that (an IR alone: by its precision)."""
        kind = (
            self._check or {"fp32": "fp32", "fp16": "fp16", "int8": "int8-explicit"}[ir.compute_precision(model.graph)]
        )
        if kind == "fp16":
            # fp16-level (max rel err <= 1e-4, 78 dB on the bench models). The widening computes
            # in float32 what the IR rounds to float16 op by op, so the two differ by the IR's own
            # rounding noise, which convert-fp16 already judged against float32: PP-OCRv4's
            # detector and MediaPipe's selfie segmenter were 37.4 dB from their IRs. Judged by the
            # float-relative rule, as the other backends' fp16 artifacts are.
            return self.fp16_check()
        return TOLERANCES[kind]

    def lower(self, model: ir.Model, target, out_dir: Path) -> Artifact:
        start = time.perf_counter()
        found = ir.compute_precision(model.graph)
        plan = choose(found, target, self.settings["engine_precision"])
        release = release_for(target)
        legal = legalize(model, plan.qdq)
        explicit = found == "int8" and plan.qdq == "explicit"
        if explicit and not any(n.op_type in QDQ_OPS for n in _all_nodes(legal.proto.graph)):
            # every int8 weight was one TensorRT cannot read as int8 (legalize dequantized them all)
            found = "fp32"
            plan = choose(found, target, self.settings["engine_precision"])
        onnx.save(legal.proto, str(out_dir / TRT_ONNX))
        files = [Path(TRT_ONNX)]
        cache = _write_int8_artifacts(model, plan, release, out_dir, files) if found == "int8" else None
        inputs = [_port(v, legal.proto) for v in legal.proto.graph.input]
        outputs = [_port(v, legal.proto) for v in legal.proto.graph.output]
        engine_plan = _engine_plan(plan, release, target, inputs, cache is not None)
        command, alternatives = _write_build_files(out_dir, target, release, plan, engine_plan, files)
        notes = _notes(plan, release, target, legal, command, engine_plan)
        self._check = plan.check
        info = {
            "precision": plan.precision,
            "ir_precision": found,
            "engine": {
                "onnx": TRT_ONNX,
                "file": ENGINE_FILE,
                "flags": plan.flags,
                "int8": plan.int8,
                "tensorrt": release.version,
                "jetpack": release.jetpack,
                "trtexec": command,
                "build_engine": f"python3 {BUILD_SCRIPT}",
                "alternatives": alternatives,
            },
            "inputs": inputs,
            "outputs": outputs,
            "operators": dict(sorted(Counter(n.op_type for n in _all_nodes(legal.proto.graph)).items())),
            "opset": {"ir": legal.opset_before, "onnx": TARGET_OPSET},
            "legalized": legal.rewrites,
            **({"calibration_cache": cache} if cache else {}),
            "check": CHECKS[plan.check],
            "lowering_seconds": round(time.perf_counter() - start, 4),
            "notes": notes,
            "warnings": list(plan.warnings),
        }
        return Artifact(self.name, Path(TRT_ONNX), files, info=info)

    host_runtime = "onnxruntime on model.trt.onnx (TensorRT engines run only on the device)"

    def runner(self, artifact: Artifact, out_dir: Path, threads: int | None = None) -> Runner:
        """onnxruntime with graph optimizations off, as the IR's checks run: TensorRT's own kernels
        exist only on the device, so the host checks the file they are built from."""
        from edgec import runner

        session = runner.make_session(out_dir / artifact.main, threads=threads)
        return lambda feeds: runner.run(session, [feeds])[0]


def _write_int8_artifacts(model: ir.Model, plan: EnginePlan, release: Release, out_dir: Path, files: list) -> dict:
    """The calibration cache (the IR's activation scales) and the int8 form the engine is not
    built from: the float graph for implicit quantization, or the Q/DQ IR for CPU runtimes."""
    scales = activation_scales(model.graph)
    calibration_cache.write(out_dir / CACHE_FILE, scales, release.number)
    files.append(Path(CACHE_FILE))
    if plan.companion == FLOAT_ONNX:
        onnx.save(legalize(model, "strip").proto, str(out_dir / FLOAT_ONNX))
        files.append(Path(FLOAT_ONNX))
    else:
        files += [p.relative_to(out_dir) for p in ir.save(model, out_dir / INT8_ONNX)]
    header = f"TRT-{release.number}-{calibration_cache.ALGORITHM}"
    return {"file": CACHE_FILE, "header": header, "tensors": len(scales)}


def _write_build_files(out_dir: Path, target, release: Release, plan: EnginePlan, engine_plan: dict, files: list):
    """engine.json, build_engine.py and ENGINE.md; returns the trtexec command and alternatives."""
    (out_dir / engine.PLAN_FILE).write_text(json.dumps(engine_plan, indent=2) + "\n")
    shutil.copyfile(Path(engine.__file__), out_dir / BUILD_SCRIPT)
    command = engine.trtexec_command(engine_plan)
    alternatives = _alternatives(engine_plan, plan)
    (out_dir / README).write_text(_readme(target, release, plan, engine_plan, command, alternatives))
    files += [Path(engine.PLAN_FILE), Path(BUILD_SCRIPT), Path(README)]
    return command, alternatives


def _engine_plan(plan: EnginePlan, release: Release, target, inputs: list[dict], has_cache: bool) -> dict:
    """engine.json: everything build_engine.py needs, readable without edgec."""
    return {
        "format": "edgec-tensorrt-engine-plan",
        "format_version": 1,
        "target": target.name,
        "tensorrt": {"version": release.version, "number": release.number, "jetpack": release.jetpack},
        "onnx": TRT_ONNX,
        "engine": ENGINE_FILE,
        "precision": plan.precision,
        "fp16": plan.fp16,
        "int8": plan.int8,
        "calibration_cache": CACHE_FILE if has_cache else None,
        "inputs": [
            {"name": p["name"], "shape": [d if isinstance(d, int) else None for d in p["shape"]]} for p in inputs
        ],
        "workspace_mb": engine.DEFAULT_WORKSPACE_MB,
    }


def _alternatives(engine_plan: dict, plan: EnginePlan) -> list[dict]:
    """Other engines the same bundle can give, as trtexec commands."""
    found = []
    if plan.companion == FLOAT_ONNX:
        implicit = {**engine_plan, "onnx": FLOAT_ONNX, "int8": "implicit"}
        found.append({"engine": "int8, implicit quantization", "trtexec": engine.trtexec_command(implicit)})
    elif plan.companion == INT8_ONNX:
        implicit = {**engine_plan, "int8": "implicit", "fp16": True}
        found.append({"engine": "int8 (a GPU with fast int8: sm_61+)", "trtexec": engine.trtexec_command(implicit)})
    elif plan.fp16:
        found.append({"engine": "fp32", "trtexec": engine.trtexec_command({**engine_plan, "fp16": False})})
    return found


def _notes(plan: EnginePlan, release: Release, target, legal, command: str, engine_plan: dict) -> list[str]:
    notes = [
        f"TensorRT engines are specific to the GPU and TensorRT version: build it on the {target.name} "
        f"({release.jetpack}, TensorRT {release.version}) with `python3 {BUILD_SCRIPT}` or `{command}`"
    ]
    notes += plan.notes
    changes = ", ".join(f"{what} x{count}" for what, count in legal.rewrites.items())
    notes.append(
        f"legalized for TensorRT 8.2's ONNX parser: opset {legal.opset_before} -> {TARGET_OPSET}"
        + (f"; {changes}" if changes else "")
    )
    dynamic = [p["name"] for p in engine_plan["inputs"] if None in p["shape"]]
    if dynamic:
        notes.append(
            f"run-time dimensions of {', '.join(dynamic)} are built as 1 (engine.json's \"inputs\" and trtexec's "
            "--shapes set them)"
        )
    if legal.facts.get("int64_constants"):
        notes.append(
            f"{legal.facts['int64_constants']} int64 constants: TensorRT 8.x narrows them to int32 (all fit, or are "
            "Slice bounds)"
        )
    if legal.facts.get("int64_ports"):
        notes.append(f"int64 ports {', '.join(legal.facts['int64_ports'])}: TensorRT 8.x binds them as int32")
    return notes + plan.warnings


def _all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attr.g)


def _port(value: onnx.ValueInfoProto, proto: onnx.ModelProto) -> dict:
    tensor = value.type.tensor_type
    shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor.shape.dim]
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)).name
    return {"name": value.name, "shape": shape, "dtype": dtype, "layout": _layout(value.name, proto, len(shape))}


def _layout(name: str, proto: onnx.ModelProto, rank: int) -> str | None:
    """Channels-first when the tensor feeds a convolution (through Q/DQ or Identity), as the
    compiler describes the IR's ports."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in proto.graph.node:
        for i in node.input:
            readers.setdefault(i, []).append(node)
    frontier, seen = [name], set()
    while frontier:
        current = frontier.pop()
        seen.add(current)
        for node in readers.get(current, []):
            if node.op_type in ("Conv", "ConvTranspose") and node.input[0] == current:
                return {3: "NCW", 4: "NCHW", 5: "NCDHW"}.get(rank)
            if node.op_type in ("QuantizeLinear", "DequantizeLinear", "Cast", "Identity"):
                frontier.extend(o for o in node.output if o not in seen)
    return None


def _readme(target, release: Release, plan: EnginePlan, engine_plan: dict, command: str, alternatives) -> str:
    files = [
        (TRT_ONNX, f"the network TensorRT parses (opset {TARGET_OPSET}, checked on the host in onnxruntime)"),
        (engine.PLAN_FILE, "the build settings build_engine.py reads"),
        (BUILD_SCRIPT, "builds the engine with TensorRT's Python API (TensorRT 8.2 to 10.x, Python 3.6+)"),
    ]
    if engine_plan["calibration_cache"]:
        files.append((CACHE_FILE, "int8 scales for TensorRT's implicit quantization (IInt8EntropyCalibrator2 cache)"))
    if plan.companion == FLOAT_ONNX:
        files.append((FLOAT_ONNX, "the same network without Q/DQ, for implicit int8 with the calibration cache"))
    if plan.companion == INT8_ONNX:
        files.append((INT8_ONNX, "the symmetric int8 Q/DQ model, for CPU runtimes (onnxruntime) and int8 GPUs"))
    lines = [
        f"# TensorRT engine for {target.name}",
        "",
        f"TensorRT engines are specific to the GPU and the TensorRT version, so build this one on the "
        f"{target.name} ({release.jetpack}, TensorRT {release.version}). Planned engine: **{plan.precision}** "
        f"(`{' '.join(plan.flags) or 'no precision flags'}`).",
        "",
        "| file | what |",
        "|---|---|",
        *(f"| `{name}` | {what} |" for name, what in files),
        "",
        "Build with TensorRT's Python API (writes `model.plan`):",
        "",
        f"    python3 {BUILD_SCRIPT} [--workspace MB] [--output FILE]",
        "",
        "or with trtexec (on JetPack: /usr/src/tensorrt/bin/trtexec):",
        "",
        f"    {command}",
        "",
    ]
    for alternative in alternatives:
        lines += [f"Alternative, {alternative['engine']}:", "", f"    {alternative['trtexec']}", ""]
    if engine_plan["calibration_cache"]:
        lines += [
            f"The cache header names TensorRT {release.version} (`TRT-{release.number}-...`) and TensorRT checks "
            "it against itself: with trtexec on another release, edit that number (build_engine.py does so).",
            "",
        ]
    lines += ["Notes:", ""] + [f"- {note}" for note in plan.notes + plan.warnings]
    return "\n".join(lines) + "\n"
