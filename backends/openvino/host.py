"""Running a written IR on this host's CPU plugin: the build's check, the benchmark, the int8 proof."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Mapping

import numpy as np

DEVICE = "CPU"
# "f32": what the build's check compares with the IR (on CPUs with bf16 the plugin's default
# precision is bf16, which would fail a float32-level check); "default": what a deployment that
# sets no hint gets, measured by the benchmark.
PRECISIONS = ("f32", "default")
# Layers whose runtime precision says whether the plugin really computes in int8.
COMPUTE_LAYERS = ("Convolution", "Deconvolution", "FullyConnected", "MatMul")
INT8 = ("u8", "i8")


def compile_model(model, threads: int | None = None, precision: str = "f32"):
    """The IR (a model.xml path or an ov.Model) compiled for the CPU plugin with the latency
    hint; `threads` None keeps the plugin's default thread count."""
    import openvino as ov

    if precision not in PRECISIONS:
        raise ValueError(f"openvino runner precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    config = {"PERFORMANCE_HINT": "LATENCY"}
    if precision == "f32":
        config["INFERENCE_PRECISION_HINT"] = "f32"
        # On CPUs with VNNI/AMX the plugin quantizes the activations of layers with int8-stored
        # weights at run time (0.75% from the IR on a weight-only int8 MatMul): f32 means f32.
        config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = 0
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return ov.Core().compile_model(model if not isinstance(model, Path) else str(model), DEVICE, config)


class HostRunner:
    """Runs the compiled IR on IR-shaped inputs, returning float32 outputs keyed by the IR's
    output names. `properties` are the settings the plugin reports back it compiled with.

    Inputs of another shape than the file's static one (check samples stacked as a batch of 5)
    run on a copy reshaped to them, as an application would model.reshape() the IR."""

    def __init__(self, xml_path: Path, ports: Mapping[str, list[dict]], threads=None, precision="f32"):
        self._xml, self._threads, self._precision = Path(xml_path), threads, precision
        self._inputs = [(p["name"], np.dtype(p["dtype"])) for p in ports["inputs"]]
        self._outputs = [p["name"] for p in ports["outputs"]]
        self.compiled = compile_model(self._xml, threads, precision)
        self._session = _Session(self.compiled, self._inputs, self._outputs)
        self._reshaped: dict[tuple, _Session] = {}
        self.properties = {
            "INFERENCE_PRECISION_HINT": self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string(),
            "INFERENCE_NUM_THREADS": int(self.compiled.get_property("INFERENCE_NUM_THREADS")),
            "PERFORMANCE_HINT": str(self.compiled.get_property("PERFORMANCE_HINT")),
        }

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = [np.asarray(feeds[name]) for name, _ in self._inputs]
        if self._session.takes(values):
            return self._session.run(values)
        shapes = tuple(v.shape for v in values)
        if shapes not in self._reshaped:
            import openvino as ov

            model = ov.Core().read_model(self._xml)
            model.reshape({name: list(shape) for (name, _), shape in zip(self._inputs, shapes)})
            compiled = compile_model(model, self._threads, self._precision)
            self._reshaped[shapes] = _Session(compiled, self._inputs, self._outputs)
        return self._reshaped[shapes].run(values)


class _Session:
    """One compiled model and its infer request."""

    def __init__(self, compiled, inputs: list[tuple[str, np.dtype]], outputs: list[str]):
        self._request = compiled.create_infer_request()
        self._inputs = [(compiled.input(name), dtype) for name, dtype in inputs]
        self._outputs = [(name, compiled.output(name)) for name in outputs]
        dynamic = any(port.get_partial_shape().is_dynamic for port, _ in self._inputs)
        # Read once: turning an ov.Shape into a tuple costs ~30 us.
        self._shapes = None if dynamic else [tuple(port.get_shape()) for port, _ in self._inputs]

    def takes(self, values: list[np.ndarray]) -> bool:
        """Whether the inputs fit its shapes (any shape does where the model is dynamic)."""
        return self._shapes is None or [v.shape for v in values] == self._shapes

    def run(self, values: list[np.ndarray]) -> dict[str, np.ndarray]:
        import openvino as ov

        for value, (port, dtype) in zip(values, self._inputs):
            buffer = self._request.get_tensor(port).data
            if value.shape == buffer.shape:
                # Copying into the request's own buffer: passing a dict to infer() costs ~40 us
                # a call, as much as LeNet-5's whole inference.
                buffer[...] = value
            else:  # a dynamic dimension
                self._request.set_tensor(port, ov.Tensor(np.ascontiguousarray(value, dtype)))
        self._request.infer()
        return {name: self._request.get_tensor(port).data.astype(np.float32) for name, port in self._outputs}


def compute_precisions(compiled) -> dict[str, dict[str, int]]:
    """{layer type: {runtime precision: count}} of the compute layers the plugin runs, read from
    its runtime (execution) graph, e.g. {"Convolution": {"u8": 22}}."""
    found: dict[str, Counter] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        kind = info["layerType"].astype(str)
        if kind in COMPUTE_LAYERS:
            found.setdefault(kind, Counter())[info["runtimePrecision"].astype(str)] += 1
    return {kind: dict(sorted(counts.items())) for kind, counts in sorted(found.items())}


def int8_share(precisions: dict[str, dict[str, int]]) -> tuple[int, int]:
    """(compute layers running int8 kernels, compute layers)."""
    total = sum(sum(c.values()) for c in precisions.values())
    int8 = sum(n for c in precisions.values() for p, n in c.items() if p in INT8)
    return int8, total
