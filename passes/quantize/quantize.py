"""Calibrate activations and insert Q/DQ, with int8 weights and int32 biases, in a backend's scheme."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar, Literal

import numpy as np
import onnx_graphsurgeon as gs

from edgec import ir
from edgec.compare import Tolerance
from edgec.errors import EdgecError, PipelineError
from edgec.graph_utils import NameGen, constant_value
from edgec.pass_infra import Numerics, Pass, PassContext, PassResult, option
from edgec.passes.quantize.protect_float_layers import ProtectFloatLayersPass
from edgec.quant import bias_correction as mean_shifts
from edgec.quant import collect, op_costs, per_layer, qdq, range_check, recovery
from edgec.quant import scheme as schemes
from edgec.quant.observers import METHODS as observers_methods
from edgec.quant.scheme import COMPUTE_OPS
from edgec.quant.speed import FLOAT_WEIGHT_BUDGET, latency_search

# Calibration samples calib=auto holds out to score each method on: 8, or 16 from sets of
# HELD_OUT_16_FROM samples up (the fitting keeps >= 75%). On 8, one method's score swung from best
# to worst with the samples (PP-LCNet, 200 rendered pages: mse 56.1 dB on 8, 13.5 dB on 16); with
# 16 the bench models gained (held-out SQNR: LeNet-5 37.3 -> 42.1 dB, MobileNetV2 32.6 -> 33.0,
# PP-LCNet 23.9 -> 28.7, where 8 had chosen a method that left 28 layers in float). Sets of 32
# (the real-model sweep) keep 8: holding out half of them lost more than it gained there.
AUTO_SAMPLES = 8
AUTO_SAMPLES_LARGE = 16
HELD_OUT_16_FROM = 64
# calib=per-layer decides per tensor, from smaller effects than one method for the whole model:
# it holds out a quarter of the set, up to this many samples (16 could not tell any change on the
# bench models from one sample's noise).
PER_LAYER_SCORED = 64
# The most samples fast bias correction measures its mean shifts on (spread over the set). Its
# gains on the real-model corpus were measured with 24 (32 samples, 8 held out); on ResNet-50
# with 100 samples the probe over 92 was 35% of the build. 16 would save ResNet-50 ~3.6 CPU s
# but was no better by bench and corpus: MobileNetV2-style (openvino) 33.4 -> 32.7 dB, PP-OCRv4
# rec 10.3 -> 10.0, mp-selfie-segmentation 8.5 -> 10.8, five others within 0.2.
BIAS_PROBE_SAMPLES = 32
# calib=auto's runner-up within this much of the winner is bias-corrected too, and the better
# corrected graph wins: correction changes the order (PP-LCNet, fused scoring: minmax 32.3 dB,
# entropy 30.6; corrected, entropy 44.6 and minmax 29.5, its correction wrecking it). On the
# corpus (onnx, real data) deciding both together gained mp-face-detection 10.0 -> 13.5 dB held
# out, mp-selfie-segmentation 8.5 -> 11.9, mp-palm-detection 16.3 -> 17.5 (ppocr-cls 18.2 ->
# 17.8, seven others within 0.2), at a second bias probe (ResNet-50: ~7 CPU s).
JOINT_MARGIN_DB = 3.0


class QuantizePass(Pass):
    name = "quantize"
    summary = "Calibrate activations and insert Q/DQ with int8 weights and int32 biases (scheme per backend)."
    numerics = Numerics.LOSSY
    # int8 keeps logits pointing the same way; accuracy itself is --max-drop's job.
    tolerance = Tolerance(min_cosine=0.98, min_sqnr_db=12.0)
    requires_calibration = True
    scheme: Literal["onnx", "openvino", "tflite", "tensorrt"] = "onnx"
    # "auto" tries percentile, entropy, MSE and min-max ranges (all read off one calibration pass)
    # and keeps the one whose quantized model is closest to float32 on calibration samples:
    # no single method wins on every model (see bench/quant/results.md).
    # "per-layer": auto's choice for the model, then each tensor's own method where the held-out
    # samples say so (edgec.quant.per_layer); the choices land in calib_layers.
    calib: Literal["auto", "per-layer", "minmax", "percentile", "entropy", "mse"] = "auto"
    # "METHOD:TENSOR" entries: these activation tensors take METHOD's range instead of calib's.
    calib_layers: tuple[str, ...] = ()
    percentile: float = option(99.99, min=1, max=100)
    # The observed extremes: exact (onnxruntime reduces every tensor in the calibration run: 0.7 s
    # of 32 PP-LCNet samples, 9 s of PP-OCRv4's detector at 640x640) or those of the strided
    # sample the histograms take, which miss rare peaks: minmax on them clipped MediaPipe's palm
    # detector by 0.9 dB. Every method's range stays within the extremes; calib=auto scores on exact.
    extremes: Literal["exact", "sampled"] = "exact"
    activations: Literal["", "uint8", "int8"] = ""  # "" takes the scheme's
    # Activations with negative values quantized zero-centred (zero point 128 of uint8, 0 of
    # int8) instead of over their fitted range: NNCF's performance preset. OpenVINO's CPU plugin
    # runs zero-point-free inputs in its brgconv/AMX kernels: PP-LCNet 1457 us against 1803 with
    # fitted ranges on an AMX host (NNCF performance: 1504), at 30.0 dB from float against 32.8
    # (NNCF: 31.5) on 632 held-out pages. Off by default: fidelity first.
    symmetric_activations: bool = False
    per_channel: bool = True
    # "reduced": weights in [-64, 64], which OpenVINO on x86 CPUs without VNNI needs: its u8 x s8
    # kernels there saturate on full-range weights (Target.int8_pair_sums_saturate). "first":
    # reduced only on the layers reading a model input, full elsewhere (NNCF's default overflow fix).
    # "auto": reduced for the openvino scheme on such targets, full elsewhere (onnxruntime has u8 x
    # u8 kernels for them, runner.session_options); the choice goes into the pipeline text.
    weight_range: Literal["auto", "full", "first", "reduced"] = "auto"
    fallback: tuple[str, ...] = ()  # node names kept entirely in float, weights too
    # Node names that compute in float on int8-stored weights: a small file, but onnxruntime then
    # dequantizes those weights on every run (it never folds DequantizeLinear), so the latency
    # search uses `fallback` instead.
    float_compute: tuple[str, ...] = ()
    # "cost": move to `fallback` the layers whose int8 kernels the target's measured cost table
    # predicts slower than float (edgec.quant.op_costs; deterministic). "latency": time the model
    # in onnxruntime on this machine instead (only meaningful when this machine is the target).
    select: Literal["all", "cost", "latency"] = "all"
    select_seconds: float = option(20.0, min=0)
    # When the quantized model misses this pass's budget on the check samples, keep the layers that
    # add the most error in float until it holds (edgec.quant.recovery); off: fail instead.
    recover: bool = True
    # "fast": each int8 layer's bias absorbs the mean shift its own weight rounding and input
    # clipping cause, measured on the calibration samples (edgec.quant.bias_correction), where
    # the held-out scoring samples come out closer to float (_correct_biases). "off": none.
    bias_correction: Literal["fast", "off"] = "fast"
    # dB by which the quantized graph must beat `tolerance` (SQNR up, 1 - cosine down alike), so
    # recovery keeps more layers in float. The build sets it when a backend's int8 kernels ran
    # that much further from float than this graph, and builds once more (compiler.headroom_pipeline).
    headroom_db: float = option(0.0, min=0, max=40)
    _search: ClassVar[dict | None] = None  # set on the instance once the latency search has run
    _calib_scores: ClassVar[dict | None] = None  # output SQNR per method, when calib=auto chose
    _calib_scored_on: ClassVar[int] = 0  # on how many held-out samples
    _per_layer: ClassVar[dict | None] = None  # calib=per-layer's search, when it ran
    _runner_up: ClassVar[str | None] = None  # calib=auto's second method, when close to the first
    _first_layers: ClassVar[set] = set()  # layers reading a model input (weight_range=first)
    _chosen: ClassVar[tuple | None] = None  # calib=auto's winning rewrite, reused by run()
    # calib=auto's scoring samples, the float graph's outputs on them and, when the build adopts
    # its winner's rewrite, that rewrite's score: the bias correction scores on the same samples.
    _scored: ClassVar[tuple | None] = None
    _float_concats: ClassVar[list] = []  # Concats of mixed quantities the last rewrite kept float
    _weight_memo: ClassVar[dict | None] = None  # during run(): rounded weights shared by its rewrites

    def check_options(self) -> None:
        super().check_options()
        self._layer_methods()

    def _layer_methods(self) -> dict[str, str]:
        """calib_layers as tensor -> method."""
        methods = {}
        for entry in self.calib_layers:
            method, _, tensor = entry.partition(":")
            if method not in observers_methods or not tensor:
                raise PipelineError(
                    f"pass 'quantize' option calib_layers: {entry!r} is not METHOD:TENSOR with METHOD one of "
                    f"{', '.join(observers_methods)}"
                )
            methods[tensor] = method
        return methods

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        from edgec import runner

        self._weight_memo = {}
        try:
            with runner.sharing_dequantized():
                return self._quantize(graph, ctx)
        finally:
            self._weight_memo = None  # the int8 copies of every weight: not kept past the pass

    def _quantize(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        scheme = self.active_scheme()
        ir.infer_shapes(graph)
        ir.name_nodes(graph)  # layers are kept in float by name: no two may share one
        if not qdq.plan(graph, scheme, set(self.fallback)).nodes:
            if self.fallback:  # every layer kept in float on purpose (accuracy control's last resort)
                ctx.warn("quantize: every quantizable layer is in fallback: the build stays float")
                return PassResult(False, {"quantized_nodes": 0})
            # A float model written as "-O int8, ok" is what users could not tell from a real one.
            raise EdgecError(
                f"quantize: no layer of this model is quantizable in the {scheme.name} scheme "
                f"(ops: {', '.join(sorted({n.op for n in graph.nodes})[:12])})"
                + (
                    "; layers inside If/Loop bodies are not quantized (an If on a setting input folds "
                    "away with --freeze-input NAME=VALUE)" if ir.has_subgraphs(graph) else ""
                )
                + ": build it with -O2 for float"
            )
        self.settle(graph, ctx)
        observers = self.observers(graph, scheme, ctx)
        range_sanity = _check_ranges_data_free(graph, observers, ctx)
        search = self._search
        weights_before = ir.param_bytes(graph)
        recovering = self.recover and bool(ctx.samples)
        correcting = self.bias_correction == "fast" and ctx.calibration is not None
        float_model = ir.Model(graph).copy() if recovering or correcting else None
        chosen, self._chosen = self._chosen, None
        scored, self._scored = self._scored, None
        if chosen is not None and chosen[0] is graph and chosen[1] == self._rewrite_key:
            # calib=auto already built this exact rewrite of this graph while scoring it: adopt it.
            _, _, trial, plan = chosen
            graph.nodes, graph.inputs, graph.outputs = trial.nodes, trial.inputs, trial.outputs
        else:
            plan = self._rewrite(graph, scheme, observers, set(self.float_compute), set(self.fallback))
            scored = scored and (*scored[:2], None)  # the same samples and float outputs, another graph
        holds = self._budget_holds(float_model, ctx) if recovering else None
        runner_up, self._runner_up = self._runner_up, None
        rival = None  # calib=auto's runner-up, rewritten: its correction is measured in the same probe
        if correcting and runner_up is not None and not self.calib_layers:
            rival = (runner_up, *self._rewrite_with(runner_up, float_model, scheme, observers))
        probed = [graph] + ([rival[1].graph] if rival else [])
        shifts = self._bias_shifts(float_model, probed, ctx) if correcting else None
        corrected = None
        if correcting and rival is not None:
            adopted, corrected = self._correct_jointly(float_model, graph, ctx, holds, scored, rival, shifts)
            plan = adopted or plan
        elif correcting:
            corrected = self._correct_biases(float_model, graph, ctx, holds, scored, shifts[0])
        recovered = self._recover(float_model, graph, scheme, observers, ctx) if recovering else None
        if recovered is not None and recovered["ok"]:
            plan = recovered.pop("plan")
            if correcting and recovered["fallback"]:  # the adopted graph is a fresh rewrite
                corrected = self._correct_biases(float_model, graph, ctx, holds, scored and (*scored[:2], None))
        ops: dict[str, int] = {}
        for node in plan.nodes:
            ops[node.op] = ops.get(node.op, 0) + 1
        stats = {
            "scheme": scheme.name,
            "activations": scheme.activation_dtype,
            "weight_range": self.weight_range,
            "calib": self.calib,
            **(
                {"calib_scores_db": self._calib_scores, "calib_scored_on": self._calib_scored_on}
                if self._calib_scores
                else {}
            ),
            **({"calib_layers": len(self.calib_layers)} if self.calib_layers else {}),
            **({"per_layer_search": self._per_layer} if self._per_layer else {}),
            "quantized_nodes": len(plan.nodes),
            "quantized_ops": ops,
            "activation_tensors": len(plan.tensors),
            "fallback": list(self.fallback),
            "float_concats": list(self._float_concats),
            "float_compute": list(self.float_compute),
            "weight_bytes": {"before": weights_before, "after": ir.param_bytes(graph)},
        }
        if range_sanity is not None:
            stats["data_free_range_check"] = range_sanity
        if corrected is not None:
            stats["bias_correction"] = corrected
        if search is not None:
            stats["latency_search"] = {k: v for k, v in search.items() if k != "fallback"}
        if recovered is not None:
            stats["recovery"] = {k: v for k, v in recovered.items() if k not in ("model", "plan")}
        return PassResult(True, stats)

    def active_scheme(self):
        """The scheme with this pass's activation options applied."""
        return schemes.get(self.scheme, self.activations or None, self.symmetric_activations)

    def _budget_holds(self, float_model: ir.Model, ctx: PassContext):
        """Whether a quantized model meets this pass's budget on the check samples (as recovery judges)."""
        from edgec import runner

        samples, tolerance = list(ctx.samples), self.check_tolerance()

        def holds(model: ir.Model) -> bool:
            reference = runner.run_model_shared(float_model, samples, ctx.cache)
            return recovery.judge(reference, model, samples, tolerance, ctx.cache).ok

        return holds

    def _bias_shifts(self, float_model: ir.Model, graphs: list[gs.Graph], ctx: PassContext) -> list:
        """Per graph, fast bias correction's measured shifts (one probe run for all of them),
        measured on the calibration samples calib=auto does not score on; or the error that
        stopped the measurement (a str), the same for every graph."""
        fitting, _ = _fit_and_score_split(ctx.calibration, self._per_layer_split)
        if len(fitting) > BIAS_PROBE_SAMPLES:  # the probe runs every layer twice: the costliest run of the pass
            fitting = fitting.subset(fitting.spread(BIAS_PROBE_SAMPLES), "bias correction")
        try:
            return mean_shifts.measure_together(float_model.graph, graphs, fitting)
        except Exception as exc:  # noqa: BLE001 - an optional refinement: the build goes on without it
            ctx.warn(f"quantize: fast bias correction skipped ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})")
            return [f"{type(exc).__name__}: {str(exc)[:300]}"] * len(graphs)

    def _correct_biases(
        self, float_model: ir.Model, graph: gs.Graph, ctx: PassContext, holds=None, scored: tuple | None = None,
        shifts: dict | str | None = None,
    ) -> dict:
        """Fast bias correction (`shifts` from _bias_shifts, measured here when not given); the
        samples calib=auto scores on (held out) choose among no correction, NNCF's guarded set of
        layers and every layer (see bias_correction.too_large); a tie keeps the smaller change.
        With `holds` (recovery on), candidates that meet the budget on the check samples come
        first: a correction must not undo what recovery settled (PP-OCRv4's detector from random
        inputs failed its check at cosine 0.971 after the correction of its recovered graph)."""
        if shifts is None:
            shifts = self._bias_shifts(float_model, [graph], ctx)[0]
        candidates = self._bias_candidates(float_model, graph, ctx, scored, shifts)
        if not isinstance(candidates, list):
            return candidates
        best, held = _first_that_holds(candidates, holds)
        return self._adopt_correction(graph, candidates, best, held)

    def _bias_candidates(self, float_model, graph, ctx, scored, shifts, uncorrected: bool = True) -> list | dict:
        """The correction candidates of `graph` (name, score on the held-out samples, trial
        model, what the report says), best first; or the report's entry when there is nothing
        to choose. Without `uncorrected`, no "none" candidate."""
        from edgec import runner

        if isinstance(shifts, str):
            return {"layers": 0, "chosen": "none", "error": shifts}
        if not shifts:
            return {"layers": 0, "chosen": "none"}
        _, scoring = _fit_and_score_split(ctx.calibration, self._per_layer_split)
        # (samples, float outputs, score of `graph` as it is) when calib=auto scored this very graph
        samples, reference, known = scored if scored is not None else (list(scoring), None, None)
        # On the check samples themselves (see _scoring_samples), the float outputs are shared
        # with the checks; the candidates score in fused kernels (_scoring_outputs).
        checks = list(ctx.samples or ())
        shared = len(samples) == len(checks) and all(a is b for a, b in zip(samples, checks))

        if reference is None:  # exact, and shared with the checks
            reference = (
                runner.run_model_shared(float_model, samples, ctx.cache) if shared
                else runner.run_model(float_model, samples)
            )
        guarded = {name: shift for name, (shift, large) in shifts.items() if not large}
        candidates = {"none": {}, "guarded": guarded, "all": {name: shift for name, (shift, _) in shifts.items()}}
        if len(guarded) in (0, len(shifts)):
            del candidates["guarded"]  # the same as none or as all
        if not uncorrected:
            del candidates["none"]
        found = []
        for name, chosen in candidates.items():
            trial = ir.Model(graph).copy() if chosen else ir.Model(graph)  # "none" is the graph as it is
            mean_shifts.apply(trial.graph, chosen)
            if name == "none" and known is not None:
                score = known
            else:
                score = _worst_output_db(_scoring_outputs(trial, samples, self.active_scheme()), reference)
            found.append(_Correction(name, score, trial, {"layers": len(shifts), "guarded": len(guarded)}))
        # Best score first; a tie keeps the smaller change (the order above).
        return sorted(found, key=lambda c: -c.score)

    @staticmethod
    def _adopt_correction(graph: gs.Graph, candidates: list, best, held: dict) -> dict:
        if best.name != "none":
            adopted = best.trial.graph
            graph.nodes, graph.inputs, graph.outputs = adopted.nodes, adopted.inputs, adopted.outputs
        chosen = best.report | {"chosen": best.name, "scored_db": {c.name: c.score for c in _in_order(candidates)}}
        return chosen | ({"meets_budget": held} if held else {})

    def _rewrite_with(self, calib: str, float_model: ir.Model, scheme, observers) -> tuple:
        """(model, plan, its float Concats): the float model rewritten with another calibration
        method's ranges; the pass's own method and float Concats stay as they were."""
        own, concats, self.calib = self.calib, self._float_concats, calib
        try:
            other = float_model.copy()
            plan = self._rewrite(other.graph, scheme, observers, set(self.float_compute), set(self.fallback))
            return other, plan, self._float_concats
        finally:
            self.calib, self._float_concats = own, concats

    def _correct_jointly(self, float_model, graph, ctx, holds, scored, rival, shifts):
        """Fast bias correction for calib=auto's winner (`graph`) and runner-up (`rival`: method
        and _rewrite_with's result) together: the best corrected graph of either wins (method and
        correction decided together); with `holds`, the best that meets the budget, checked best
        first across both (each check is an exact run of the check samples: only as many as it
        takes). (plan or None when the winner stays, the report's bias_correction entry)."""
        runner_up, other, plan, concats = rival
        winner = self.calib
        own = self._bias_candidates(float_model, graph, ctx, scored, shifts[0])
        # The runner-up uncorrected already lost to the winner uncorrected (calib=auto's scores).
        theirs = self._bias_candidates(
            float_model, other.graph, ctx, scored and (*scored[:2], None), shifts[1], uncorrected=False
        )
        if not isinstance(own, list):
            return None, own
        if not isinstance(theirs, list):
            return None, self._adopt_correction(graph, own, *_first_that_holds(own, holds)) | {
                "runner_up": {"calib": runner_up, "scored_db": -np.inf}
            }
        for method, candidates in ((winner, own), (runner_up, theirs)):
            for candidate in candidates:
                candidate.label = f"{method}:{candidate.name}"
        # A tie keeps the winner's graph: the runner-up's candidates rank after its equals.
        tagged = sorted([(c, True) for c in own] + [(c, False) for c in theirs], key=lambda t: (-t[0].score, not t[1]))
        best, held = _first_that_holds([c for c, _ in tagged], holds)
        own_best, their_best = max(c.score for c in own), max(c.score for c in theirs)
        if any(c is best for c in own):
            return None, self._adopt_correction(graph, own, best, held) | {
                "runner_up": {"calib": runner_up, "scored_db": their_best}
            }
        self.calib, self._float_concats = runner_up, concats
        graph.nodes, graph.inputs, graph.outputs = other.graph.nodes, other.graph.inputs, other.graph.outputs
        return plan, self._adopt_correction(graph, theirs, best, held) | {
            "runner_up": {"calib": winner, "scored_db": own_best}
        }

    def _recover(self, float_model: ir.Model, graph: gs.Graph, scheme, observers, ctx: PassContext) -> dict | None:
        """The budget missed: the most sensitive layers go back to float until it holds (see
        edgec.quant.recovery); the winning layers join `fallback`, so the pipeline text replays it."""
        plans = {}

        def requantize(extra: set[str]) -> ir.Model:
            trial = float_model.copy()
            plans[id(trial)] = self._rewrite(
                trial.graph, scheme, observers, set(self.float_compute), set(self.fallback) | extra
            )
            return trial

        found = recovery.search(
            float_model, ir.Model(graph), requantize, list(ctx.samples), self.check_tolerance(), cache=ctx.cache
        )
        if found is None:
            return None
        if found["ok"] and not plans[id(found["model"])].nodes:
            # Every layer in float meets the budget trivially: an "-O int8, ok" that quantized
            # nothing is what users cannot tell from a real one. The all-int8 graph stays, and
            # its failed check says what missed.
            found["ok"], found["fallback"] = False, []
            ctx.warn("quantize: the budget holds only with every layer in float: no int8 model to keep")
            return found
        if found["ok"]:
            adopted = found["model"].graph
            graph.nodes, graph.inputs, graph.outputs = adopted.nodes, adopted.inputs, adopted.outputs
            found["plan"] = plans[id(found["model"])]
            self.fallback = tuple(self.fallback) + tuple(found["fallback"])
            worst = ", ".join(f"{name} ({db:g} dB)" for name, db in list(found["introduced_sqnr_db"].items())[:5])
            ctx.warn(
                f"quantize: all-int8 missed its budget ({'; '.join(found['before']['failures'][:1])}); kept "
                f"{len(found['fallback'])} most sensitive layers in float, worst first by the error each adds: {worst}"
            )
        return found

    def check_tolerance(self) -> Tolerance:
        budget = super().check_tolerance()
        if not self.headroom_db:
            return budget
        less_error = 10 ** (-self.headroom_db / 10)
        return replace(
            budget,
            min_sqnr_db=budget.min_sqnr_db + self.headroom_db,
            min_cosine=1 - (1 - budget.min_cosine) * less_error,
        )

    def settle(self, graph: gs.Graph, ctx: PassContext) -> None:
        """Make the measured choices now (weight range, calibration method, then the latency search) and fix
        them in the options, so the printed pipeline replays them exactly and accuracy control
        evaluates the layout the build will have."""
        ir.name_nodes(graph)
        if self.weight_range == "auto":
            # onnxruntime runs full-range weights without saturating on every x86 CPU in the u8 x u8
            # kernels edgec's sessions select there (runner.session_options); OpenVINO has no such mode.
            saturates = ctx.target is not None and ctx.target.int8_pair_sums_saturate and self.scheme == "openvino"
            self.weight_range = "reduced" if saturates else "full"
        if self.calib in ("auto", "per-layer"):
            self._choose_calibration(graph, ctx)
        if self.select == "latency":
            self._settle_selection(graph, ctx)
        elif self.select == "cost":
            self._settle_cost_selection(graph, ctx)

    def _choose_calibration(self, graph: gs.Graph, ctx: PassContext) -> None:
        from edgec import runner

        scheme = self.active_scheme()
        ir.infer_shapes(graph)
        per_tensor = self.calib == "per-layer"
        if per_tensor:
            self.calib = "auto"  # the model's method is auto's, on auto's samples
        _, scoring = _fit_and_score_split(ctx.calibration)
        samples, shared = _scoring_samples(scoring, ctx)
        observers = self.observers(graph, scheme, ctx)
        reference = runner.run_model_shared(ir.Model(graph), samples, ctx.cache if shared else None)
        scores, trials = {}, {}
        for method in ("percentile", "entropy", "mse", "minmax"):
            self.calib = method
            trial = ir.Model(graph).copy()
            plan = self._rewrite(trial.graph, scheme, observers, set(self.float_compute), set(self.fallback))
            scores[method] = _worst_output_db(_scoring_outputs(trial, samples, scheme), reference)
            trials[method] = (trial.graph, plan)
        # Methods the scoring samples cannot tell apart (oww-hey-jarvis: a saturated sigmoid score,
        # three methods at 51.7 dB on 8 samples) are told apart by how much they clip: new inputs
        # punish clipping (1024 held-out inputs: minmax 26.0 dB, percentile 24.9).
        coverage = _range_coverage(observers, self.percentile, scheme)
        ranked = sorted(scores, key=lambda m: (scores[m], coverage[m]), reverse=True)
        self.calib = ranked[0]
        close = len(ranked) > 1 and scores[ranked[1]] >= scores[ranked[0]] - JOINT_MARGIN_DB
        self._runner_up = ranked[1] if close else None
        self._calib_scores, self._calib_scored_on = scores, len(samples)
        self._scored = (samples, reference, None)
        if per_tensor and self._choose_per_layer(graph, scheme, ctx):
            return  # the build rewrites with the tensors' own methods, on the wider split
        self._chosen = (graph, self._rewrite_key, *trials[self.calib])
        self._scored = (samples, reference, scores[self.calib])

    def _choose_per_layer(self, graph: gs.Graph, scheme, ctx: PassContext) -> bool:
        """calib=per-layer after auto's choice for the model: each tensor's own method where a
        wider held-out share of the set gains (edgec.quant.per_layer; its ranges fitted without
        those samples: another calibration run). Whether any tensor changed; if none did, the
        build is calib=auto's to the byte."""
        from edgec import runner

        _, scoring = _fit_and_score_split(ctx.calibration, per_layer=True)
        observers = self.observers(graph, scheme, ctx, wide=True)
        samples = list(scoring)
        reference = runner.run_model(ir.Model(graph), samples)
        quantized = ir.Model(graph).copy()
        plan = self._rewrite(quantized.graph, scheme, observers, set(self.float_compute), set(self.fallback))
        levels = scheme.qrange[1] - scheme.qrange[0] + 1
        method_ranges = {
            name: {m: observers[name].range(m, self.percentile, levels) for m in observers_methods}
            for name in plan.tensors
            if name in observers
        }
        found = per_layer.search(graph, plan, quantized.graph, method_ranges, self.calib, scheme, samples, reference)
        methods = found.pop("methods")
        self._per_layer = found | {"changed": len(methods), "scored_on": len(samples)}
        self.calib_layers = tuple(f"{m}:{name}" for name, m in sorted(methods.items()))
        if methods:
            self._scored = (samples, reference, None)  # the bias correction's samples on the wider split
        return bool(methods)

    @property
    def _rewrite_key(self) -> tuple:
        """The options a rewrite of one graph depends on (calib=auto's winner is reused when equal)."""
        return (self.calib, self.calib_layers, self.weight_range, self.fallback, self.float_compute)

    def _settle_cost_selection(self, graph: gs.Graph, ctx: PassContext) -> None:
        rows = op_costs.table(ctx.target.name, self.scheme) if ctx.target is not None else None
        self.select = "all"
        if rows is None:  # no table for this target: every layer stays int8, as select=all
            return
        scheme = self.active_scheme()
        ir.infer_shapes(graph)
        nodes = [n for n in qdq.plan(graph, scheme, set(self.fallback)).nodes if n.op in COMPUTE_OPS]
        search = op_costs.cost_search(nodes, rows, FLOAT_WEIGHT_BUDGET)
        self.fallback = tuple(self.fallback) + tuple(search["fallback"])
        self._search = {"method": "cost table", **search}

    def _settle_selection(self, graph: gs.Graph, ctx: PassContext) -> dict:
        scheme = self.active_scheme()
        ir.infer_shapes(graph)
        observers = self.observers(graph, scheme, ctx)

        def rewrite(trial: gs.Graph, extra: set[str]) -> None:
            self._rewrite(trial, scheme, observers, set(self.float_compute), set(self.fallback) | extra)

        search = latency_search(graph, rewrite, qdq.plan(graph, scheme, set(self.fallback)).nodes, self.select_seconds)
        self.fallback = tuple(self.fallback) + tuple(search["fallback"])
        self.select = "all"
        self._search = {"method": "timed on this machine", **search}
        return search

    def _rewrite(
        self, graph: gs.Graph, scheme, observers: dict, float_compute: set[str], fallback: set[str]
    ) -> qdq.Plan:
        """Insert Q/DQ with the fallback layers entirely float and the float_compute layers reading
        int8-stored weights through DequantizeLinear."""
        plan = qdq.plan(graph, scheme, fallback | float_compute)
        self._first_layers = qdq.layers_reading_inputs(graph) if self.weight_range == "first" else set()
        levels = scheme.qrange[1] - scheme.qrange[0] + 1
        methods = self._layer_methods()
        ranges = {
            n: observers[n].range(methods.get(n, self.calib), self.percentile, levels)
            for n in plan.tensors
            if n in observers
        }
        mixed = qdq.mixed_concats(plan, ranges)
        if mixed:  # one int8 scale would erase the small quantity: the Concat stays float
            plan = qdq.plan(graph, scheme, fallback | float_compute | mixed)
            ranges = {n: r for n, r in ranges.items() if n in plan.tensors}
        self._float_concats = sorted(mixed)
        params = qdq.activation_ranges(graph, plan, ranges, scheme)
        qdq.channelwise_params(plan, params, observers, scheme)
        names = NameGen(graph)
        for node in plan.nodes:  # weights first: biases need the input's scale, by its old name
            self._quantize_constants(graph, node, params, scheme, names)
        for node in graph.nodes:
            if node.name in float_compute and node.op in COMPUTE_OPS and node.name not in fallback:
                qdq.quantize_weight_input(
                    graph, node, 1, qdq.weight_axis(node, self.per_channel), names, qmax=self._weight_qmax(node)
                )
        tensors = graph.tensors()
        for name in plan.tensors:
            if name in params:
                qdq.insert_activation_qdq(graph, tensors[name], *params[name], names)
        graph.toposort(recurse_subgraphs=False)
        return plan

    def observers(self, graph: gs.Graph, scheme, ctx: PassContext, wide: bool | None = None) -> dict:
        """Statistics of every tensor the plan without fallbacks quantizes (a superset of any
        plan with fallbacks), collected once per graph: accuracy control tries many fallback sets
        on the same graph. Of the fitting samples only (_fit_and_score_split): every choice is
        scored on the held-out ones, so the build ships the ranges that were scored. `wide`: with
        calib=per-layer's wider held-out share (default: the share this pass's options imply)."""
        exact = self.extremes == "exact"
        wide = self._per_layer_split if wide is None else wide
        nodes = tuple((n.op, n.name) for n in graph.nodes)
        key = ("quantize-observers", id(ctx.calibration), scheme.name, exact, wide, nodes)
        if key not in ctx.cache:
            full = qdq.plan(graph, scheme, set())
            fitting, _ = _fit_and_score_split(ctx.calibration, wide)
            ctx.cache[key] = collect.observe(
                ir.Model(graph), fitting, full.tensors, ctx.progress, exact_extremes=exact, channelwise=full.channelwise
            )
        return ctx.cache[key]

    @property
    def _per_layer_split(self) -> bool:
        """Whether the held-out samples are calib=per-layer's wider share (see PER_LAYER_SCORED): once
        it gave tensors their own methods, the bias correction scores on the samples it chose on."""
        return bool(self.calib_layers)

    def _weight_qmax(self, node: gs.Node) -> int:
        reduced = self.weight_range == "reduced" or node.name in self._first_layers
        return schemes.REDUCED_WEIGHT_QMAX if reduced else schemes.WEIGHT_QMAX

    def _quantize_constants(self, graph, node, params, scheme, names) -> None:
        if node.op in COMPUTE_OPS:
            input_params = params.get(node.inputs[0].name)
            qdq.widen_stored_weight(node, 1, self._weight_qmax(node))  # an imported int8 weight past the range
            axis = qdq.weight_axis(node, self.per_channel)
            has_bias = node.op in ("Conv", "ConvTranspose", "Gemm") and len(node.inputs) > 2
            # int32 bias goes with one input scale (a per-channel input keeps its bias float).
            int32_bias = has_bias and input_params is not None and scheme.output_qdq and np.ndim(input_params[0]) == 0
            bias = constant_value(node.inputs[2]) if int32_bias else None
            min_scale = None
            if bias is not None and bias.ndim == 1 and axis is not None:
                min_scale = schemes.bias_safe_weight_scale(bias, float(input_params[0]))
            weight_scale = qdq.quantize_weight_input(
                graph, node, 1, axis, names, min_scale, self._weight_qmax(node), self._weight_memo
            )
            if int32_bias:
                qdq.quantize_bias_input(graph, node, 2, input_params[0], weight_scale, names)
        elif node.op in ("Add", "Mul") and scheme.output_qdq:
            # A constant operand is quantized like an activation, so the op has an int8 kernel.
            for index, tensor in enumerate(node.inputs):
                values = constant_value(tensor) if isinstance(tensor, gs.Constant) else None
                if values is not None and np.issubdtype(values.dtype, np.floating):
                    scale, zero_point = schemes.activation_params(float(values.min()), float(values.max()), scheme)
                    q = np.clip(np.round(values / scale) + zero_point, *scheme.qrange).astype(scheme.np_dtype)
                    qdq._dequantized_input(graph, node, index, q, scale, zero_point, None, names, f"{tensor.name}_q")


