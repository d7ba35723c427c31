"""Numeric comparison of two runs of a model: the metrics and verdict every check reports."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

import numpy as np

Outputs = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Tolerance:
    """Budgets a comparison must meet; None means the metric is reported but not judged.

    max_rel_err is the largest absolute error divided by the largest reference magnitude of the
    same output (an L-infinity relative error), which stays meaningful where elements are near
    zero; max_abs_err bounds the absolute error directly (0 means bit-exact).
    """

    max_rel_err: float | None = None
    max_abs_err: float | None = None
    min_cosine: float | None = None
    min_sqnr_db: float | None = None
    min_top1_agreement: float | None = None
    # int8 outputs: `lsb` names each one's quantization step; such an output is judged only by
    # the share of its elements within max_lsb steps (at least min_within_lsb). With
    # min_within_lsb None the share is reported, not judged.
    lsb: tuple[tuple[str, float], ...] = ()
    max_lsb: float | None = None
    min_within_lsb: float | None = None
    # Judged against the float model when compare() is given its outputs (`float_reference`):
    # every output's SQNR vs float must be at least the reference's (the Q/DQ IR's) SQNR vs float
    # minus this many dB, and then replaces the other budgets. An int8 output may also spend
    # `lsb_slack` extra elements' worth of one-step errors (a handful of flipped roundings
    # is a large share of a tiny output), and any output at least `sqnr_vs_float_enough_db`
    # from float passes (the IR may equal float there).
    max_sqnr_loss_vs_float_db: float | None = None
    lsb_slack: float = 0.0
    sqnr_vs_float_enough_db: float | None = None
    # Outputs that hold int8/uint8 codes (name, scale, zero point): compared as the real values
    # (code - zero point) * scale, so SQNR and cosine measure the signal, not the zero point.
    integer_outputs: tuple[tuple[str, float, int], ...] = ()

    def describe(self) -> str:
        parts = []
        if self.max_sqnr_loss_vs_float_db is not None:
            parts.append(f"sqnr vs float >= the IR's - {self.max_sqnr_loss_vs_float_db:g} dB")
        if self.lsb and self.min_within_lsb is not None:
            parts.append(f">= {self.min_within_lsb:.0%} of int8 output elements within {self.max_lsb:g} LSB")
        for key, value in asdict(self).items():
            if key in ("lsb", "max_lsb", "min_within_lsb", *_FLOAT_RULE_FIELDS):
                continue
            if value is not None:
                op = "<=" if key.startswith("max") else ">="
                parts.append(f"{key.removeprefix('max_').removeprefix('min_')} {op} {value:g}")
        return ", ".join(parts) or "no budget"

    def loosest(self, other: "Tolerance") -> "Tolerance":
        def pick(a, b, larger):
            if a is None or b is None:
                return None if a is None and b is None else (a if b is None else b)
            return max(a, b) if larger else min(a, b)

        return Tolerance(
            max_rel_err=pick(self.max_rel_err, other.max_rel_err, True),
            max_abs_err=pick(self.max_abs_err, other.max_abs_err, True),
            min_cosine=pick(self.min_cosine, other.min_cosine, False),
            min_sqnr_db=pick(self.min_sqnr_db, other.min_sqnr_db, False),
            min_top1_agreement=pick(self.min_top1_agreement, other.min_top1_agreement, False),
            lsb=self.lsb or other.lsb,
            max_lsb=pick(self.max_lsb, other.max_lsb, True),
            min_within_lsb=pick(self.min_within_lsb, other.min_within_lsb, False),
            max_sqnr_loss_vs_float_db=pick(self.max_sqnr_loss_vs_float_db, other.max_sqnr_loss_vs_float_db, True),
            lsb_slack=max(self.lsb_slack, other.lsb_slack),
            sqnr_vs_float_enough_db=pick(self.sqnr_vs_float_enough_db, other.sqnr_vs_float_enough_db, False),
            integer_outputs=self.integer_outputs or other.integer_outputs,
        )


_FLOAT_RULE_FIELDS = ("max_sqnr_loss_vs_float_db", "lsb_slack", "sqnr_vs_float_enough_db", "integer_outputs")


# Exact passes may only reassociate floating point arithmetic (e.g. folding BatchNorm scales).
EXACT = Tolerance(max_rel_err=1e-5)
# Lossless passes must decode to the very same numbers.
LOSSLESS = Tolerance(max_abs_err=0.0)
# Lossy passes without a budget of their own: the output must still point the same way.
LOSSY_DEFAULT = Tolerance(min_cosine=0.99, min_sqnr_db=15.0)


@dataclass
class Comparison:
    """The verdict of one check. Truthy when ok; prints its numbers and the budget they met."""

    ok: bool
    max_abs_err: float
    max_rel_err: float
    cosine: float
    sqnr_db: float
    top1_agreement: float | None
    against: str
    tolerance: Tolerance
    failures: list[str] = field(default_factory=list)
    within_lsb: float | None = None  # least share of elements within max_lsb steps, int8 outputs
    # Per output, when judged against the float model: {"output", "reference_sqnr_db" (the IR vs
    # float), "sqnr_db" (the candidate vs float), "required_sqnr_db"}.
    vs_float: list[dict] | None = None

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        if self.ok:
            return (
                f"ok vs {self.against} (max_rel_err {self.max_rel_err:.2e}, "
                f"sqnr {_fmt_db(self.sqnr_db)}; budget {self.tolerance.describe()})"
            )
        return f"FAILED vs {self.against}: " + "; ".join(self.failures)

    def to_json(self) -> dict:
        return {
            "ok": self.ok,
            "against": self.against,
            "max_abs_err": self.max_abs_err,
            "max_rel_err": self.max_rel_err,
            "cosine": self.cosine,
            # JSON has no infinity; null means the outputs were identical.
            "sqnr_db": None if math.isinf(self.sqnr_db) else self.sqnr_db,
            "top1_agreement": self.top1_agreement,
            **({"within_lsb": self.within_lsb} if self.within_lsb is not None else {}),
            **({"vs_float": [_json_db(v) for v in self.vs_float]} if self.vs_float is not None else {}),
            # Only what the budget sets: fields at their defaults (no budget) are left out.
            "tolerance": {k: v for k, v in asdict(self.tolerance).items() if v != _DEFAULT_BUDGET[k]},
            "failures": list(self.failures),
        }


_DEFAULT_BUDGET = asdict(Tolerance())


def _json_db(record: dict) -> dict:
    return {k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in record.items()}


def _fmt_db(value: float) -> str:
    return f"{value:.1f} dB"  # "-inf dB": an output with inf or NaN where the other has a number


def compare(
    reference: Sequence[Outputs],
    candidate: Sequence[Outputs],
    tolerance: Tolerance = EXACT,
    against: str = "previous",
    float_reference: Sequence[Outputs] | None = None,
) -> Comparison:
    """Compare runs sample by sample; each output is judged on all samples together.
    `float_reference`: the float model's outputs on the same samples; with a tolerance that has
    max_sqnr_loss_vs_float_db, the candidate is judged by its error against them compared with
    the reference's (see Tolerance)."""
    if len(reference) != len(candidate):
        raise ValueError("reference and candidate have different numbers of samples")
    vs_float = float_reference is not None and tolerance.max_sqnr_loss_vs_float_db is not None
    if vs_float and len(float_reference) != len(reference):
        raise ValueError("the float reference has another number of samples")
    records: list[dict] = []
    names = list(reference[0]) if reference else []
    worst = dict(max_abs_err=0.0, max_rel_err=0.0, cosine=1.0, sqnr_db=math.inf)
    top1: list[float] = []
    failures: list[str] = []
    lsb = dict(tolerance.lsb)
    codes = {name: (scale, zero_point) for name, scale, zero_point in tolerance.integer_outputs}
    shares: list[float] = []
    for name in names:
        ref = np.concatenate([np.asarray(r[name]).ravel() for r in reference]).astype(np.float64)
        got = np.concatenate([np.asarray(c[name]).ravel() for c in candidate]).astype(np.float64)
        if name in codes:
            ref, got = _real(ref, codes[name]), _real(got, codes[name])
        if ref.shape != got.shape:
            failures.append(f"output '{name}' has {got.size} elements, expected {ref.size}")
            continue
        metrics = _metrics(ref, got)
        worst["max_abs_err"] = max(worst["max_abs_err"], metrics["max_abs_err"])
        worst["max_rel_err"] = max(worst["max_rel_err"], metrics["max_rel_err"])
        worst["cosine"] = min(worst["cosine"], metrics["cosine"])
        worst["sqnr_db"] = min(worst["sqnr_db"], metrics["sqnr_db"])
        agreement = _top1_agreement([r[name] for r in reference], [c[name] for c in candidate])
        if agreement is not None:
            top1.append(agreement)
        if vs_float:
            floating = np.concatenate([np.asarray(f[name]).ravel() for f in float_reference]).astype(np.float64)
            if name in codes and np.issubdtype(np.asarray(float_reference[0][name]).dtype, np.integer):
                floating = _real(floating, codes[name])  # an int8 source model's own codes
            record, failure = _judge_vs_float(name, floating, ref, got, lsb.get(name), tolerance)
            records.append(record)
            failures += [failure] if failure else []
            if name in lsb:
                shares.append(_within_lsb(ref, got, lsb[name], tolerance.max_lsb or 1.0))
            continue
        if name in lsb:
            share = _within_lsb(ref, got, lsb[name], tolerance.max_lsb)
            shares.append(share)
            if tolerance.min_within_lsb is None:
                failures += _judge(name, _with_slack(ref, got, metrics, lsb[name], tolerance), agreement, tolerance)
                continue
            if share < tolerance.min_within_lsb:
                failures.append(
                    f"output '{name}': {share:.2%} of elements within {tolerance.max_lsb:g} LSB "
                    f"({lsb[name]:.3g}) < {tolerance.min_within_lsb:.0%}"
                )
            continue
        failures += _judge(name, metrics, agreement, tolerance)
    return Comparison(
        ok=not failures,
        top1_agreement=min(top1) if top1 else None,
        against=against,
        tolerance=tolerance,
        failures=failures,
        within_lsb=min(shares) if shares else None,
        vs_float=records if vs_float else None,
        **worst,
    )


