"""What engine a bundle is for: the TensorRT release of the target, the precision flags, which
ONNX the engine is built from and which files come along."""

from __future__ import annotations

from dataclasses import dataclass, field

from edgec.errors import EdgecError

ENGINE_FILE = "model.plan"
TRT_ONNX = "model.trt.onnx"
FLOAT_ONNX = "model.float.onnx"  # int8 builds on int8 GPUs: the graph for implicit quantization
INT8_ONNX = "model.int8.onnx"  # int8 builds on GPUs without fast int8: the Q/DQ IR for CPU runtimes
CACHE_FILE = "calibration.cache"


@dataclass(frozen=True)
class Release:
    """The TensorRT a target's JetPack ships; `number` is how TensorRT prints its version."""

    version: str
    number: int
    jetpack: str


RELEASES = {
    # JetPack 4.6.1-4.6.x: TensorRT 8.2.1, the last for the Nano (JetPack 4.6 itself had 8.0.1).
    "jetson-nano": Release("8.2.1", 8201, "JetPack 4.6.x"),
    # JetPack 6.1 and 6.2 ship TensorRT 10.3.0 (JetPack 6.0: 8.6.2, cache header 8602).
    "jetson-orin-nano": Release("10.3.0", 100300, "JetPack 6.1/6.2"),
}
# A target edgec has no release for: the oldest TensorRT the legalization aims at.
DEFAULT_RELEASE = Release("8.2.1", 8201, "TensorRT 8.2 or newer")


def release_for(target) -> Release:
    return RELEASES.get(target.name, DEFAULT_RELEASE)


@dataclass
class EnginePlan:
    precision: str  # what the engine computes in: fp32, fp16 or int8
    fp16: bool
    int8: str | bool  # False, "explicit" (Q/DQ in the ONNX) or "implicit" (calibration cache)
    qdq: str  # how an int8 IR reaches model.trt.onnx: "explicit" Q/DQ or "strip"ped
    check: str  # what the host check compares: fp32, fp16, int8-explicit, int8-as-float
    companion: str | None = None  # the other int8 form written beside model.trt.onnx
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def flags(self) -> list[str]:
        return (["--fp16"] if self.fp16 else []) + (["--int8"] if self.int8 else [])


def choose(ir_precision: str, target, requested: str = "auto") -> EnginePlan:
    """The engine for an IR of `ir_precision` on `target`; `requested` (auto, fp32, fp16) is the
    precision of a float engine, auto meaning fp16 where the target's TensorRT runs it."""
    # A target that does not say: what TensorRT runs on GPUs since Pascal (sm_61).
    runs = tuple(target.precisions.get("tensorrt", ("fp32", "fp16", "int8")))
    if requested == "fp16" and "fp16" not in runs:
        raise EdgecError(f"{target.name}: TensorRT there runs {', '.join(runs)}, not fp16")
    float_engine = "fp16" if requested == "fp16" or (requested == "auto" and "fp16" in runs) else "fp32"
    if ir_precision == "int8" and "int8" in runs:
        return EnginePlan(
            "int8",
            "fp16" in runs,
            "explicit",
            qdq="explicit",
            check="int8-explicit",
            companion=FLOAT_ONNX,
            notes=[
                f"{TRT_ONNX} carries the IR's symmetric int8 Q/DQ (explicit quantization: TensorRT takes the "
                f"scales from it and ignores any calibrator); layers without Q/DQ run in "
                f"{'fp16' if 'fp16' in runs else 'fp32'}",
                f"{CACHE_FILE} holds the same scales for TensorRT's implicit quantization of {FLOAT_ONNX} "
                "(the graph without Q/DQ, e.g. for DeepStream's int8-calib-file); TensorRT 10 deprecates that path",
            ],
        )
    if ir_precision == "int8":
        why = (
            "its Maxwell GPU (sm_53) lacks DP4A, so TensorRT's int8 runs no faster than fp16"
            if target.name == "jetson-nano"
            else f"its TensorRT runs {', '.join(runs)}"
        )
        return EnginePlan(
            float_engine,
            float_engine == "fp16",
            False,
            qdq="strip",
            check="int8-as-float",
            companion=INT8_ONNX,
            warnings=[
                f"-O int8 on {target.name}, which has no fast int8 ({why}): the engine is planned in {float_engine} "
                "from the float "
                f"graph (weights keep their int8-rounded values, activations are not quantized); {CACHE_FILE} "
                f"and {INT8_ONNX} (the symmetric Q/DQ model) are kept for CPU runtimes and int8-capable GPUs"
            ],
        )
    if ir_precision == "fp16":
        notes = [
            f"{TRT_ONNX} is the -O fp16 graph in float32 (TensorRT's parser takes float32 and narrows with "
            f"--fp16); its weights hold the float16-rounded values the IR was checked with"
        ]
        if float_engine == "fp32":
            reason = "requested" if requested == "fp32" else f"{target.name}'s TensorRT has no fp16"
            notes.append(f"the engine is planned in fp32 ({reason})")
        return EnginePlan(float_engine, float_engine == "fp16", False, qdq="strip", check="fp16", notes=notes)
    notes = []
    if float_engine == "fp16":
        notes.append(
            f"the engine is planned in fp16 ({target.name}'s TensorRT runs fp16, the precision TensorRT users on "
            f"Jetsons deploy); {TRT_ONNX} stays float32 and was checked against the IR, while the fp16 rounding "
            "happens in TensorRT's kernels on the device: build with -O fp16 to have float16 numerics checked "
            "on this host, or with --engine-precision fp32 for an fp32 engine"
        )
    return EnginePlan(float_engine, float_engine == "fp16", False, qdq="strip", check="fp32", notes=notes)