def _check_ranges_data_free(graph: gs.Graph, observers: dict, ctx: PassContext) -> dict | None:
    """Calibrated ranges against what the folded BatchNorms' statistics predict (edgec.quant.
    range_check): a warning when the calibration samples look preprocessed unlike the training
    data. None when no BatchNorm statistics were recorded."""
    statistics = ctx.cache.get(range_check.CACHE_KEY)
    if not statistics:
        return None
    observed = {name: (o.min, o.max) for name, o in observers.items() if np.isfinite(o.min) and np.isfinite(o.max)}
    spans = range_check.compare(graph, observed, statistics)
    found = [span for span in spans if span.mismatched]
    if found:
        worst = found[0]
        message = (
            f"quantize: the calibration samples do not look like the data this model's BatchNorm "
            f"statistics were measured on: {len(found)} of {len(spans)} tensors span "
            f"{range_check.MISMATCH_FACTOR:g}x more or less than those predict (worst: {worst.tensor}, "
            f"[{worst.observed[0]:.3g}, {worst.observed[1]:.3g}] against [{worst.predicted[0]:.3g}, "
            f"{worst.predicted[1]:.3g}]); check the calibration preprocessing (scale, mean, channel order)"
        )
        if message not in ctx.warnings:  # accuracy control runs the pass again on the same data
            ctx.warn(message)
    return {
        "checked": len(spans),
        "mismatched": len(found),
        # observed / predicted span; near 1 when the samples are preprocessed as in training
        "median_span_ratio": round(float(np.median([s.ratio for s in spans])), 3) if spans else None,
        "worst": [{"tensor": m.tensor, "span_ratio": round(m.ratio, 3)} for m in found[:3]],
    }