def _with_slack(ref: np.ndarray, got: np.ndarray, metrics: dict, step: float, tol: Tolerance) -> dict:
    """An int8 output judged against the IR may spend `lsb_slack` one-step errors: its SQNR counts
    the error energy beyond them, and its cosine is then implied by the SQNR (a few flipped
    roundings on a tiny, low-amplitude output would otherwise fail it)."""
    if not tol.lsb_slack or not math.isfinite(metrics["sqnr_db"]) or metrics["sqnr_db"] == -math.inf:
        return metrics
    finite = np.isfinite(ref) & np.isfinite(got)
    signal = float(np.sum(ref[finite] ** 2))
    noise = max(float(np.sum((ref[finite] - got[finite]) ** 2)) - tol.lsb_slack * step**2, 0.0)
    sqnr = math.inf if noise == 0 else (10.0 * math.log10(signal / noise) if signal > 0 else -math.inf)
    cosine = 1.0 if math.isinf(sqnr) or (tol.min_sqnr_db is not None and sqnr >= tol.min_sqnr_db) else metrics["cosine"]
    return {**metrics, "sqnr_db": sqnr, "cosine": max(metrics["cosine"], cosine)}


def _judge_vs_float(
    name: str, floating: np.ndarray, ref: np.ndarray, got: np.ndarray, step: float | None, tol: Tolerance
) -> tuple[dict, str | None]:
    """The candidate's error energy against float may exceed the reference's by the margin
    (plus, for an int8 output, `lsb_slack` one-step errors)."""
    if floating.shape != got.shape:
        return {"output": name}, f"output '{name}': the float model gives {floating.size} elements, not {got.size}"
    reference_sqnr = _metrics(floating, ref)["sqnr_db"]
    candidate_sqnr = _metrics(floating, got)["sqnr_db"]
    finite = floating[np.isfinite(floating)] if not np.isfinite(floating).all() else floating
    signal = float(np.dot(finite, finite))
    reference_noise = signal / 10 ** (reference_sqnr / 10) if math.isfinite(reference_sqnr) else 0.0
    allowed = reference_noise * 10 ** (tol.max_sqnr_loss_vs_float_db / 10) + tol.lsb_slack * (step or 0.0) ** 2
    if math.isinf(reference_sqnr) and reference_sqnr < 0:
        allowed = math.inf  # the reference is no better than noise: nothing to lose
    required = 10 * math.log10(signal / allowed) if signal > 0 and 0 < allowed < math.inf else -math.inf
    if signal > 0 and allowed == 0:
        required = math.inf
    enough = tol.sqnr_vs_float_enough_db
    if enough is not None:
        required = min(required, enough)
    record = {
        "output": name,
        "reference_sqnr_db": reference_sqnr,
        "sqnr_db": candidate_sqnr,
        "required_sqnr_db": required,
    }
    if candidate_sqnr >= required:
        return record, None
    return record, (
        f"output '{name}' sqnr vs float {_fmt_db(candidate_sqnr)} < {_fmt_db(required)} "
        f"(the IR's {_fmt_db(reference_sqnr)} - {tol.max_sqnr_loss_vs_float_db:g} dB"
        + (f", + {tol.lsb_slack:g} one-LSB errors" if step and tol.lsb_slack else "")
        + ")"
    )


