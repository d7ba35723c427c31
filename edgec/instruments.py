"""Instruments around every pass: the equivalence check, timing, IR dumps and progress."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Sequence, TextIO

from edgec import fingerprint, ir, noise_floor, quantities, runner
from edgec.compare import Comparison, Tolerance, compare
from edgec.errors import CheckFailed, EdgecError, PassError
from edgec.pass_infra import Numerics, Pass, PassContext
from edgec.pass_manager import Instrument, PassRecord
from edgec.progress import say


class Timing(Instrument):
    """Wall time of the pass alone; list it last so it wraps the pass and nothing else."""

    def __init__(self):
        self._start = 0.0

    def before_pass(self, pass_, record, model, ctx):
        self._start = time.perf_counter()

    def after_pass(self, pass_, record, model, ctx):
        record.seconds = time.perf_counter() - self._start


class Preflight(Instrument):
    """Asks the backend, once, before the first lossy pass, whether it can take the model at all
    (Backend.preflight): a refusal then costs seconds, not a quantization. The backend's own
    prepare passes (`after`, e.g. float-integer-ops) may be lossy but exist to make the model
    lowerable, so the question waits until they have run."""

    def __init__(self, backend, target, after: set[str] = frozenset()):
        self.backend, self.target, self.after, self.done = backend, target, set(after), False

    def before_pass(self, pass_, record, model, ctx):
        if pass_.numerics is Numerics.LOSSY and pass_.name not in self.after and not self.done:
            self.done = True
            self.backend.preflight(model, self.target)


class EquivalenceCheck(Instrument):
    """Runs the model in onnxruntime before the pipeline and after every modifying pass.

    Exact and lossless passes are compared with the step before them, so a failure points at
    the pass that caused it; lossy passes are compared with the original within their budget.
    After the pipeline the result is compared once more with the original (`final`).
    """

    def __init__(
        self, samples: Sequence[dict], keep_going: bool = False, tolerances: dict[str, Tolerance] | None = None
    ):
        self.samples = list(samples)
        self.keep_going = keep_going
        self.tolerances = tolerances or {}  # per pass name, from the user
        self.original: list[dict] = []
        self.previous: list[dict] = []
        self.final: Comparison | None = None
        self.final_tolerance: Tolerance | None = None
        self.failed: list[str] = []
        self._before_lossy: ir.Model | None = None
        self.passes: list[Pass] = []
        self._digest: str | None = None  # edgec.fingerprint of the model `previous` was run on

    def before_pipeline(self, model, ctx, passes):
        self._digest = fingerprint.computation(model.graph)
        try:
            self.original = runner.run_model_shared(model, self.samples, ctx.cache, self._digest)
        except Exception as exc:
            raise EdgecError(
                f"{model.source}: onnxruntime cannot run the model on the check inputs ({_short(exc)}); "
                "give real inputs with --inputs FILE.npz or fix shapes with --input-shape"
            ) from exc
        self.previous = self.original
        self.passes = list(passes)
        self.final_tolerance = _final_tolerance(passes, self.tolerances)

    def before_pass(self, pass_, record, model, ctx):
        # A lossy pass that fails its check gets a per-layer table; that needs the model it started from.
        self._before_lossy = model.copy() if pass_.numerics is Numerics.LOSSY else None

    def tolerance_for(self, pass_: Pass) -> Tolerance:
        return self.tolerances.get(pass_.name) or pass_.check_tolerance()

    def after_pass(self, pass_, record, model, ctx):
        if not record.modified:
            return
        start = time.perf_counter()
        before, self._digest = self._digest, fingerprint.computation(model.graph)
        if pass_.numerics is not Numerics.LOSSY and before is not None and self._digest == before:
            # same operators on the same data: the outputs cannot differ
            record.check = _same_computation(self.tolerance_for(pass_))
            record.check_seconds = time.perf_counter() - start
            return
        try:
            # shared: a pass that judged its own result on the check samples (quantize) ran it already
            outputs = runner.run_model_shared(model, self.samples, ctx.cache, self._digest)
        except Exception as exc:
            raise PassError(f"pass '{pass_.name}' produced a model onnxruntime cannot run: {_short(exc)}") from exc
        lossy = pass_.numerics is Numerics.LOSSY
        reference = self.original if lossy else self.previous
        tolerance, against = self.tolerance_for(pass_), "original" if lossy else "previous"
        recovery = next((p for p in self.passes[record.index :] if p.recovers), None) if lossy else None
        if recovery is not None:
            # Pruning before fine-tuning is expected to lose accuracy: measured here, judged after it.
            tolerance, against = Tolerance(), f"original (judged after {recovery.name})"
        # lossy: a concatenated output's small quantity must not hide behind its large one
        record.check = (quantities.compare_lossy if lossy else compare)(reference, outputs, tolerance, against)
        if not record.check and pass_.numerics is Numerics.EXACT:
            record.check = noise_floor.rejudge(record.check, model, self.samples, reference, outputs)
        record.check_seconds = time.perf_counter() - start
        self.previous = outputs
        if not record.check:
            self.failed.append(pass_.name)
            record.debug = self._precision_table(model)
            if not self.keep_going:
                raise CheckFailed(
                    f"pass '{pass_.name}' failed its equivalence check: {record.check}; {_next_step(pass_)}", record
                )

    def _precision_table(self, model: ir.Model) -> list | None:
        """Where the failed lossy pass lost precision, layer by layer (only for Q/DQ models)."""
        if self._before_lossy is None or not any(n.op == "QuantizeLinear" for n in model.graph.nodes):
            return None
        from edgec.quant import debug

        try:
            return debug.analyze(self._before_lossy, model, self.samples[:8])
        except Exception:  # the table helps explain a failure; it must never hide it
            return None

    def after_pipeline(self, model, ctx, records):
        lossy = any(p.numerics is Numerics.LOSSY for p in self.passes)
        judge = quantities.compare_lossy if lossy else compare
        self.final = judge(self.original, self.previous, self.final_tolerance, "original")
        if not lossy and not self.final:
            self.final = noise_floor.rejudge(self.final, model, self.samples, self.original, self.previous)


def _same_computation(tolerance: Tolerance) -> Comparison:
    return Comparison(
        ok=True, max_abs_err=0.0, max_rel_err=0.0, cosine=1.0, sqnr_db=float("inf"), top1_agreement=None,
        against="previous (same computation: graph digest unchanged, not run)", tolerance=tolerance,
    )


def _next_step(pass_: Pass) -> str:
    """What a user can do about a failed check, in the error line itself."""
    if pass_.numerics is Numerics.LOSSY and pass_.name == "quantize":
        return (
            "next: --max-drop POINTS or --min-sqnr DB (with --eval DATA) keeps the sensitive layers in float, "
            "or --keep-going writes the bundle anyway"
        )
    if pass_.numerics is Numerics.LOSSY:
        return f"next: loosen or drop '{pass_.name}' in --passes (see --print-pipeline), or --keep-going"
    return (
        f"next: --keep-going writes the bundle and records this, or --passes without '{pass_.name}' "
        "(see --print-pipeline) skips the pass; please report it, an exact pass should not change numbers"
    )


def _final_tolerance(passes: Sequence[Pass], overrides: dict[str, Tolerance]) -> Tolerance:
    """Exact pipelines must end within the exact budget; lossy ones within their loosest budget."""
    lossy = [overrides.get(p.name) or p.check_tolerance() for p in passes if p.numerics is Numerics.LOSSY]
    if not lossy:
        return Numerics.EXACT.default_tolerance()
    budget = lossy[0]
    for tolerance in lossy[1:]:
        budget = budget.loosest(tolerance)
    return budget


class AccuracyMeter(Instrument):
    """Top-1 accuracy on labelled --eval data before the pipeline and after every pass that
    changes numerics, so the report shows which step cost accuracy."""

    def __init__(self, data):
        self.data = data  # edgec.quant.evaluation.EvalSet with labels
        self.original: float | None = None

    def _measure(self, model) -> float:
        from edgec.quant import evaluation

        return evaluation.accuracy(evaluation.predict(model, self.data), self.data.labels)

    def before_pipeline(self, model, ctx, passes):
        self.original = self._measure(model)

    def after_pass(self, pass_, record, model, ctx):
        if record.modified and pass_.numerics is not Numerics.EXACT:
            record.accuracy = self._measure(model)


class DumpIR(Instrument):
    """Writes the IR before the pipeline and after each pass: 000_input.onnx, 003_fold-batchnorm.onnx."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def before_pipeline(self, model, ctx, passes):
        self.directory.mkdir(parents=True, exist_ok=True)
        ir.save(model, self.directory / "000_input.onnx")

    def after_pass(self, pass_, record, model, ctx):
        ir.save(model, self.directory / f"{record.index:03d}_{pass_.name}.onnx")


