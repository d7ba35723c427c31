"""Runs a pipeline of passes over a model with instruments around every pass."""

from __future__ import annotations

import contextlib
import signal
import threading
from dataclasses import dataclass, field
from typing import Any, Sequence

from edgec import ir, pipeline_text
from edgec.compare import Comparison
from edgec.errors import BudgetExceeded
from edgec.pass_infra import Pass, PassContext, apply_pass


@dataclass
class PassRecord:
    """One pass as it ran: what the report shows for it."""

    index: int  # 1-based position in the pipeline
    name: str
    text: str  # the pass with every option, as pipeline text
    numerics: str
    modified: bool = False
    seconds: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)
    check: Comparison | None = None
    check_seconds: float = 0.0
    debug: list | None = None  # per-layer precision table when a lossy check failed
    accuracy: float | None = None  # top-1 accuracy on --eval data after this pass

    def to_json(self) -> dict:
        return {
            "index": self.index,
            "name": self.name,
            "text": self.text,
            "numerics": self.numerics,
            "modified": self.modified,
            "seconds": round(self.seconds, 6),
            "stats": self.stats,
            "check": self.check.to_json() if self.check is not None else None,
            "check_seconds": round(self.check_seconds, 6),
            **({"debug_precision": self.debug} if self.debug else {}),
            **({"accuracy": self.accuracy} if self.accuracy is not None else {}),
        }


class Instrument:
    """Hooks around passes. `before_*` run in list order, `after_*` in reverse, like a stack,
    so an instrument listed last (timing) wraps the pass most tightly."""

    def before_pipeline(self, model: ir.Model, ctx: PassContext, passes: Sequence[Pass]) -> None:
        pass

    def before_pass(self, pass_: Pass, record: PassRecord, model: ir.Model, ctx: PassContext) -> None:
        pass

    def after_pass(self, pass_: Pass, record: PassRecord, model: ir.Model, ctx: PassContext) -> None:
        pass

    def after_pipeline(self, model: ir.Model, ctx: PassContext, records: list[PassRecord]) -> None:
        pass


class PassManager:
    def __init__(self, passes: Sequence[Pass], instruments: Sequence[Instrument] = ()):
        self.passes = list(passes)
        self.instruments = list(instruments)
        self.records: list[PassRecord] = []  # filled as passes finish, so a failure can still be reported

    @property
    def pipeline_text(self) -> str:
        return pipeline_text.format([p.spec(full=True) for p in self.passes])

    def run(self, model: ir.Model, ctx: PassContext) -> list[PassRecord]:
        for instrument in self.instruments:
            instrument.before_pipeline(model, ctx, self.passes)
        records = self.records = []
        for index, pass_ in enumerate(self.passes, start=1):
            record = PassRecord(index, pass_.name, str(pass_.spec(full=True)), pass_.numerics.value)
            records.append(record)
            for instrument in self.instruments:
                instrument.before_pass(pass_, record, model, ctx)
            record.text = str(pass_.spec(full=True))  # an instrument may have set options
            with running(f"pass '{pass_.name}'"):
                result = apply_pass(pass_, model.graph, ctx, before=[r.name for r in records[:-1]])
            record.modified, record.stats = result.modified, result.stats
            record.text = str(pass_.spec(full=True))  # a pass may settle its own options (quantize's search)
            with running(f"the checks after pass '{pass_.name}'"):
                for instrument in reversed(self.instruments):
                    instrument.after_pass(pass_, record, model, ctx)
        for instrument in reversed(self.instruments):
            instrument.after_pipeline(model, ctx, records)
        return records


# --- the build's time budget ------------------------------------------------------------------

_RUNNING: list[str] = []  # what the build is doing now, innermost last ("pass 'quantize'")


@contextlib.contextmanager
def running(what: str):
    _RUNNING.append(what)
    try:
        yield
    finally:
        _RUNNING.pop()


class _Expired(BaseException):
    """Raised by the alarm inside whatever runs; a BaseException, so a plugin's `except Exception`
    cannot swallow it. `deadline` turns it into BudgetExceeded."""


@contextlib.contextmanager
def deadline(seconds: float | None, what: str = "build"):
    """Interrupt the body after `seconds` (None or 0: no limit) with BudgetExceeded (exit code 1),
    naming what was running (the pass, or the plugin file and line). Uses SIGALRM, so it works
    only in the main thread of a POSIX process; elsewhere the body runs unbounded."""
    if not seconds or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return
    where: list[str] = []

    def expire(signum, frame):
        if _importing(frame):
            # An exception in the middle of an import leaves a half-initialized module (a C
            # extension's, even) in sys.modules for later code to crash on: wait for it to finish.
            signal.setitimer(signal.ITIMER_REAL, 0.05)
            return
        if not where:
            where.append(_describe(frame))
        signal.setitimer(signal.ITIMER_REAL, 1.0)  # again every second, should the body catch it
        raise _Expired()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except _Expired:
        raise BudgetExceeded(
            f"the {what} ran past --timeout {seconds:g}s while running {where[0]}; "
            "raise --timeout (0 = no limit) or find what hangs with --debug"
        ) from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _importing(frame) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _describe(frame) -> str:
    """The running pass, and the innermost frame outside edgec and the libraries (a plugin)."""
    what = _RUNNING[-1] if _RUNNING else "the build (loading the model or its data)"
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        file = frame.f_code.co_filename
        ours = module == "edgec" or module.startswith("edgec.")
        library = "site-packages" in file or "/lib/python" in file or file.startswith("<")
        if not ours and (not library or module.startswith("edgec_plugin_")):
            return f"{what} (in {file}:{frame.f_lineno})"
        frame = frame.f_back
    return what
