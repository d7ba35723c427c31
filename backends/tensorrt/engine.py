"""Builds a TensorRT engine from an edgec bundle, on the device that will run it.

Engines are specific to the GPU and the TensorRT version, so they cannot be built on the
development machine. edgec's TensorRT backend copies this file into every bundle as
build_engine.py; it needs only Python and TensorRT's bindings (JetPack installs both), and
reads engine.json, which the backend wrote: the ONNX to parse, the precision flags, the
calibration cache for implicit int8 and the input shapes.

    python3 build_engine.py [BUNDLE] [--workspace MB] [--output FILE]
    edgec build-engine BUNDLE [--workspace MB] [--output FILE]

It speaks both TensorRT APIs in use on Jetsons: 8.2 (JetPack 4.6, Jetson Nano) and 8.4-10.x,
which replaced max_workspace_size, build_engine and the explicit-batch flag. It is written for
Python 3.6, the python3 of JetPack 4.6 (Ubuntu 18.04): no `X | Y` or `list[int]` annotations,
no walrus, no `from __future__ import annotations`.
"""

import argparse
import json
import re
import shlex
import sys
from pathlib import Path
from typing import List, Optional, Union

PLAN_FILE = "engine.json"
DEFAULT_WORKSPACE_MB = 256  # a Jetson Nano shares its 4 GB between CPU and GPU

try:  # inside edgec a build error is an EdgecError: one line and exit code 2
    from edgec.errors import EdgecError as _Error
except ImportError:  # standalone on the device, where edgec need not be installed
    _Error = RuntimeError


class EngineBuildError(_Error):
    """Why no engine was built, in one line."""


def load_plan(bundle_dir: Union[str, Path]) -> dict:
    path = Path(bundle_dir) / PLAN_FILE
    if not path.is_file():
        raise EngineBuildError(f"{bundle_dir}: no {PLAN_FILE}; build the bundle with `--backend tensorrt`")
    return json.loads(path.read_text())


def trtexec_command(plan: dict, output: Optional[str] = None, workspace_mb: Optional[int] = None) -> str:
    """The trtexec command line that builds the same engine as build_engine()."""
    parts = ["trtexec", f"--onnx={plan['onnx']}", f"--saveEngine={output or plan['engine']}"]
    if plan["fp16"]:
        parts.append("--fp16")
    if plan["int8"]:
        parts.append("--int8")
    if plan["int8"] == "implicit":
        parts.append(f"--calib={plan['calibration_cache']}")
    dynamic = [p for p in plan["inputs"] if any(d is None for d in p["shape"])]
    if dynamic:
        parts.append("--shapes=" + ",".join(f"{p['name']}:{'x'.join(str(d) for d in _fixed(p))}" for p in dynamic))
    if workspace_mb:
        number = plan.get("tensorrt", {}).get("number", 0)
        modern = number >= 8400  # 8.4 renamed --workspace to --memPoolSize (MiB either way)
        parts.append(f"--memPoolSize=workspace:{workspace_mb}" if modern else f"--workspace={workspace_mb}")
    return " ".join(shlex.quote(p) for p in parts)


