"""Runs a pipeline of passes over a model with instruments around every pass."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from edgec import ir, pipeline_text
from edgec.compare import Comparison
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
            result = apply_pass(pass_, model.graph, ctx, before=[r.name for r in records[:-1]])
            record.modified, record.stats = result.modified, result.stats
            record.text = str(pass_.spec(full=True))  # a pass may settle its own options (quantize's search)
            for instrument in reversed(self.instruments):
                instrument.after_pass(pass_, record, model, ctx)
        for instrument in reversed(self.instruments):
            instrument.after_pipeline(model, ctx, records)
        return records
