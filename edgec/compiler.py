"""The build: load, run the pipeline with checks, lower with the target's backend, write the bundle."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

import edgec
from edgec.calib import preprocess as preprocessing
from edgec import calib as calib_module  # `calib` is compile()'s argument
from edgec import blas, bundle, freeze, frontends, ir, noise_floor, pipeline_text, presets, samples as sampling
from edgec.backend import Artifact, Backend
from edgec.compare import Comparison, Tolerance, compare
from edgec.errors import CheckFailed, EdgecError, InternalError, PipelineError
from edgec.instruments import AccuracyMeter, DumpIR, EquivalenceCheck, Preflight, ProgressDisplay, Timing
from edgec.ir import iter_nodes
from edgec.pass_infra import Numerics, Pass, PassContext
from edgec.pass_manager import Instrument, PassManager
from edgec.quant import op_costs, rounding_noise
from edgec.registry import Registry
from edgec.report import build_report, render_markdown
from edgec.targets import Target

DEFAULT_OPT = "2"
STATE_KEY = "edgec.state_variables"  # written by the TFLite frontend for resource variables
# Passes whose output only a backend with a weight container (edgec.compress.container) can store.
WEIGHT_CONTAINER_PASSES = ("huffman",)


@dataclass
class BuildResult:
    output_dir: Path
    report: dict
    manifest: dict
    model: ir.Model
    artifact: Artifact

    @property
    def ok(self) -> bool:
        return bool(self.report["ok"])


@dataclass
class Plan:
    """What will run, decided before any model is loaded (so --print-pipeline needs no model)."""

    registry: Registry
    target: Target
    backend: Backend
    passes: list[Pass]
    notes: list[str]

    @property
    def pipeline(self) -> str:
        return pipeline_text.format([p.spec(full=True) for p in self.passes])


def plan(
    target: str | Target = "x86-64",
    opt: str | None = None,
    passes: str | None = None,
    backend: str | None = None,
    plugins: Sequence[str] = (),
    registry: Registry | None = None,
    train: bool = False,
    backend_options: Mapping[str, Any] | None = None,
    measure_latency: bool = False,
) -> Plan:
    """`train`: training data will be there, so presets may include fine-tuning;
    `backend_options`: settings of the chosen backend (e.g. tflite's keep_layout, io_dtype);
    `measure_latency`: -O int8 times layer choices on this machine instead of predicting them."""
    if opt is not None and passes is not None:
        raise PipelineError("give -O or --passes, not both")
    registry = registry or Registry()
    for plugin in plugins:
        registry.load_plugin(plugin)
    target_profile = target if isinstance(target, Target) else registry.target(target)
    chosen, notes = choose_backend(registry, target_profile, backend)

    def pipeline_for(chosen: Backend) -> list[Pass]:
        chosen.configure(backend_options or {})
        select = "cost" if op_costs.table(target_profile.name, chosen.quant_scheme) is not None else "all"
        if measure_latency:
            if not (target_profile.detect_host and chosen.name == "onnx"):
                raise EdgecError(
                    "--measure-latency times onnxruntime on this machine: it needs a target that is this "
                    f"machine (x86-64) and --backend onnx, not {target_profile.name} with {chosen.name}"
                )
            select = "latency"
        text = passes if passes is not None else presets.expand(opt or DEFAULT_OPT, chosen.quant_scheme, select, train)
        return registry.build_pipeline(text)

    pipeline = pipeline_for(chosen)
    coded = [p.name for p in pipeline if p.name in WEIGHT_CONTAINER_PASSES]
    if coded and not chosen.weight_container and not backend:
        notes.append(
            f"backend '{chosen.name}' cannot store {coded[0]}-coded weights; wrote ONNX + the weight container "
            "instead (decoded by edgec.runtime; use --backend to insist)"
        )
        chosen = registry.backend("onnx")
        pipeline = pipeline_for(chosen)
    return Plan(registry, target_profile, chosen, pipeline, notes + registry.warnings)


def _prepare(build: Plan, model: ir.Model) -> set[str]:
    """Put the rewrites this model needs before the backend can take it at the head
    (Backend.prepare_passes) and the tail (Backend.legalize_passes) of the pipeline, unless the
    given pipeline already starts or ends with them. Returns the head's pass names: the backend
    is asked whether it can take the model only after them (Preflight)."""
    text = build.backend.prepare_passes(build.target, model.graph)
    prepare = build.registry.build_pipeline(text) if text else []
    if prepare and [p.name for p in build.passes[: len(prepare)]] != [p.name for p in prepare]:
        build.passes[:0] = prepare
    text = build.backend.legalize_passes(build.target, model.graph, [p.name for p in build.passes])
    legalize = build.registry.build_pipeline(text) if text else []
    if legalize and [p.name for p in build.passes[-len(legalize) :]] != [p.name for p in legalize]:
        build.passes.extend(legalize)
    return {p.name for p in prepare}


def choose_backend(registry: Registry, target: Target, requested: str | None) -> tuple[Backend, list[str]]:
    """The requested backend, or the target's most preferred one that edgec has and can run."""
    if requested:
        backend = registry.backend(requested)
        ok, why = backend.available()
        if not ok:
            raise EdgecError(f"backend '{requested}' {why}")
        return backend, []
    skipped = []
    for name in target.backends:
        if name in registry.backends:
            backend = registry.backend(name)
            ok, why = backend.available()
            if ok:
                notes = [f"backend '{name}' chosen; preferred before it: {', '.join(skipped)}"] if skipped else []
                return backend, notes
            skipped.append(f"{name} ({why})")
        else:
            skipped.append(f"{name} (not built into this edgec yet)")
    backend = registry.backend("onnx")
    return backend, [f"none of {target.name}'s backends is available ({'; '.join(skipped)}); wrote ONNX instead"]


@blas.single_threaded
def compile(  # noqa: A001 - the public name mirrors the command
    model: Any,
    target: str | Target = "x86-64",
    opt: str | None = None,
    passes: str | None = None,
    output_dir: str | Path | None = None,
    *,
    backend: str | None = None,
    plugins: Sequence[str] = (),
    dump_dir: str | Path | None = None,
    keep_going: bool = False,
    inputs: str | Path | Sequence[Mapping] | None = None,
    calib: str | Path | None = None,
    preprocess: str | None = None,
    max_drop: float | None = None,
    min_sqnr: float | None = None,
    eval: str | Path | None = None,  # noqa: A002 - mirrors --eval
    holdout: float = 0.3,
    train: str | Path | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    input_dtypes: Mapping[str, str] | None = None,
    example_inputs: Any = None,
    num_samples: int = sampling.DEFAULT_COUNT,
    seed: int = sampling.DEFAULT_SEED,
    progress: bool = False,
    registry: Registry | None = None,
    backend_options: Mapping[str, Any] | None = None,
    force: bool = False,
    frozen_inputs: Mapping[str, Any] | None = None,
    measure_latency: bool = False,
    _rebuilt_because: str | None = None,
) -> BuildResult:
    """Compile `model` for `target` and write the bundle to `output_dir` (default build/<model>-<target>/).

    `model` is a path (.onnx, TorchScript .pt, .tflite), "zoo:<name>", an onnx.ModelProto, an
    edgec.ir.Model or a torch.nn.Module with `example_inputs`. `calib` is calibration data for
    passes that need it (see edgec.calib), `preprocess` the image preprocessing spec for it;
    `train` is training data for fine-tuning (labelled .npz or class folders, see --train).
    `backend_options` are settings of the chosen backend (see `edgec backends`); `frozen_inputs`
    binds inputs to fixed values ({"sr": 16000}, see edgec.freeze). `measure_latency`: -O int8 on this
    machine's onnxruntime times which layers stay float (the default predicts it from a cost table).
    Raises EdgecError on bad input and CheckFailed when a numeric check fails (unless
    keep_going, which records it in the report).

    An int8 artifact whose backend kernels run further from float than the Q/DQ IR allows is
    built once more with that much headroom in the quantize budget (more layers in float; see
    headroom_pipeline), and that artifact is judged by the budget itself.
    """
    start = time.perf_counter()
    arguments = {k: v for k, v in locals().items() if k != "start"}  # for that one rebuild
    if not 1 <= num_samples <= sampling.MAX_COUNT:
        raise EdgecError(f"num_samples must be between 1 and {sampling.MAX_COUNT:,}, not {num_samples}")
    if not 0 < holdout < 1:
        raise EdgecError(f"holdout must be a share between 0 and 1, not {holdout}")
    build = plan(
        target, opt, passes, backend, plugins, registry, train=train is not None, backend_options=backend_options,
        measure_latency=measure_latency,
    )
    loaded = frontends.load(model, input_shapes, input_dtypes, example_inputs)
    work = loaded.model
    if frozen_inputs:
        build.notes.extend(freeze.freeze_inputs(work, frozen_inputs))
    ir.name_nodes(work.graph)  # fallback lists, reports and the latency search name layers
    preparing = _prepare(build, work)
    preprocess = preprocess or (loaded.zoo.preprocess if loaded.zoo is not None else None)
    if isinstance(preprocess, str):
        preprocess = preprocessing.parse(preprocess)  # errors early; the manifest gets the canonical text
    calibration = _calibration(calib, work, preprocess, build)
    training = _training(train, work, preprocess, build)
    evaluation_data = _labelled_eval(eval, work, preprocess) if max_drop is None and min_sqnr is None else None
    check_samples, sample_source = _samples(
        work,
        loaded.zoo,
        inputs,
        calibration,
        evaluation_data or training,
        num_samples,
        seed,
        lossy=any(p.numerics is Numerics.LOSSY for p in build.passes),
    )
    out = Path(output_dir) if output_dir else default_output_dir(work.source, build.target.name)
    bundle.check_destination(out, (model, calib, eval, train, inputs, dump_dir, *plugins), force)

    before = _measure(work)
    ctx = PassContext(
        target=build.target,
        samples=check_samples,
        calibration=calibration,
        training=training,
        teacher=work.copy() if training is not None else None,
        progress=progress,
        warnings=list(build.notes) + ([_rebuilt_because] if _rebuilt_because else []),
        metadata=dict(work.metadata),
    )
    if calibration is not None and not calibration.representative:
        ctx.warn(f"calibrating on {calibration.source}: accuracy will not be representative of real data")
    check = EquivalenceCheck(check_samples, keep_going=keep_going)
    control = _accuracy_control(work, calibration, preprocess, max_drop, min_sqnr, eval, holdout, seed, progress)
    meter = AccuracyMeter(evaluation_data) if evaluation_data is not None else None
    instruments = (
        ([ProgressDisplay()] if progress else [])
        + [Preflight(build.backend, build.target, after=preparing)]
        + ([DumpIR(dump_dir)] if dump_dir else [])
        + ([control] if control else [])
        + ([meter] if meter else [])
        + [check, Timing()]
    )
    manager = PassManager(build.passes, instruments)
    try:
        records = manager.run(work, ctx)
    except CheckFailed as failure:
        _write_failure_report(
            out, failure, manager.records, build, work, before, check_samples, sample_source, ctx, control, start
        )
        raise
    after = _measure(work)  # before the metadata below, so both sides count the same things
    work.metadata.update(ctx.metadata)  # what passes recorded for the backend (e.g. the weight container)
    work.metadata.update(
        {
            "edgec.version": edgec.__version__,
            "edgec.target": build.target.name,
            "edgec.backend": build.backend.name,
            "edgec.pipeline": build.pipeline,
        }
    )

    try:
        return _lower_and_write(
            out, force, build, work, records, check, check_samples, sample_source, ctx, before, after, start,
            control, meter, preprocess, keep_going,
        )
    except _BackendLostAccuracy as lost:
        try:
            return compile(**{**arguments, "opt": None, "passes": lost.pipeline, "_rebuilt_because": lost.why})
        except CheckFailed as again:
            # The rebuild's own failure alone would read as a budget nobody asked for.
            raise CheckFailed(f"{lost}; {lost.why}; that build failed too: {again}") from again


class _BackendLostAccuracy(CheckFailed):
    """The int8 artifact ran further from float than the backend's margin below the IR; `pipeline`
    builds again with quantize{headroom_db} (more layers in float), `why` says so in the report."""

    def __init__(self, message: str, pipeline: str, why: str):
        super().__init__(message)
        self.pipeline, self.why = pipeline, why


def headroom_pipeline(pipeline: str, backend_check: Comparison) -> tuple[str, float] | None:
    """(pipeline text, headroom dB) for a rebuild whose Q/DQ graph beats the quantize budget by what
    the backend's kernels lost against it, or None: no output fell short against float, no
    quantize pass that may keep layers in float, or it had headroom already. OpenVINO's
    low-precision transformations ran PP-OCRv4's recognizer 1.4 dB further from float than its
    Q/DQ IR (13.8 dB, just inside the 12 dB / cosine 0.98 budget); with LP_TRANSFORMS_MODE=NO
    the plugin matched the IR within 0.01 dB, and rounding-noise copies of the IR stayed within
    13.7-14.1 dB: the int8 kernels, not chance."""
    lost = [
        r["reference_sqnr_db"] - r["sqnr_db"]
        for r in backend_check.vs_float or []
        if r["sqnr_db"] < r["required_sqnr_db"] and math.isfinite(r["reference_sqnr_db"] - r["sqnr_db"])
    ]
    specs = pipeline_text.parse(pipeline)
    places = [i for i, spec in enumerate(specs) if spec.name == "quantize"]
    if not lost or len(places) != 1:
        return None
    options = specs[places[0]].option_dict()
    if options.get("recover", "true") != "true" or float(options.get("headroom_db", 0)) > 0:
        return None
    headroom = math.ceil(max(lost) * 10) / 10
    options["headroom_db"] = f"{headroom:g}"
    specs[places[0]] = pipeline_text.PassSpec("quantize", tuple(options.items()))
    return pipeline_text.format(specs), headroom


def _lower_and_write(
    out, force, build, work, records, check, check_samples, sample_source, ctx, before, after, start, control, meter,
    preprocess, keep_going,
) -> BuildResult:
    """Lower to the backend's artifact in a staging directory, check it against the IR and commit
    the bundle (artifact, report, manifest) in place of `out`. A quantize pass with headroom (a
    rebuild's, or its printed pipeline replayed) has its artifact judged by the budget too."""
    quantize = next((p for p in build.passes if p.name == "quantize"), None)
    budget = quantize.tolerance if quantize is not None and getattr(quantize, "headroom_db", 0) > 0 else None
    with bundle.Staging(out, force=force) as stage:
        artifact = build.backend.lower(work, build.target, stage.path)
        ctx.warnings.extend(artifact.info.get("warnings", []))  # e.g. a precision the device cannot run fast
        backend_check = _check_backend(
            build.backend,
            artifact,
            stage.path,
            check_samples,
            check.previous,
            build.backend.check_tolerance(work),
            model=work,
            float_reference=check.original,
            budget=budget,
        )
        if not backend_check and not keep_going:
            message = f"backend '{build.backend.name}' output differs from the IR: {backend_check}"
            retry = headroom_pipeline(build.pipeline, backend_check)
            if retry is None:
                raise CheckFailed(message)
            raise _BackendLostAccuracy(
                message,
                retry[0],
                f"{build.backend.name}'s int8 kernels ran {retry[1]:g} dB further from float than the IR "
                f"({backend_check.failures[0]}): built again with quantize{{headroom_db={retry[1]:g}}}, which "
                "keeps more layers in float, and judged that artifact by the quantize budget against float",
            )
        artifact_bytes = sum((stage.path / f).stat().st_size for f in artifact.files)
        report = build_report(
            version=edgec.__version__,
            source=work.source,
            target=build.target.name,
            backend=build.backend.name,
            pipeline=build.pipeline,
            records=records,
            final_check=check.final,
            backend_check=backend_check,
            before=before,
            after=after,
            artifact_bytes=artifact_bytes,
            samples={"count": len(check_samples), "source": sample_source},
            warnings=ctx.warnings,
            seconds=time.perf_counter() - start,
            accuracy_control=control.report if control else None,
            accuracy=_accuracy_summary(meter, records),
            artifact=artifact.info,
        )
        bundle.write_json(stage.path / "report.json", report)
        (stage.path / "report.md").write_text(render_markdown(report))
        manifest = _manifest(
            work, build, artifact, stage.path, [Path("report.json"), Path("report.md")], records, preprocess
        )
        bundle.write_json(stage.path / "manifest.json", manifest)
        stage.commit()
    return BuildResult(out, report, manifest, work, artifact)


def _accuracy_summary(meter, records) -> dict | None:
    if meter is None:
        return None
    measured = [r.accuracy for r in records if r.accuracy is not None]
    final = measured[-1] if measured else meter.original
    return {"data": meter.data.source, "samples": len(meter.data), "original": meter.original, "final": final}


def _write_failure_report(out, failure, records, build, model, before, samples, sample_source, ctx, control, start):
    """A failed check still leaves report.json/report.md (no model, no manifest), so the failure
    and its per-layer precision table can be read; an existing build is replaced only by this."""
    report = build_report(
        version=edgec.__version__,
        source=model.source,
        target=build.target.name,
        backend=build.backend.name,
        pipeline=build.pipeline,
        records=records,
        final_check=None,
        backend_check=None,
        before=before,
        after=_measure(model),
        artifact_bytes=0,
        samples={"count": len(samples), "source": sample_source},
        warnings=ctx.warnings,
        seconds=time.perf_counter() - start,
        accuracy_control=control.report if control else None,
    )
    report["ok"], report["error"] = False, str(failure)
    with bundle.Staging(bundle.failure_dir(out), failure=True) as stage:
        bundle.write_json(stage.path / "report.json", report)
        (stage.path / "report.md").write_text(render_markdown(report))
        stage.commit()
    failure.report_dir = stage.destination


def _measure(model: ir.Model) -> dict[str, int]:
    """The before/after numbers of the report: serialized bytes, parameters, nodes."""
    return {
        "size": ir.serialized_size(model),
        "params": ir.param_count(model.graph),
        "nodes": sum(1 for _ in iter_nodes(model.graph)),
    }


def default_output_dir(source: str, target: str) -> Path:
    stem = Path(source.removeprefix(frontends.ZOO_PREFIX)).stem or "model"
    return Path("build") / f"{stem}-{target}"


def _calibration(spec, model: ir.Model, preprocess, build: Plan):
    needs = [p.name for p in build.passes if p.requires_calibration]
    if spec is None:
        if needs:
            raise EdgecError(
                f"{', '.join(needs)} needs calibration data: --calib DATA (.npz/.npy, a directory of arrays or "
                "images, plugin:FILE.py), or --calib random:N to try it without real data"
            )
        return None
    return calib_module.load(spec, model, preprocess)


def _training(spec, model: ir.Model, preprocess, build: Plan):
    needs = [p.name for p in build.passes if p.requires_training]
    if spec is None:
        if needs:
            raise EdgecError(
                f"{', '.join(needs)} needs training data: --train DATA (an .npz with the inputs and `labels`, "
                "or a directory of class subdirectories of images)"
            )
        return None
    from edgec.quant import evaluation

    data = evaluation.load(str(spec), model, preprocess)
    if len(data) < 2:
        raise EdgecError(f"{spec}: {len(data)} training samples")
    return data


def _labelled_eval(spec, model: ir.Model, preprocess):
    """--eval without an accuracy bound: top-1 accuracy measured after every lossy pass."""
    if spec is None:
        return None
    from edgec.quant import evaluation

    data = evaluation.load(str(spec), model, preprocess)
    if data.labels is None:
        raise EdgecError(
            f"{spec}: --eval without --max-drop/--min-sqnr reports top-1 accuracy per pass and needs labels"
        )
    return data


def _accuracy_control(model, calibration, preprocess, max_drop, min_sqnr, eval_spec, holdout, seed, progress):
    if max_drop is None and min_sqnr is None:
        return None
    from edgec.quant import evaluation
    from edgec.quant.accuracy import AccuracyControl, Bound

    if eval_spec is not None:
        data = evaluation.load(str(eval_spec), model, preprocess)
    elif calibration is not None:
        data = evaluation.EvalSet(list(calibration), None, f"{calibration.source} (unlabelled)")
    else:
        raise EdgecError("--max-drop needs data to measure on: --eval DATA (labelled for accuracy) or --calib DATA")
    return AccuracyControl(data, Bound(max_drop, min_sqnr), holdout, seed, progress)


# Lossy checks judge top-1 agreement and SQNR: worth more than a couple of samples.
CHECK_SAMPLES_FROM_CALIBRATION = 16
# Compression's checks judge decisions (top-1 agreement), which takes a few hundred samples.
CHECK_SAMPLES_FROM_DATASET = 256


def _samples(
    model: ir.Model, zoo, inputs, calibration, dataset, count: int, seed: int, lossy: bool
) -> tuple[list[dict], str]:
    if inputs is not None:
        if isinstance(inputs, (str, Path)):
            return sampling.load_samples(inputs, model), f"file {inputs}"
        return sampling.samples_from_arrays(sampling.stack(list(inputs)), model, "inputs"), "given"
    if calibration is not None:
        taken = calibration.take_spread(max(count, CHECK_SAMPLES_FROM_CALIBRATION))
        return taken, f"{len(taken)} samples spread over calibration ({calibration.source})"
    if dataset is not None:
        order = np.random.default_rng(seed).permutation(len(dataset))[: max(count, CHECK_SAMPLES_FROM_DATASET)]
        return [dataset.samples[i] for i in sorted(order)], f"{len(order)} samples of {dataset.source}"
    if zoo is not None and zoo.samples is not None:
        # A lossy pass is judged by top-1 agreement: a handful of images cannot measure that.
        found = zoo.samples(max(count, CHECK_SAMPLES_FROM_DATASET) if lossy else count)
        if found:
            return sampling.samples_from_arrays(sampling.stack(found), model, f"zoo:{zoo.name}"), f"zoo:{zoo.name}"
    # A lossy pass on random inputs is judged by SQNR too: two samples missed SLANet's fp16 decoder
    # taking another path on 1 input in 8 (18 dB on held-out inputs, 60 dB on both check samples).
    count = max(count, CHECK_SAMPLES_FROM_CALIBRATION) if lossy else count
    return sampling.random_samples(model, count, seed), f"random (seed {seed})"


def _check_backend(
    backend: Backend,
    artifact: Artifact,
    stage: Path,
    samples: list[dict],
    expected: list[dict],
    tolerance,
    model: ir.Model | None = None,
    float_reference: list[dict] | None = None,
    budget: Tolerance | None = None,
) -> Comparison:
    """The artifact run by the backend's own runtime must match the IR's outputs; with `budget`
    (a rebuild with headroom), an artifact that does not may still meet that budget against float."""
    try:
        run = backend.runner(artifact, stage)
        outputs = [run(feeds) for feeds in samples]
    except Exception as exc:
        # What edgec wrote and cannot run is edgec's bug, not the user's input.
        raise InternalError(f"backend '{backend.name}' could not run what it wrote: {exc}") from exc
    # int8 artifacts are judged by their error against the float model next to the Q/DQ IR's.
    check = compare(expected, outputs, tolerance, f"IR (backend {backend.name})", float_reference=float_reference)
    if model is not None and float_reference is not None:
        # An int8 artifact that only rounds the IR's near-ties the other way, on a model that
        # amplifies them, is judged against the IR's own spread (edgec.quant.rounding_noise).
        check = rounding_noise.rejudge(check, model, samples, float_reference, outputs, expected)
    # A float artifact's runtime reassociates like an exact pass does: same noise-floor rule.
    check = noise_floor.rejudge(check, model, samples, expected, outputs) if model is not None else check
    if not check and budget is not None and float_reference is not None:
        judged = compare(float_reference, outputs, budget, "float (the quantize budget, after the rebuild)")
        if judged:
            return judged
    return check


def _manifest(
    model: ir.Model, build: Plan, artifact: Artifact, root: Path, extra: list[Path], records, preprocess
) -> dict:
    # What the backend's file itself reads and writes (NHWC, int8...) overrides the IR's view.
    ports = {p["name"]: p for p in artifact.info.get("inputs", []) + artifact.info.get("outputs", [])}

    def spec(s: dict) -> dict:
        return {**s, "layout": ir.port_layout(model, s["name"]), **ports.get(s["name"], {})}

    inputs = [spec(s) for s in model.input_specs()]
    if preprocess and len(inputs) == 1:
        inputs[0]["preprocess"] = str(preprocess)
    quantization = [
        {"pass": r.name, **{k: r.stats[k] for k in ("scheme", "activations", "calib") if k in r.stats}}
        for r in records
        if r.modified and r.numerics == "lossy"
    ]

    return {
        "format": bundle.MANIFEST_FORMAT,
        "format_version": bundle.MANIFEST_VERSION,
        "edgec_version": edgec.__version__,
        "source": model.source,
        "target": build.target.name,
        "backend": build.backend.name,
        "artifact": str(artifact.main),
        "pipeline": build.pipeline,
        "inputs": inputs,
        "quantization": quantization,
        "outputs": [spec(s) for s in model.output_specs()],
        "files": bundle.file_table(root, list(artifact.files) + extra),
        # A streaming model's variables as explicit ports: feed each step's state_out back as state_in.
        **({"state": json.loads(model.metadata[STATE_KEY])} if STATE_KEY in model.metadata else {}),
        **({"notes": artifact.info["notes"]} if artifact.info.get("notes") else {}),
    }


class _BeforeLossy(Instrument):
    """Keeps a copy of the model as it was before each lossy pass, for the precision debugger."""

    def __init__(self):
        self.before: dict[int, ir.Model] = {}

    def before_pass(self, pass_, record, model, ctx):
        if pass_.name == "quantize":
            self.before[record.index] = model.copy()


def debug_precision(
    model: Any,
    target: str | Target = "x86-64",
    opt: str | None = "int8",
    passes: str | None = None,
    *,
    calib: str | Path,
    preprocess: str | None = None,
    output_dir: str | Path | None = None,
    samples: int = 32,
    plugins: Sequence[str] = (),
    progress: bool = False,
) -> dict:
    """Quantize as a build would, then compare every quantized activation with float32 (see
    edgec.quant.debug). Writes debug_precision.{json,md,png} and returns the JSON."""
    from edgec.quant import debug

    build = plan(target, None if passes else opt, passes, None, plugins)
    if not any(p.name == "quantize" for p in build.passes):
        raise EdgecError("debug-precision needs a pipeline with quantize (-O int8)")
    loaded = frontends.load(model)
    work = loaded.model
    ir.name_nodes(work.graph)
    preprocess = preprocess or (loaded.zoo.preprocess if loaded.zoo is not None else None)
    calibration = calib_module.load(calib, work, preprocess)
    ctx = PassContext(target=build.target, calibration=calibration, progress=progress)
    snapshot = _BeforeLossy()
    PassManager(build.passes, [snapshot]).run(work, ctx)
    float_model = next(iter(snapshot.before.values()))
    rows = debug.analyze(float_model, work, calibration.take_spread(samples))
    out = Path(output_dir) if output_dir else default_output_dir(work.source, "debug-precision")
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "model": work.source,
        "pipeline": build.pipeline,
        "samples": min(samples, len(calibration)),
        "layers": rows,
    }
    bundle.write_json(out / "debug_precision.json", result)
    (out / "debug_precision.md").write_text(
        f"# Precision debug: {work.source}\n\nPipeline: `{build.pipeline}`\n\nWorst layers first "
        f"(introduced = the layer's own error with float32 inputs).\n\n{debug.format_table(rows)}\n"
    )
    debug.plot(rows, out / "debug_precision.png", f"int8 vs float32 per quantized tensor: {work.source}")
    result["files"] = [str(out / n) for n in ("debug_precision.json", "debug_precision.md", "debug_precision.png")]
    return result
