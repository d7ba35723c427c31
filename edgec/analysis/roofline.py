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
    unit: str | None  # the compute unit the estimate assumes; None if nothing runs the precision
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


def estimate_latency(costs: list[LayerCost], target: Target, precision: str) -> tuple[float | None, str, str | None]:
    """Sum over layers of max(compute time, memory time): (seconds, dominant bound, unit name)."""
    unit = target.best_unit(precision)
    if unit is None:
        return None, "n/a", None
    ops_per_s = unit.peak_gops[precision] * 1e9
    bytes_per_s = target.memory_bandwidth_gbps * 1e9
    compute_time = memory_time = total = 0.0
    for cost in costs:
        compute = 2.0 * cost.macs / ops_per_s
        memory = (cost.weight_bytes + cost.input_bytes + cost.output_bytes) / bytes_per_s
        total += max(compute, memory)
        compute_time += compute if compute >= memory else 0.0
        memory_time += memory if memory > compute else 0.0
    return total, ("compute" if compute_time >= memory_time else "memory"), unit.name


def fit(costs: list[LayerCost], target: Target, precision: str, peak_activation_bytes: int,
        weight_bytes: int, file_bytes: int) -> Fit:
    # Microcontrollers execute weights from flash; Linux-class devices load them into RAM.
    ram_needed = peak_activation_bytes + (0 if target.weights_in_flash else weight_bytes)
    ram_available = target.ram_bytes + target.external_ram_bytes
    fits_flash = None if target.flash_bytes is None else file_bytes <= target.flash_bytes
    seconds, bound, unit = estimate_latency(costs, target, precision)
    note = ""
    if unit is None:
        note = f"no {precision} compute unit (runs: {', '.join(sorted({p for u in target.compute for p in u.peak_gops}))})"
    elif ram_needed > target.ram_bytes and ram_needed <= ram_available:
        note = "needs external RAM (PSRAM)"
    return Fit(target.name, precision, unit, ram_needed, ram_available, file_bytes, target.flash_bytes,
               ram_needed <= ram_available, fits_flash, None if seconds is None else seconds * 1e3, bound, note)
