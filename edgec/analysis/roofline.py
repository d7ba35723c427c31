"""Latency and fit estimates against a target profile: a roofline per layer, and RAM/flash budgets."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgec.analysis.costs import LayerCost
from edgec.targets import Target


@dataclass
class Fit:
    target: str
    precision: str
    unit: str | None  # kind of the compute unit the estimate assumes (cpu, gpu, ...); None if none fits
    unit_name: str | None
    ram_needed: int
    ram_available: int
    flash_needed: int
    flash_available: int | None
    fits_ram: bool
    fits_flash: bool | None  # None when the target streams the model from a host
    latency_ms: float | None
    bound: str  # "compute", "memory" or "n/a": what dominates the estimate
    note: str = ""

    @property
    def fits(self) -> bool:
        return self.fits_ram and self.fits_flash is not False

    def to_json(self) -> dict:
        return {**self.__dict__, "fits": self.fits}


def model_precision(costs: list[LayerCost], weight_dtypes: list[np.dtype]) -> str:
    """int8 when weights are stored quantized, fp16 when float weights are half, else fp32."""
    if any(c.op in ("DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger") for c in costs):
        return "int8"
    floats = [d for d in weight_dtypes if np.issubdtype(d, np.floating)]
    if floats and all(d == np.float16 for d in floats):
        return "fp16"
    return "fp32"


# Accelerators without fp32 (GPU engines, VPUs) run an fp32 model in half precision: TensorRT and
# OpenVINO convert it. Integer units need a quantized model, so nothing falls back to int8.
_FALLBACK = {"fp32": ("fp16", "bf16")}


def runnable_precision(target: Target, precision: str) -> str | None:
    for candidate in (precision, *_FALLBACK.get(precision, ())):
        if target.best_unit(candidate) is not None:
            return candidate
    return None


def estimate_latency(costs: list[LayerCost], target: Target, precision: str, byte_scale: float = 1.0):
    """Sum over layers of max(compute time, memory time): (seconds, dominant bound, unit).
    `byte_scale` shrinks the traffic when the device runs a narrower type than the file stores."""
    unit = target.best_unit(precision)
    if unit is None:
        return None, "n/a", None
    ops_per_s = unit.peak_gops[precision] * 1e9
    bytes_per_s = target.memory_bandwidth_gbps * 1e9
    compute_time = memory_time = total = 0.0
    for cost in costs:
        compute = 2.0 * cost.macs / ops_per_s
        memory = byte_scale * (cost.weight_bytes + cost.input_bytes + cost.output_bytes) / bytes_per_s
        total += max(compute, memory)
        compute_time += compute if compute >= memory else 0.0
        memory_time += memory if memory > compute else 0.0
    return total, ("compute" if compute_time >= memory_time else "memory"), unit


def fit(
    costs: list[LayerCost],
    target: Target,
    precision: str,
    peak_activation_bytes: int,
    weight_bytes: int,
    file_bytes: int,
) -> Fit:
    # Microcontrollers execute weights from flash; Linux-class devices load them into RAM.
    ram_needed = peak_activation_bytes + (0 if target.weights_in_flash else weight_bytes)
    ram_available = target.ram_bytes + target.external_ram_bytes
    fits_flash = None if target.flash_bytes is None else file_bytes <= target.flash_bytes
    runs_as = runnable_precision(target, precision)
    scale = 0.5 if runs_as in ("fp16", "bf16") and precision == "fp32" else 1.0
    seconds, bound, unit = estimate_latency(costs, target, runs_as, scale) if runs_as else (None, "n/a", None)
    notes = []
    if runs_as is None:
        notes.append(
            f"no {precision} compute unit (runs: {', '.join(sorted({p for u in target.compute for p in u.peak_gops}))})"
        )
    elif runs_as != precision:
        notes.append(f"runs as {runs_as}")
    if target.ram_bytes < ram_needed <= ram_available:
        notes.append("needs external RAM (PSRAM)")
    return Fit(
        target.name,
        runs_as or precision,
        unit.unit if unit else None,
        unit.name if unit else None,
        ram_needed,
        ram_available,
        file_bytes,
        target.flash_bytes,
        ram_needed <= ram_available,
        fits_flash,
        None if seconds is None else seconds * 1e3,
        bound,
        "; ".join(notes),
    )
