"""The float32 noise floor of a model's outputs, for judging passes that only reassociate arithmetic.

An exact pass (folding BatchNorm into a Conv, fusing a bias) changes which float32 roundings
happen, never the function. `max_rel_err <= 1e-5` measures that against the largest output
magnitude, which is wrong for outputs far smaller than the values computed on the way there: a
detector's saturated sigmoid scores (max 2e-3) moved by 2.4e-7 after fold-batchnorm, "1.07e-4
relative", with 56 dB SQNR. The floor asks the model itself how far one float32 rounding moves
each output: every float input nudged by one ulp (random direction), the model run again, the
largest change per output. An output that fails the relative rule passes if its error is within
NOISE_FACTOR times that floor; the floor and the factor are recorded with the check.

A graph that computes in float16 is run as float16 hardware computes it (every op's output
rounded: edgec.fp16_emulation), so its floor is that of one float16 ulp at the inputs: a float32
ulp vanishes in the input's own rounding (MobileNetV2 in float16: fold-batchnorm moved the
logits by 5e-4 relative, against a floor of 0 at float32 ulps).

A graph with Q/DQ (or integer arithmetic) rounds its activations to int8 codes, and an input ulp
vanishes at its first QuantizeLinear (floor 0). There a reassociation that moves a value across a
rounding boundary flips one code, which downstream layers amplify: ddddocr's CRNN, int8 with its
LSTM unrolled for TVM, moved its logits by 5e-3 relative on one flip. Its floor is the largest
change when those roundings fall the other way: every activation scale nudged (edgec.quant.
rounding_noise, 1e-6 relative, seeded), which flips exactly the near-ties such a rewrite can flip.

NOISE_FACTOR: measured on PP-OCRv4's detector (60 convolutions), fold-batchnorm's error was 1.15x
its floor, every conv weight moved by 1 ulp 1.0x, by 8 ulps 2.7x, by 80 ulps 9-32x (depending on
the inputs), by 800 ulps 320x. 4 accepts rewrites that round, and rejects errors of ~100 ulps per
weight and up (a BatchNorm epsilon of 1e-3 instead of 1e-5 is ~8,000).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Mapping, Sequence

import numpy as np

from edgec import ir, runner
from edgec.compare import Comparison, Tolerance, compare
from edgec.quant import rounding_noise

NOISE_FACTOR = 4.0


@dataclass
class FloorJudged(Comparison):
    """A comparison whose relative-error failures were re-judged against the noise floor."""

    noise_floor: dict[str, float] = field(default_factory=dict)
    noise_factor: float = NOISE_FACTOR
    precision: str = "float32"

    def __str__(self) -> str:
        text = super().__str__()
        floors = ", ".join(f"{k} {v:.2g}" for k, v in self.noise_floor.items())
        return f"{text} ({self.precision} noise floor: {floors}; allowed {self.noise_factor:g}x)"

    def to_json(self) -> dict:
        return {
            **super().to_json(), "noise_floor": dict(self.noise_floor), "noise_factor": self.noise_factor,
            "noise_precision": self.precision,
        }


def nudged(feeds: Mapping[str, np.ndarray], seed: int, ulp_of=np.float32) -> dict[str, np.ndarray]:
    """Every float element moved one ulp of `ulp_of` up or down (seeded); other inputs unchanged."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, value in feeds.items():
        value = np.asarray(value)
        if np.issubdtype(value.dtype, np.floating):
            up = rng.integers(0, 2, value.shape).astype(bool)
            grid = value.astype(ulp_of) if np.dtype(ulp_of).itemsize < value.dtype.itemsize else value
            moved = np.where(up, np.nextafter(grid, np.inf), np.nextafter(grid, -np.inf))
            value = moved.astype(value.dtype)
        out[name] = value
    return out


def precision(model: ir.Model) -> type:
    """The float type the model's checks compute in: float16 graphs are emulated op by op."""
    return np.float16 if ir.holds_float16(model.graph) else np.float32


def measure(model: ir.Model, samples: Sequence[Mapping]) -> dict[str, float] | None:
    """Per output, the largest change one ulp at the inputs, or (Q/DQ graphs) its int8 near-ties
    rounding the other way, makes (None: nothing to nudge)."""
    float_inputs = any(np.issubdtype(np.asarray(v).dtype, np.floating) for s in samples for v in s.values())
    quantized = ir.has_quantized_numerics(model.graph)
    if not float_inputs and not quantized:
        return None
    plain = runner.run_model(model, samples)
    runs = []
    if float_inputs:
        runs.append(runner.run_model(model, [nudged(s, i, precision(model)) for i, s in enumerate(samples)]))
    if quantized:
        runs += [runner.run_model(rounding_noise.nudged(model, seed), samples) for seed in range(rounding_noise.TRIALS)]
    floors = {}
    for name in plain[0]:
        changes = [
            np.abs(np.asarray(a[name], np.float64) - np.asarray(b[name], np.float64))
            for moved in runs
            for a, b in zip(plain, moved)
        ]
        floors[name] = float(max(c[np.isfinite(c)].max(initial=0.0) for c in changes))
    return floors


def precision_label(model: ir.Model) -> str:
    """What the floor nudged, as the check records it."""
    label = np.dtype(precision(model)).name
    return f"{label} + int8 roundings" if ir.has_quantized_numerics(model.graph) else label


def rejudge(
    check: Comparison,
    model: ir.Model,
    samples: Sequence[Mapping],
    reference: Sequence[Mapping],
    candidate: Sequence[Mapping],
) -> Comparison:
    """`check` failed on relative error: pass each failing output whose absolute error is within
    NOISE_FACTOR times the model's float32 noise floor. Other failures stand as they were."""
    if check.ok or check.tolerance.max_rel_err is None:
        return check
    floors = measure(model, samples)
    if floors is None:
        return check
    failures, still_failing = [], False
    for name in reference[0]:
        ref = [{name: r[name]} for r in reference]
        got = [{name: c[name]} for c in candidate]
        alone = compare(ref, got, check.tolerance, check.against)
        if alone.ok:
            continue
        relaxed = Tolerance(
            **{**_fields(check.tolerance), "max_rel_err": None, "max_abs_err": NOISE_FACTOR * floors[name]}
        )
        if floors.get(name, 0.0) > 0 and compare(ref, got, relaxed, check.against).ok:
            continue
        still_failing = True
        failures += alone.failures
    values = {f.name: getattr(check, f.name) for f in fields(Comparison)}
    values.update(ok=not still_failing, failures=failures)
    return FloorJudged(**values, noise_floor=floors, precision=precision_label(model))


def _fields(tolerance: Tolerance) -> dict:
    return {f.name: getattr(tolerance, f.name) for f in fields(Tolerance)}