class ProgressDisplay(Instrument):
    """One line per pass on stderr: position, name, whether it changed the model, time, check.
    On a terminal the pass being run is shown while it runs, then replaced by its result."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.total = 0

    def before_pipeline(self, model, ctx, passes):
        self.total = len(passes)
        if self.total:
            say(
                f"edgec: running {self.total} passes on {model.source} (checked on {len(ctx.samples)} samples)",
                stream=self.stream,
            )

    def _prefix(self, record: PassRecord, name: str) -> str:
        width = len(str(self.total))
        return f"  [{record.index:>{width}}/{self.total}] {name:<30}"

    def before_pass(self, pass_, record, model, ctx):
        if self.tty:
            self.stream.write(self._prefix(record, pass_.name) + " running...")
            self.stream.flush()

    def after_pass(self, pass_: Pass, record: PassRecord, model: ir.Model, ctx: PassContext):
        status = "modified" if record.modified else "unchanged"
        check = ""
        if record.check is not None:
            check = f"  check {'ok' if record.check else 'FAILED'} (max_rel_err {record.check.max_rel_err:.1e})"
        line = f"{self._prefix(record, pass_.name)} {status:<9} {record.seconds:7.3f}s{check}"
        if self.tty:
            self.stream.write("\r\033[K")
        say(line, stream=self.stream)


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
