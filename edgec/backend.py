"""The backend contract: legalize, lower to an artifact, run it on the host for validation."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np
import onnx_graphsurgeon as gs

from edgec import ir
from edgec.compare import Tolerance
from edgec.errors import EdgecError

Runner = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass(frozen=True)
class BackendOption:
    """A setting of one backend (--keep-layout, --io-dtype...): type, default, help, allowed values."""

    kind: type
    default: Any
    help: str
    choices: tuple = ()


@dataclass
class Artifact:
    """What a backend wrote: `main` is the file a device loads; `files` are all of them (relative)."""

    backend: str
    main: Path
    files: list[Path]
    info: dict = field(default_factory=dict)


# An fp16 artifact at least this close to float meets the budget convert-fp16 holds the IR to
# (30 dB), whatever the IR's own margin: PP-OCRv4's recognizer on OpenVINO's fp16 kernels was
# 38.2 dB from float, 1.6 dB below the IR rounded op by op.
FP16_ENOUGH_DB = 30.0


class Backend:
    name: ClassVar[str]
    summary: ClassVar[str]
    # Python modules the backend imports; missing ones make it unavailable, never break edgec.
    requires: ClassVar[tuple[str, ...]] = ()
    install_hint: ClassVar[str] = ""
    # The artifact runs on the backend's own kernels (fused, re-blocked), so it is held to a
    # float32-level budget against the IR rather than the 1e-5 of exact passes...
    tolerance: ClassVar[Tolerance] = Tolerance(max_rel_err=1e-4)
    # ...and a quantized one to an int8-level budget: real int8 kernels requantize in fixed point
    # where the IR's Q/DQ emulation rounds once in float (measured: 3e-3 relative on
    # MobileNetV2 logits, SQNR > 50 dB).
    quantized_tolerance: ClassVar[Tolerance] = Tolerance(min_cosine=0.999, min_sqnr_db=30.0)
    # ...and a float16 one to an fp16-level budget: the runtime's fused kernels round to float16
    # at other points than the IR's op-by-op run (onnxruntime's own graph fusions on magika and
    # openWakeWord's melspectrogram: 3.9e-4 and 6.3e-4 relative).
    fp16_tolerance: ClassVar[Tolerance] = Tolerance(min_cosine=0.9999, min_sqnr_db=40.0)
    # When the check has the float model's outputs, an int8 artifact is judged by its error
    # against them next to the IR's, as TFLite's is: int8 kernels requantize in fixed point, sum
    # in other orders and, on x86 without VNNI, in 16-bit pairs, which against the Q/DQ IR is
    # noise of the IR's own size. Measured: PP-OCRv4's recognizer in onnxruntime is 17 dB from
    # its IR, yet 15.1 dB from float where the IR is 15.2 dB. A wrong scale or zero point costs
    # tens of dB; an output within quantized_tolerance.min_sqnr_db of float passes regardless.
    int8_margin_db: ClassVar[float] = 1.0
    # The int8 layout its runtime fuses (see edgec.quant.scheme); -O int8 quantizes for it.
    quant_scheme: ClassVar[str] = "onnx"
    options: ClassVar[Mapping[str, BackendOption]] = {}
    # What runner() runs the artifact in on this host (said by `edgec bench` next to its numbers).
    host_runtime: ClassVar[str] = ""
    # Whether it stores entropy-coded weights (the huffman pass's model.ecw) next to its model.
    weight_container: ClassVar[bool] = False

    def __init__(self) -> None:
        self.settings: dict[str, Any] = {name: option.default for name, option in self.options.items()}

    def configure(self, settings: Mapping[str, Any]) -> "Backend":
        """Apply user settings; an option this backend does not have is a user error."""
        for name, value in settings.items():
            option = self.options.get(name)
            if option is None:
                known = ", ".join(sorted(self.options)) or "none"
                raise EdgecError(f"backend '{self.name}' has no option '{name}' (its options: {known})")
            if option.choices and value not in option.choices:
                raise EdgecError(f"backend '{self.name}': {name} must be one of {', '.join(option.choices)}")
            self.settings[name] = option.kind(value)
        return self

    def check_tolerance(self, model: ir.Model) -> Tolerance:
        if ir.has_quantized_numerics(model.graph):
            return self.quantized_check()
        return self.fp16_check() if ir.compute_precision(model.graph) == "fp16" else self.tolerance

    def fp16_check(self) -> Tolerance:
        """fp16_tolerance against the IR, or the float-relative rule when float outputs exist: the
        IR rounds every op's output to float16 (edgec.fp16_emulation), which a runtime computing
        in float32 between float16 weights (onnxruntime's CPU provider, LiteRT's XNNPACK on x86)
        does not and a fusing one does less often: both may be closer to float than the IR, by up
        to the IR's own error. A wrong artifact loses to it by far more."""
        budget = self.fp16_tolerance
        return replace(budget, max_sqnr_loss_vs_float_db=self.int8_margin_db, sqnr_vs_float_enough_db=FP16_ENOUGH_DB)

    def quantized_check(self) -> Tolerance:
        """quantized_tolerance against the IR, or the float-relative rule when float outputs exist."""
        budget = self.quantized_tolerance
        return replace(budget, max_sqnr_loss_vs_float_db=self.int8_margin_db, sqnr_vs_float_enough_db=budget.min_sqnr_db)

    def available(self) -> tuple[bool, str]:
        missing = [m for m in self.requires if importlib.util.find_spec(m) is None]
        if missing:
            return False, f"needs {', '.join(missing)}: {self.install_hint}"
        return True, ""

    def prepare_passes(self, target, graph: gs.Graph) -> str:
        """Pipeline text run before the user's pipeline when `graph` needs it: rewrites of
        operators this backend has no kernels for, done first so that the cleanup and the lossy
        passes work on their result (the report's pipeline text shows them)."""
        return ""

    def legalize_passes(self, target, graph: gs.Graph, pipeline: Sequence[str] = ()) -> str:
        """Pipeline text appended after the user's pipeline (`pipeline`: its pass names) when
        `graph` needs it, so that the result suits this backend (rewrites that need the shapes
        the cleanup fixed, or the Q/DQ quantize writes)."""
        return ""

    def preflight(self, model: ir.Model, target) -> None:
        """Raise EdgecError when lower() will refuse `model` whatever the lossy passes do to it (an
        operator this backend has no conversion for). Runs on the cleaned float model before the
        first lossy pass: SLANet's Loop was refused by OpenVINO only after -O int8 had quantized
        for 5 minutes (20 under load, past the sweep's time limit)."""

    def lower(self, model: ir.Model, target, out_dir: Path) -> Artifact:
        raise NotImplementedError

    def runner(self, artifact: Artifact, out_dir: Path, threads: int | None = None) -> Runner:
        """A callable that runs the artifact on this host with the backend's own runtime, on
        inputs shaped as the IR's (the runner converts to the artifact's layout and dtypes);
        `threads` None leaves the runtime's default. The per-backend numeric check and
        `edgec bench` both go through it."""
        raise NotImplementedError
