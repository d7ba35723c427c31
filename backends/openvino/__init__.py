"""The OpenVINO backend: OpenVINO IR (model.xml + model.bin) through OpenVINO's ONNX frontend,
validated on this host's CPU plugin."""

from __future__ import annotations

import platform
import time
from pathlib import Path

from edgec import ir
from edgec.backend import Artifact, Backend, Runner
from edgec.compare import Tolerance
from edgec.compress import storage
from edgec.errors import EdgecError

FILES = (Path("model.xml"), Path("model.bin"))
# platform.machine() and target triples spell some architectures differently.
ARCH_ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}


class OpenvinoBackend(Backend):
    name = "openvino"
    summary = "OpenVINO IR (fp32, fp16 weights or int8 FakeQuantize) for OpenVINO's CPU/GPU plugins and 2022.3's MYRIAD"
    requires = ("openvino",)
    install_hint = "pip install 'edgec[openvino]'"
    quant_scheme = "openvino"
    host_runtime = "OpenVINO CPU plugin"
    # float16 weights feed float32 kernels where the IR computed in float16 (or, for a float32
    # IR on an fp16-only device, kept float32 weights): an fp16-level budget.
    fp16_tolerance = Tolerance(min_cosine=0.9999, min_sqnr_db=40.0)
    # The CPU plugin fuses Conv -> FakeQuantize -> residual Add -> FakeQuantize into one int8
    # kernel that does not round the branch to its u8 grid in between, so it departs from the
    # IR's Q/DQ emulation by about the int8 noise itself, not by kernel rounding: MobileNetV2
    # (4 residual Adds) 32.3 dB / cosine 0.99970 from the IR on 1000 test images, while both
    # are ~32 dB from float32 (30.3 dB from an IR 27.7 dB from float32 under random
    # calibration); LeNet-5 and PP-LCNet (no residual Adds) 83 and 59 dB. 20 dB / 0.995 keeps
    # a margin for deeper residual networks; a broken conversion (scale, zero point, layout)
    # lands far below.
    quantized_tolerance = Tolerance(min_cosine=0.995, min_sqnr_db=20.0)

    def __init__(self) -> None:
        super().__init__()
        self._written_precision: str | None = None  # what lower() wrote, which the check judges

    def legalize_passes(self, target, graph, pipeline=()) -> str:
        # The CPU plugin computes a float ReduceMax/ReduceMin with a fused output FakeQuantize
        # wrong when a FullyConnected reads it (AVX-512 hosts): the reduction gets its input
        # quantized too, which runs it in u8 (exact).
        reductions = any(n.op in ("ReduceMax", "ReduceMin") for n in ir.iter_nodes(graph))
        quantized = "quantize" in pipeline or ir.compute_precision(graph) == "int8"
        return "quantize-minmax-inputs" if reductions and quantized else ""

    def check_tolerance(self, model: ir.Model) -> Tolerance:
        precision = self._written_precision or ir.compute_precision(model.graph)
        # Weight-only int8 is written fp32 (exact dequantized weights, float compute); integer
        # operators (quantize_dynamic's) OpenVINO computes in float: int8 rounding apart.
        if precision == "int8" or ir.has_integer_arithmetic(model.graph):
            return self.quantized_check()
        if precision == "fp16":
            return self.fp16_check()
        return self.tolerance

    def preflight(self, model: ir.Model, target) -> None:
        from edgec.backends.openvino import convert

        convert.to_openvino(model.copy(), widen_fp16=False)  # raises on an operator OpenVINO cannot convert (Loop)

    def lower(self, model: ir.Model, target, out_dir: Path) -> Artifact:
        import openvino as ov

        from edgec.backends.openvino import convert, ir_file

        if storage.METADATA_KEY in model.metadata:
            raise EdgecError("openvino: cannot store huffman-coded weights: build without huffman, or --backend onnx")
        start = time.perf_counter()
        computed = ir.compute_precision(model.graph)
        weight_only = computed == "int8" and not ir.quantizes_activations(model.graph)
        if weight_only:  # OpenVINO decompresses int8 weights (Convert, Subtract, Multiply): float compute
            computed = "fp32"
        precision, notes = self._precision_for(computed, target)
        if weight_only:
            notes.append("weight-only int8: the weights stay int8 in model.bin, OpenVINO computes in float")
        batched = convert.dynamic_batch_inputs(model)
        if batched:
            notes.append(
                f"batch of {', '.join(batched)} fixed to 1 (static shapes); OpenVINO's model.reshape() changes it"
            )
        converted = convert.to_openvino(model, widen_fp16=computed == "fp16")
        if _runs_on_myriad(target):
            from edgec.backends.openvino import legacy

            rewritten = legacy.downgrade(converted)
            if rewritten:
                done = ", ".join(f"{rule} x{count}" for rule, count in rewritten.items())
                notes.append(f"rewritten to operators OpenVINO 2022.3 reads: {done}")
        compress = precision == "fp16"
        if computed == "fp16" and convert.keeps_float32_weights(converted):
            # A mixed convert-fp16 IR: float16 weights as it has them, its float32 layers' stay float32.
            convert.half_exact_constants(converted)
            compress = False
            notes.append("layers convert-fp16 kept in float32 keep float32 weights")
        ov.save_model(converted, out_dir / "model.xml", compress_to_fp16=compress)
        seconds = time.perf_counter() - start
        written = ir_file.read(out_dir / "model.xml")
        fake_quantize = written.operators.get("FakeQuantize", 0)
        if precision == "int8" and not fake_quantize:
            raise EdgecError("openvino: the int8 IR converted without FakeQuantize layers (its Q/DQ were not fused)")
        inputs, outputs = ir_file.port_specs(
            converted, [s["name"] for s in model.input_specs()], [s["name"] for s in model.output_specs()]
        )
        if _runs_on_myriad(target):
            notes += _myriad_notes(target, written, inputs, ov.get_version())
        info = {
            "precision": precision,
            "inputs": inputs,
            "outputs": outputs,
            "operators": written.operators,
            "fake_quantize": fake_quantize,
            "ir_version": written.ir_version,
            "opsets": written.opsets,
            "openvino": ov.get_version(),
            "lowering_seconds": round(seconds, 4),
        }
        if precision == "int8":
            info["runtime"], proof = _int8_kernels(out_dir / "model.xml", target)
            notes += proof
        info["notes"] = notes
        self._written_precision = precision
        return Artifact(self.name, FILES[0], list(FILES), info=info)

    def _precision_for(self, computed: str, target) -> tuple[str, list[str]]:
        """The precision to write, from what the IR computes and what the target runs (a target
        that lists no OpenVINO precisions takes what the IR computes)."""
        allowed = tuple(target.precisions.get(self.name, ()))
        if computed == "int8" and allowed and "int8" not in allowed:
            raise EdgecError(
                f"{target.name} runs OpenVINO models in {', '.join(allowed)} only, not int8: build with -O2 or -O fp16"
            )
        if computed == "fp32" and allowed and "fp32" not in allowed and "fp16" in allowed:
            return "fp16", [f"{target.name} computes in fp16 only: the float32 weights are written as float16"]
        return computed, []

    def runner(self, artifact: Artifact, out_dir: Path, threads: int | None = None, precision: str = "f32") -> Runner:
        """`precision` "f32" (the build's check) or "default" (the plugin's own choice: bf16 on
        CPUs with bf16, as a deployment without a hint runs)."""
        from edgec.backends.openvino.host import HostRunner

        return HostRunner(out_dir / artifact.main, artifact.info, threads, precision)


