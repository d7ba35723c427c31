"""Running a compiled module in TVM's Relax VM on this host's CPU, as a device's TVM runtime would."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from edgec.backend import Runner
from edgec.errors import EdgecError

# TVM's AffinityMode kSpecifyThreadShareAllCore: `threads` workers that share the listed cores.
# kBig (1) would pin the calling thread, and with it the rest of the Python process, to one core.
_SHARE_ALL_CORES = -3


def set_threads(threads: int | None) -> None:
    """TVM's one process-wide thread pool (TVM_NUM_THREADS is read only when the pool starts, so
    the runtime's config function is what can change it later). Only tuned kernels have
    parallel loops; untuned ones run on one core whatever this says."""
    if threads is None:
        return
    if threads < 1:
        raise EdgecError(f"threads must be >= 1, not {threads}")
    import tvm

    cores = [str(c) for c in sorted(os.sched_getaffinity(0))]
    tvm.get_global_func("runtime.config_threadpool")(_SHARE_ALL_CORES, threads, cores)


def load(path: Path):
    import tvm

    try:
        return tvm.runtime.load_module(str(path))
    except Exception as exc:
        raise EdgecError(f"{path.name}: TVM cannot load it: {str(exc).strip().splitlines()[-1][:200]}") from exc


def vm_runner(module, inputs: list[dict], outputs: list[dict], threads: int | None = None) -> Runner:
    """A runner over a loaded library (or an in-memory executable) on tvm.cpu(): IR-shaped
    inputs in, the IR's output names out."""
    import tvm
    from tvm import relax

    set_threads(threads)
    vm = relax.VirtualMachine(module, tvm.cpu())
    main = vm["main"]

    def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [tvm.runtime.tensor(_port_value(feeds, port)) for port in inputs]
        result = main(*args)
        values = [result] if isinstance(result, tvm.runtime.Tensor) else list(result)
        return {port["name"]: value.numpy() for port, value in zip(outputs, values)}

    return run


def _port_value(feeds: Mapping[str, np.ndarray], port: dict) -> np.ndarray:
    if port["name"] not in feeds:
        raise EdgecError(f"no value for input '{port['name']}'")
    value = np.ascontiguousarray(feeds[port["name"]], dtype=port["dtype"])
    if list(value.shape) != port["shape"]:
        raise EdgecError(
            f"input '{port['name']}' has shape {list(value.shape)}; the TVM module is built for {port['shape']} "
            "(static shapes: rebuild with --input-shape for another)"
        )
    return value
