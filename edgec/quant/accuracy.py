"""Accuracy control (--max-drop / --min-sqnr): keep the most sensitive layers in float until the
quantized model is within the bound, and prove the bound on data the search never saw.

Before the quantize pass runs, the evaluation data is split (seeded) into a search part and a
held-out part. On the search part: quantize everything; if the bound fails, rank the quantized
layers by how much keeping each one alone in float recovers, and fall back down that ranking
until the bound holds. The held-out part then gives the verdict. If it fails there, the search
goes on over the search part with a stricter criterion (top-1 disagreement with float32 within
1/2, 1/4, then none of the allowed drop), the held-out part judging each round; if it still
fails, the build stops. The fallback list becomes the quantize pass's `fallback` option, so
the pipeline text reproduces the build.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from edgec import ir
from edgec.errors import CheckFailed, EdgecError
from edgec.pass_infra import PassContext, apply_pass
from edgec.pass_manager import Instrument
from edgec.progress import Progress
from edgec.quant import evaluation, qdq
from edgec.quant.evaluation import EvalSet
from edgec.quant.scheme import SHARED_OPS, ABSORBED_ACTIVATIONS

SENSITIVITY_SAMPLES = 500  # the ranking needs an order, not a precise number


@dataclass
class Bound:
    max_drop: float | None = None  # percentage points (accuracy, or top-1 agreement with float32)
    min_sqnr: float | None = None  # dB against float32 outputs

    def describe(self, metric: str) -> str:
        if metric == "sqnr":
            return f"SQNR >= {self.min_sqnr:g} dB vs float32"
        what = "top-1 accuracy" if metric == "accuracy" else "top-1 agreement with float32"
        return f"{what} drop <= {self.max_drop:g} points"


@dataclass
class _Scorer:
    metric: str
    bound: Bound
    reference: dict = field(default_factory=dict)  # id(part) -> float32 outputs
    fp32: dict = field(default_factory=dict)  # id(part) -> float32 score
    last_agreement: float = 100.0  # top-1 agreement with float32 of the last scored model (%)

    def prepare(self, model: ir.Model, part: EvalSet) -> None:
        outputs = evaluation.predict(model, part)
        self.reference[id(part)] = outputs
        self.fp32[id(part)] = self._value(outputs, part)

    def _value(self, outputs, part: EvalSet) -> float:
        if self.metric == "accuracy":
            return 100.0 * evaluation.accuracy(outputs, part.labels)
        if self.metric == "agreement":
            return 100.0 * evaluation.agreement(outputs, self.reference.get(id(part), outputs))
        return evaluation.sqnr_db(outputs, self.reference.get(id(part), outputs))

    def score(self, model: ir.Model, part: EvalSet) -> float:
        outputs = evaluation.predict(model, part)
        self.last_agreement = 100.0 * evaluation.agreement(outputs, self.reference[id(part)])
        return self._value(outputs, part)

    def drop(self, value: float, part: EvalSet) -> float:
        """How far below float32 (points), or the SQNR itself."""
        return value if self.metric == "sqnr" else self.fp32[id(part)] - value

    def within(self, value: float, part: EvalSet, strictness: float | None = None) -> bool:
        """Within the bound. After a held-out failure the search retries with a `strictness` in
        (0, 1]: SQNR must beat the bound by 3 dB / strictness, or top-1 *disagreement* with float32
        must stay within strictness x the allowed drop. Accuracy can only fall by as much as the
        predictions change, and paired agreement is far less noisy than the difference of two
        accuracies measured on a few hundred samples."""
        if self.metric == "sqnr":
            return value >= self.bound.min_sqnr + (0.0 if strictness is None else 3.0 / max(strictness, 0.1))
        if strictness is not None:
            return 100.0 - self.last_agreement <= self.bound.max_drop * strictness
        return self.drop(value, part) <= self.bound.max_drop


class AccuracyControl(Instrument):
    """Runs the search right before the quantize pass and sets that pass's fallback list."""

    def __init__(self, data: EvalSet, bound: Bound, holdout: float = 0.3, seed: int = 0, progress: bool = False):
        if bound.max_drop is None and bound.min_sqnr is None:
            raise EdgecError("accuracy control needs --max-drop or --min-sqnr")
        self.data, self.bound, self.holdout, self.seed, self.progress = data, bound, holdout, seed, progress
        self.report: dict | None = None

    def before_pipeline(self, model, ctx, passes):
        if not any(p.name == "quantize" for p in passes):
            raise EdgecError("--max-drop/--min-sqnr control a quantize pass; use -O int8 or add quantize to --passes")

    def before_pass(self, pass_, record, model, ctx):
        if pass_.name == "quantize" and self.report is None:
            # Make the measured choices first (calibration method, speed layout): the bound is
            # checked on the model the build will produce.
            pass_.settle(model.copy().graph, ctx)
            self.report = search(model, pass_, ctx, self.data, self.bound, self.holdout, self.seed, self.progress)
            pass_.fallback = tuple(self.report["fallback"])