def build_engine(
    bundle_dir: Union[str, Path],
    workspace_mb: Optional[int] = None,
    output: Union[str, Path, None] = None,
    verbose: bool = False,
) -> Path:
    """Parse the bundle's ONNX with TensorRT, build with the planned flags, write the serialized
    engine (default BUNDLE/model.plan) and return its path."""
    bundle = Path(bundle_dir)
    plan = load_plan(bundle)
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise EngineBuildError(
            f"building an engine needs TensorRT's Python bindings ({exc}): run this on the device, "
            f"or there: {trtexec_command(plan, output and str(output), workspace_mb)}"
        ) from None
    logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(bundle / plan["onnx"])):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(
            f"TensorRT {trt.__version__} could not parse {plan['onnx']}: {errors[0] if errors else 'no reason given'}"
        )
    config = builder.create_builder_config()
    workspace = int(workspace_mb or plan.get("workspace_mb") or DEFAULT_WORKSPACE_MB) << 20
    if hasattr(config, "set_memory_pool_limit"):  # 8.4+
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    else:
        config.max_workspace_size = workspace
    if plan["fp16"]:
        config.set_flag(trt.BuilderFlag.FP16)
    if plan["int8"]:
        config.set_flag(trt.BuilderFlag.INT8)
    profile = _profile(builder, network, plan)
    if profile is not None:
        config.add_optimization_profile(profile)
    if plan["int8"] == "implicit":
        cache = (bundle / plan["calibration_cache"]).read_text()
        config.int8_calibrator = _cache_calibrator(trt, _with_version(cache, version_number(trt.__version__)))
        if profile is not None and hasattr(config, "set_calibration_profile"):
            config.set_calibration_profile(profile)
    serialized = _build(builder, network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT {trt.__version__} built no engine from {plan['onnx']} (its log says why)")
    out = Path(output) if output else bundle / plan["engine"]
    out.write_bytes(bytes(serialized))
    return out


def version_number(version: str) -> int:
    """The number TensorRT prints for itself (NV_TENSORRT_VERSION), as in calibration cache
    headers: major*1000 + minor*100 + patch before 10.0, major*10000 + minor*100 + patch since."""
    major, minor, patch = (int(p) for p in (version.split(".") + ["0", "0"])[:3])
    return major * (10000 if major >= 10 else 1000) + minor * 100 + patch


def _with_version(cache: str, number: int) -> str:
    """TensorRT does not use a cache whose header names another version (it would calibrate anew,
    with no data here); the scales do not depend on the version, so the header is made to match."""
    return re.sub(r"\ATRT-\d+-", f"TRT-{number}-", cache, count=1)


def _network_flags(trt) -> int:
    # Explicit batch is required for ONNX before 10.0 and the only mode (flag deprecated) after.
    if int(trt.__version__.split(".")[0]) >= 10:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)


def _fixed(port: dict) -> List[int]:
    """A port's shape with its run-time dimensions (batch) set to 1."""
    return [1 if d is None else int(d) for d in port["shape"]]


def _profile(builder, network, plan: dict):
    """An optimization profile pinning dynamic dimensions to the planned shape (batch 1)."""
    planned = {p["name"]: _fixed(p) for p in plan["inputs"]}
    profile, needed = builder.create_optimization_profile(), False
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = list(tensor.shape)
        if all(d >= 0 for d in shape):
            continue
        fixed = planned.get(tensor.name) or [1 if d < 0 else d for d in shape]
        profile.set_shape(tensor.name, fixed, fixed, fixed)
        needed = True
    return profile if needed else None


def _cache_calibrator(trt, cache: str):
    """An entropy calibrator that only hands TensorRT the cache: the scales were calibrated and
    checked by edgec, so there are no batches to feed."""

    class CacheCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self, data: bytes):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.data = data

        def get_batch_size(self):
            return 1

        def get_batch(self, names, *args):
            return None

        def read_calibration_cache(self, *args):
            return self.data

        def write_calibration_cache(self, cache, *args):
            return None

    return CacheCalibrator(cache.encode())


def _build(builder, network, config):
    if hasattr(builder, "build_serialized_network"):  # 8.0+; build_engine is gone in 10.0
        return builder.build_serialized_network(network, config)
    engine = builder.build_engine(network, config)
    return engine.serialize() if engine is not None else None


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Build the TensorRT engine of an edgec bundle on this device.")
    parser.add_argument("bundle", nargs="?", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument(
        "--workspace", type=int, metavar="MB", help=f"builder workspace (default {DEFAULT_WORKSPACE_MB})"
    )
    parser.add_argument("--output", type=Path, metavar="FILE", help="engine file (default BUNDLE/model.plan)")
    parser.add_argument("--verbose", action="store_true", help="TensorRT's verbose log")
    args = parser.parse_args(argv)
    try:
        path = build_engine(args.bundle, args.workspace, args.output, args.verbose)
    except EngineBuildError as exc:
        print(f"build_engine: error: {exc}", file=sys.stderr)
        return 2
    print(f"{path}: {path.stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