def _real(codes: np.ndarray, params: tuple[float, int]) -> np.ndarray:
    scale, zero_point = params
    return (codes - zero_point) * scale


def _within_lsb(ref: np.ndarray, got: np.ndarray, step: float, steps: float) -> float:
    """Share of elements at most `steps` quantization steps apart (with a float32 hair of slack:
    both sides computed (q - zp) * scale in float32)."""
    if ref.size == 0:
        return 1.0
    return float(np.mean(np.abs(ref - got) <= steps * step * (1 + 1e-5)))


def sqnr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    """The SQNR of `candidate` against `reference` exactly as the checks measure it (non-finite
    values: see _metrics)."""
    return _metrics(np.asarray(reference, np.float64), np.asarray(candidate, np.float64))["sqnr_db"]


# Elements compared at a time: the whole-output temporaries (float64 copies, masks, differences)
# of a 640x640 detector's 16 check samples took PP-OCRv4 det's TVM build past its memory limit.
METRIC_BLOCK = 1 << 20


def _metrics(ref: np.ndarray, got: np.ndarray) -> dict:
    """Max abs/rel error, cosine and SQNR of `got` against `ref`, in blocks of METRIC_BLOCK
    elements. A NaN on both sides counts as agreement (0), on one side as an infinite error;
    cosine and energies are over the elements finite on both sides."""
    ref, got = np.ravel(ref), np.ravel(got)
    if ref.size == 0:
        return dict(max_abs_err=0.0, max_rel_err=0.0, cosine=1.0, sqnr_db=math.inf)
    max_abs = scale = rr = gg = rg = noise = 0.0
    all_finite = True
    for start in range(0, ref.size, METRIC_BLOCK):
        r = np.asarray(ref[start : start + METRIC_BLOCK], np.float64)
        g = np.asarray(got[start : start + METRIC_BLOCK], np.float64)
        both_nan = np.isnan(r) & np.isnan(g)
        if both_nan.any():
            r, g = np.where(both_nan, 0.0, r), np.where(both_nan, 0.0, g)
        err = np.abs(r - g)
        err[np.isnan(err)] = np.inf  # NaN on one side only is an infinite error
        max_abs = max(max_abs, float(err.max()))
        finite_ref = np.isfinite(r)
        scale = max(scale, float(np.abs(r[finite_ref]).max(initial=0.0)))
        finite = finite_ref & np.isfinite(g)
        if not finite.all():
            all_finite = False
            r, g = r[finite], g[finite]
        rr, gg, rg = rr + float(np.dot(r, r)), gg + float(np.dot(g, g)), rg + float(np.dot(r, g))
        if all_finite:
            difference = r - g
            noise += float(np.dot(difference, difference))
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
    norms = math.sqrt(rr) * math.sqrt(gg)
    cosine = rg / norms if norms > 0 else (1.0 if rr == 0 and gg == 0 else 0.0)
    noise = noise if all_finite else math.inf
    if noise == 0:
        sqnr = math.inf
    elif rr == 0 or math.isinf(noise):
        sqnr = -math.inf
    else:
        sqnr = 10.0 * math.log10(rr / noise)
    return dict(max_abs_err=max_abs, max_rel_err=max_rel, cosine=cosine, sqnr_db=sqnr)


