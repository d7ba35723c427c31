"""Latency at batch 1 for each runtime, measured the same way: median of block medians."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np

WARMUP = 30


def median_us(call: Callable[[], object], runs: int, blocks: int = 3) -> float:
    """Median of `blocks` medians of `runs` calls: one slow stretch of a shared machine cannot
    decide a row."""
    for _ in range(WARMUP):
        call()
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

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
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