def _metric(data: EvalSet, bound: Bound) -> str:
    if bound.min_sqnr is not None:
        return "sqnr"
    return "accuracy" if data.labels is not None else "agreement"


def search(
    model: ir.Model, quantize, ctx: PassContext, data: EvalSet, bound: Bound, holdout: float, seed: int, progress: bool
) -> dict:
    start = time.perf_counter()
    if len(data) < 4:
        raise EdgecError(f"{data.source}: {len(data)} evaluation samples are too few to split and verify")
    metric = _metric(data, bound)
    scorer = _Scorer(metric, bound)
    search_part, held_out = data.split(holdout, seed)
    ranking_part = search_part.part(range(min(len(search_part), SENSITIVITY_SAMPLES)))
    for part in (search_part, held_out, ranking_part):
        scorer.prepare(model, part)
    evaluations = 0

    def quantized(fallback: list[str]) -> ir.Model:
        nonlocal evaluations
        evaluations += 1
        trial = model.copy()
        # Trials measure accuracy only: no latency search in each of them.
        options = {**quantize.options(), "fallback": tuple(fallback), "select": "all", "recover": False}
        apply_pass(type(quantize)(**options), trial.graph, ctx)
        return trial

    all_int8 = scorer.score(quantized([]), search_part)
    fallback: list[str] = []
    ranking: list[dict] = []
    value = all_int8
    if not scorer.within(all_int8, search_part):
        ranking = _sensitivity(model, quantize, quantized, scorer, ranking_part, progress)
        fallback, value = _fall_back(ranking, quantized, scorer, search_part, None, [])
    held = scorer.score(quantized(fallback), held_out)
    for strictness in (0.5, 0.25, 0.0):  # the held-out split is a gate, never a target
        if scorer.within(held, held_out):
            break
        ranking = ranking or _sensitivity(model, quantize, quantized, scorer, ranking_part, progress)
        fallback, value = _fall_back(ranking, quantized, scorer, search_part, strictness, fallback)
        held = scorer.score(quantized(fallback), held_out)
    report = {
        "metric": metric,
        "bound": bound.describe(metric),
        "search_samples": len(search_part),
        "holdout_samples": len(held_out),
        "float32": {"search": scorer.fp32[id(search_part)], "holdout": scorer.fp32[id(held_out)]},
        "all_int8": {"search": all_int8, "drop": scorer.drop(all_int8, search_part)},
        "final": {"search": value, "holdout": held, "drop_holdout": scorer.drop(held, held_out)},
        "fallback": fallback,
        "sensitivity": ranking[:10],
        "evaluations": evaluations,
        "seconds": round(time.perf_counter() - start, 2),
    }
    if not scorer.within(held, held_out):
        raise CheckFailed(
            f"accuracy control: {bound.describe(metric)} not met on the held-out split "
            f"({scorer.drop(held, held_out):.3g} with {len(fallback)} layers in float)"
        )
    if fallback and not _quantized_layers(model, quantize, fallback):
        # The float model meets any bound: an "-O int8, ok" that quantized nothing is what users
        # cannot tell from a real one (recovery refuses it too).
        raise CheckFailed(
            f"accuracy control: {bound.describe(metric)} holds on the held-out split only with every layer in "
            f"float (all-int8 drop {scorer.drop(all_int8, search_part):.3g} on the search split): no int8 model "
            "to keep; raise --max-drop or give more --eval samples"
        )
    ctx.warnings.extend([] if not fallback else [f"accuracy control kept {len(fallback)} layers in float"])
    return report


def _quantized_layers(model: ir.Model, quantize, fallback: list[str] = ()) -> list:
    """The layers the quantize pass would quantize with `fallback` in float too, less the ops that
    only share their neighbours' quantization (the search's candidates)."""
    graph = model.graph.copy()
    ir.infer_shapes(graph)
    plan = qdq.plan(graph, quantize.active_scheme(), set(quantize.fallback) | set(fallback))
    return [n for n in plan.nodes if n.op not in SHARED_OPS + ABSORBED_ACTIVATIONS]


def _sensitivity(model, quantize, quantized, scorer, part, progress) -> list[dict]:
    """Each quantized layer alone in float: how much of the loss comes back."""
    candidates = _quantized_layers(model, quantize)
    baseline = scorer.score(quantized([]), part)
    ranking = []
    with Progress(len(candidates), "ranking layers by sensitivity", enabled=progress) as bar:
        for node in candidates:
            value = scorer.score(quantized([node.name]), part)
            gain = value - baseline  # higher is better for accuracy, agreement and SQNR alike
            ranking.append({"layer": node.name, "op": node.op, "gain": round(gain, 4)})
            bar.update()
    ranking.sort(key=lambda r: -r["gain"])
    return ranking


def _fall_back(ranking, quantized, scorer, part, strictness, start):
    fallback = list(start)
    value = scorer.score(quantized(fallback), part)
    for entry in ranking:
        if scorer.within(value, part, strictness):
            break
        if entry["layer"] in fallback:
            continue
        fallback.append(entry["layer"])
        value = scorer.score(quantized(fallback), part)
    return fallback, value