def _top1_agreement(reference: list, candidate: list) -> float | None:
    """Share of rows whose argmax matches, for outputs shaped like class scores [N, C>1]."""
    first = np.asarray(reference[0])
    if first.ndim != 2 or first.shape[-1] < 2 or not np.issubdtype(first.dtype, np.floating):
        return None
    ref = np.concatenate([np.asarray(r).argmax(-1) for r in reference])
    got = np.concatenate([np.asarray(c).argmax(-1) for c in candidate])
    return float(np.mean(ref == got))


def _judge(name: str, m: dict, top1: float | None, tol: Tolerance) -> list[str]:
    failures = []
    if tol.max_rel_err is not None and not m["max_rel_err"] <= tol.max_rel_err:
        failures.append(f"output '{name}' max_rel_err {m['max_rel_err']:.3g} > {tol.max_rel_err:g}")
    if tol.max_abs_err is not None and not m["max_abs_err"] <= tol.max_abs_err:
        failures.append(f"output '{name}' max_abs_err {m['max_abs_err']:.3g} > {tol.max_abs_err:g}")
    if tol.min_cosine is not None and not m["cosine"] >= tol.min_cosine:
        failures.append(f"output '{name}' cosine {m['cosine']:.5f} < {tol.min_cosine:g}")
    if tol.min_sqnr_db is not None and not m["sqnr_db"] >= tol.min_sqnr_db:
        failures.append(f"output '{name}' sqnr {_fmt_db(m['sqnr_db'])} < {tol.min_sqnr_db:g} dB")
    if tol.min_top1_agreement is not None and top1 is not None and not top1 >= tol.min_top1_agreement:
        failures.append(f"output '{name}' top-1 agreement {top1:.4f} < {tol.min_top1_agreement:g}")
    return failures