def _runs_on_myriad(target) -> bool:
    """A VPU target runs OpenVINO through the MYRIAD plugin (the Neural Compute Stick 2)."""
    return any(unit.unit == "vpu" for unit in target.compute)


def _myriad_notes(target, written, inputs: list[dict], version: str) -> list[str]:
    from edgec.backends.openvino import ir_file

    dynamic = [f"{p['name']} {p['shape']}" for p in inputs if p["shape"] is None or None in p["shape"]]
    if dynamic:
        raise EdgecError(
            f"{target.name}: the MYRIAD plugin needs static input shapes, not {', '.join(dynamic)}: "
            "give --input-shape NAME=1x3x224x224"
        )
    unknown = written.unreadable_by_2022_3()
    if written.ir_version not in ir_file.LTS_2022_3_IR_VERSIONS or unknown:
        raise EdgecError(
            f"{target.name}: OpenVINO 2022.3 (the last with the MYRIAD plugin) cannot read this IR "
            f"(IR v{written.ir_version}{'; ' + ', '.join(unknown[:6]) if unknown else ''})"
        )
    return [
        f"OpenVINO dropped the MYRIAD plugin after 2022.3 LTS: this IR v{written.ir_version} uses operators from "
        f"{', '.join(written.opsets)} only, which OpenVINO 2022.3 reads; load it there with device 'MYRIAD'",
        f"validated on this host's CPU plugin (OpenVINO {version.split('-')[0]}) computing in float32; "
        "the stick computes in fp16",
    ]


def _int8_kernels(xml_path: Path, target) -> tuple[dict, list[str]]:
    """Which kernels the CPU plugin picked for the compute layers: the proof that the
    FakeQuantize layers made it compute in int8 (u8 activations), not emulate them in float."""
    from edgec.backends.openvino import host

    compiled = host.compile_model(xml_path, threads=1, precision="f32")
    layers = host.compute_precisions(compiled)
    int8, total = host.int8_share(layers)
    here = platform.machine().lower()
    runtime = {
        "device": f"{host.DEVICE} ({here})",
        "precision_hint": "f32",
        "compute_layers": layers,
        "int8_layers": int8,
    }
    notes = []
    if int8 < total:
        notes.append(f"the CPU plugin runs {int8} of {total} compute layers in int8, the rest in float")
    arch = target.cpu.triple.split("-")[0]
    if ARCH_ALIASES.get(arch, arch) != ARCH_ALIASES.get(here, here):
        notes.append(f"int8 kernels checked on this {here} host's CPU plugin; the {arch} one picks its own")
    return runtime, notes
