"""Latency at batch 1 for each runtime, measured the same way: median of block medians."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np

WARMUP = 30
# A block of a slow row (untuned TVM runs PP-LCNet in ~85 ms) stops at this many seconds, with
# at least MIN_RUNS calls, so one row cannot take minutes.
BLOCK_SECONDS = 3.0
MIN_RUNS = 20


def median_us(call: Callable[[], object], runs: int, blocks: int = 3) -> float:
    """Median of `blocks` medians of `runs` calls: one slow stretch of a shared machine cannot
    decide a row."""
    start = time.perf_counter()
    for _ in range(WARMUP):
        call()
    per_call = (time.perf_counter() - start) / WARMUP
    runs = max(MIN_RUNS, min(runs, int(BLOCK_SECONDS / per_call)))
    medians = []
    for _ in range(blocks):
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        medians.append(statistics.median(times))
    return statistics.median(medians) * 1e6


def onnxruntime_call(path: Path, feeds: dict[str, np.ndarray], threads: int) -> Callable[[], object]:
    import onnxruntime as ort

    from edgec import unsaturated_int8

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), unsaturated_int8.configure(options), providers=["CPUExecutionProvider"])
    return lambda: session.run(None, feeds)


def tflite_call(path: Path, feeds: dict[str, np.ndarray], info: dict, threads: int) -> Callable[[], object]:
    """LiteRT's interpreter with its default XNNPACK delegate; inputs converted to the file's
    layout and type once, outside the timed call."""
    from edgec.backends.tflite import native_stderr_silenced, to_port
    from ai_edge_litert.interpreter import Interpreter

    with native_stderr_silenced():
        interpreter = Interpreter(model_path=str(path), num_threads=threads)
        interpreter.allocate_tensors()
    details = {d["name"]: d for d in interpreter.get_input_details()}
    for port in info["inputs"]:
        interpreter.set_tensor(details[port["name"]]["index"], to_port(feeds[port["name"]], port))
    outputs = [d["index"] for d in interpreter.get_output_details()]

    def call():
        interpreter.invoke()
        return [interpreter.get_tensor(i) for i in outputs]

    return call


def openvino_call(path: Path, feeds: dict[str, np.ndarray], threads: int, precision: str) -> Callable[[], object]:
    """OpenVINO's CPU plugin in latency mode; `precision` "f32" pins the inference precision (what
    edgec validates), "default" leaves the plugin's choice (bf16 on CPUs with AVX-512 BF16/AMX)."""
    import openvino as ov

    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
    if precision == "f32":
        config["INFERENCE_PRECISION_HINT"] = "f32"
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    request = compiled.create_infer_request()
    for name, value in feeds.items():
        request.set_tensor(name, ov.Tensor(np.ascontiguousarray(value)))
    return request.infer


def tvm_call(path: Path, feeds: dict[str, np.ndarray], threads: int) -> Callable[[], object]:
    """The exported Relax module in the VM on tvm.cpu(); inputs copied in once, outside the timed
    call, as for the other runtimes. TVM's thread pool is resized in place."""
    import tvm
    from tvm import relax

    tvm.get_global_func("runtime.config_threadpool")(1, threads)  # 1 = big cores (all of them here)
    device = tvm.cpu()
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(path)), device)
    vm.set_input("main", *[tvm.runtime.tensor(np.ascontiguousarray(v), device) for v in feeds.values()])
    return lambda: vm.invoke_stateful("main")