@dataclass
class _Correction:
    """A fast-bias-correction candidate: which layers move ("none", "guarded", "all"), its
    score on the held-out samples, the corrected model, and the report's counts."""

    name: str
    score: float
    trial: ir.Model
    report: dict
    label: str = ""  # in the report's meets_budget: the name, or "method:name" when two methods compete

    def __post_init__(self):
        self.label = self.label or self.name


_CORRECTIONS = ("none", "guarded", "all")


def _in_order(candidates: list) -> list:
    return sorted(candidates, key=lambda c: _CORRECTIONS.index(c.name))


def _first_that_holds(ranked: list, holds) -> tuple:
    """(the first of `ranked` that meets the budget, or the first when none does or there is no
    budget to meet; {label: met} for each checked)."""
    held: dict[str, bool] = {}
    if holds is not None:
        for candidate in ranked:
            held[candidate.label] = holds(candidate.trial)
            if held[candidate.label]:
                return candidate, held
    return ranked[0], held


def _fit_and_score_split(calibration, per_layer: bool = False) -> tuple:
    """(samples to calibrate on, samples to score on). With enough data AUTO_SAMPLES spread over
    the set are held out: scored on the samples it was fitted to, percentile won on oww-hey-jarvis
    by fitting their outliers (61 dB in-sample) and then clipped a LayerNorm's 1/std on a quarter
    of new inputs, where minmax held. Spread, not the last ones: a set ordered by source would be
    scored on one source. Fewer samples: scored in-sample.
    The build keeps the ranges fitted without the held-out samples, the ones its choices were
    scored with: refitted on all, the chosen method was no longer the one scored (PP-LCNet, 32
    real crops, x86 without VNNI: minmax 21.9 dB on the 8 held out, 15.4 once they joined its
    fit; the joint correction then chose it in-sample: 14.8 dB on 445 new crops, 21.7 with the
    fitted ranges kept)."""
    count = len(calibration)
    if count < 2 * AUTO_SAMPLES:
        return calibration, calibration.subset(calibration.spread(AUTO_SAMPLES), "calib=auto scoring")
    scored = calibration.spread(_scored_count(calibration, per_layer))
    fitting = calibration.subset(sorted(set(range(count)) - set(scored)), "calib=auto fitting")
    return fitting, calibration.subset(scored, "calib=auto scoring")


