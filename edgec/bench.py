"""`edgec bench BUNDLE`: latency of a built artifact in its backend's own runtime on this host."""

from __future__ import annotations

import inspect
import json
import math
import time
from pathlib import Path

import numpy as np

from edgec.backend import Artifact
from edgec.errors import EdgecError
from edgec.registry import Registry

NCHW_FROM_NHWC = (0, 3, 1, 2)
MAX_INPUT_ELEMENTS = 1 << 28  # a bench input larger than this is a corrupt manifest, not a model


def _ir_inputs(manifest: dict, seed: int) -> dict[str, np.ndarray]:
    """Seeded inputs shaped as the IR takes them: an NHWC or int8 port is converted back by the
    runner, so NHWC shapes are turned to NCHW here and quantized ports get float values."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for port in manifest["inputs"]:
        shape = [d if type(d) is int and d > 0 else 1 for d in port["shape"]]
        if len(shape) > 8 or math.prod(shape) > MAX_INPUT_ELEMENTS:
            raise EdgecError(
                f"bench: input '{port['name']}' declares shape {shape[:8]}: over {MAX_INPUT_ELEMENTS:,} elements"
            )
        if port.get("layout") == "NHWC" and len(shape) == 4:
            shape = [shape[i] for i in NCHW_FROM_NHWC]
        try:
            dtype = np.dtype("float32" if "quantization" in port else port.get("dtype"))
        except TypeError:
            raise EdgecError(
                f"bench: input '{port['name']}' has dtype {port.get('dtype')!r}, not a numpy type"
            ) from None
        if dtype.kind not in "biuf":
            raise EdgecError(f"bench: input '{port['name']}' has dtype {dtype}, not a numeric type")
        if np.issubdtype(dtype, np.floating):
            feeds[port["name"]] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[port["name"]] = np.zeros(shape, dtype)
    return feeds


def load_artifact(directory: Path) -> tuple[dict, Artifact]:
    """The manifest (files verified against their sha256) and the artifact it describes."""
    from edgec.runtime import verified_manifest

    manifest = verified_manifest(directory)
    try:
        report = json.loads((directory / "report.json").read_text())
    except (OSError, ValueError, RecursionError) as exc:
        raise EdgecError(f"{directory}: no readable report.json ({type(exc).__name__})") from exc
    if not isinstance(report, dict) or not isinstance(report.get("artifact", {}), dict):
        raise EdgecError(f"{directory}: report.json is not an edgec report (a JSON object with an 'artifact' object)")
    files = [Path(name) for name in manifest["files"] if name not in ("report.json", "report.md")]
    return manifest, Artifact(manifest["backend"], Path(manifest["artifact"]), files, report.get("artifact", {}))


def bench(
    directory: str | Path,
    threads: int | None = 1,
    runs: int = 200,
    warmup: int = 20,
    seed: int = 0,
    precision: str | None = None,
) -> dict:
    """p50/p90/p99 latency (ms) at batch 1 through the backend's runner (which includes the
    host-side layout/dtype conversion of the inputs: a transpose or a rounding per call).
    `precision`: for runtimes that pick their own inference precision (OpenVINO: "f32", what the
    build was checked in, or "default", the plugin's choice such as bf16)."""
    directory = Path(directory)
    if runs < 1 or warmup < 0:
        raise EdgecError("bench: --runs must be >= 1 and --warmup >= 0")
    manifest, artifact = load_artifact(directory)
    backend = Registry().backend(manifest["backend"])
    ok, why = backend.available()
    if not ok:
        raise EdgecError(f"bench: backend '{backend.name}' {why}")
    if precision is not None and "precision" not in inspect.signature(backend.runner).parameters:
        raise EdgecError(f"bench: backend '{backend.name}' runs in one precision; --precision is for openvino")
    extra = {} if precision is None else {"precision": precision}
    run = backend.runner(artifact, directory, threads, **extra)
    feeds = _ir_inputs(manifest, seed)
    for _ in range(warmup):
        run(feeds)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run(feeds)
        times.append((time.perf_counter() - start) * 1e3)
    p50, p90, p99 = np.percentile(times, [50, 90, 99])
    return {
        "bundle": str(directory),
        "backend": backend.name,
        "runtime": backend.host_runtime or backend.name,
        "target": manifest["target"],
        "threads": threads,
        **({"precision": precision} if precision else {}),
        "runs": runs,
        "latency_ms": {"p50": round(float(p50), 4), "p90": round(float(p90), 4), "p99": round(float(p99), 4)},
    }