def _scored_count(calibration, per_layer: bool = False) -> int:
    if len(calibration) < HELD_OUT_16_FROM:
        return AUTO_SAMPLES
    return max(AUTO_SAMPLES_LARGE, min(PER_LAYER_SCORED, len(calibration) // 4)) if per_layer else AUTO_SAMPLES_LARGE


def _scoring_samples(scoring, ctx: PassContext) -> tuple[list, bool]:
    """(samples to score on, whether they are the check samples themselves). The checks take
    their samples spread over the calibration set too; when these are the same samples, scoring on
    the check's own sample objects lets the float outputs and the adopted graph's be computed once
    for the scoring, the bias correction's choice and the budget check (runner.run_model_shared)."""
    samples = list(scoring)
    checks = list(ctx.samples or ())
    same = len(checks) == len(samples) and all(
        feeds.keys() == check.keys() and all(np.array_equal(feeds[k], check[k]) for k in feeds)
        for feeds, check in zip(samples, checks)
    )
    return (checks, True) if same else (samples, False)


def _range_coverage(observers: dict, percentile: float, scheme) -> dict[str, float]:
    """Per calibration method, the mean share of each tensor's observed min-max span its range
    keeps (1.0: clips nothing)."""
    levels = scheme.qrange[1] - scheme.qrange[0] + 1
    shares: dict[str, list[float]] = {m: [] for m in ("percentile", "entropy", "mse", "minmax")}
    for observer in observers.values():
        lo, hi = observer.range("minmax", percentile, levels)
        if hi - lo <= 0:
            continue
        for method, kept in shares.items():
            a, b = observer.range(method, percentile, levels)
            kept.append((b - a) / (hi - lo))
    return {m: float(np.mean(v)) if v else 1.0 for m, v in shares.items()}


def _scoring_outputs(model: ir.Model, samples: list, scheme) -> list[dict]:
    """A candidate's outputs (calib=auto's methods, the bias corrections) in onnxruntime's fused
    int8 kernels: 4x faster runs than the exact Q/DQ graph (ResNet-50 -O int8: 41.8 -> 31.3 CPU
    s in all, the same choices, every score within 0.05 dB), and the kernels the onnx backend
    deploys to. Their requantization rounds unlike the Q/DQ graph's float arithmetic; the checks
    stay exact. The candidate gets protect-float-layers first (exact), as the onnx backend gives
    it, so its float layers stay float.
    Schemes without Q/DQ on layer outputs (openvino, tensorrt) give onnxruntime nothing to fuse
    into int8 kernels: those candidates run on dequantized weights with the float fusions on and
    onnxruntime's Q/DQ fusions off (runner.run_model float_weights; ResNet-50, openvino backend:
    139 -> 80 ms a sample). The Q/DQ graph's arithmetic up to float32 summation order, which
    flips a few activation roundings: 48 dB from the exact run (the weights-dequantized-per-run
    session before: 48 dB too); bench SQNR LeNet-5 43.4 -> 43.0, MobileNetV2 32.7 -> 32.7,
    PP-LCNet 32.8 -> 32.8."""
    from edgec import runner

    if not scheme.output_qdq:
        return runner.run_model(model, samples, optimize=True, float_weights=True)
    protected = model.copy()
    ProtectFloatLayersPass().run(protected.graph, PassContext())
    return runner.run_model(protected, samples, optimize=True)


def _worst_output_db(outputs: list[dict], reference: list[dict]) -> float:
    """The lowest SQNR over the model's outputs (calib=auto and weight_range=auto score by it)."""
    from edgec.quant import evaluation

    return round(evaluation.worst_output_db(outputs, reference), 2)
