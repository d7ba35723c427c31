"""The ONNX backend: writes the optimized IR as model.onnx and validates it in onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path

import onnx

from edgec import ir, unsaturated_int8
from edgec import runtime as edgec_runtime
from edgec.compress import container, storage
from edgec.backend import Artifact, Backend, Runner


class OnnxBackend(Backend):
    name = "onnx"
    summary = "ONNX model for onnxruntime (any device with an onnxruntime build)"
    requires = ("onnxruntime",)
    install_hint = "pip install onnxruntime"
    weight_container = True
    host_runtime = "onnxruntime"

    def legalize_passes(self, target, graph, pipeline=()) -> str:
        # onnxruntime quantizes a float Conv/Gemm reading a per-tensor DequantizeLinear to per-tensor
        # int8 (WeightBiasQuantization): layers -O int8 (or the model's own Q/DQ) left float.
        layers = any(n.op in ("Conv", "ConvTranspose", "Gemm") for n in ir.iter_nodes(graph))
        quantized = "quantize" in pipeline or ir.compute_precision(graph) == "int8"
        return "protect-float-layers" if layers and quantized else ""

    def lower(self, model: ir.Model, target, out_dir: Path) -> Artifact:
        if storage.METADATA_KEY in model.metadata:
            return self._lower_compressed(model, out_dir)
        files = ir.save(model, out_dir / "model.onnx")
        info = {"opset": model.opset}
        if (why := _optimizer_refusal(model, out_dir / "model.onnx")) is not None:
            info["notes"] = [
                f"onnxruntime's graph optimizer refuses this model at its input shapes ({why}); it runs "
                "correctly unoptimized: edgec.runtime.load does so, your own sessions need "
                "graph_optimization_level=ORT_DISABLE_ALL"
            ]
        if ir.compute_precision(model.graph) == "int8":
            _ready_for_unsaturated_int8(out_dir / "model.onnx")
        if ir.compute_precision(model.graph) == "int8" and target.int8_pair_sums_saturate:
            info.setdefault("notes", []).append(
                "on x86 CPUs without VNNI, onnxruntime's default int8 kernels saturate 16-bit pair sums on "
                "full-range int8 weights: edgec.runtime.load sets the session config entry "
                "session.x64quantprecision=1 there (u8 x u8 kernels), and your own sessions need it too"
            )
        return Artifact(self.name, Path("model.onnx"), [f.relative_to(out_dir) for f in files], info=info)

    def _lower_compressed(self, model: ir.Model, out_dir: Path) -> Artifact:
        """model.onnx without the big weights, and model.ecw holding them entropy-coded."""
        spec = json.loads(model.metadata[storage.METADATA_KEY])
        tensors = storage.container_tensors(model.graph, spec["min_elements"])
        model.metadata[storage.METADATA_KEY] = storage.describe(spec["coding"], spec["min_elements"], list(tensors))
        summary = container.write(
            out_dir / storage.FILE_NAME, {n: c.values for n, c in tensors.items()}, spec["coding"]
        )
        proto = model.to_onnx()
        edgec_runtime.strip_container_tensors(proto, set(tensors))
        onnx.save(proto, str(out_dir / "model.onnx"))
        return Artifact(
            self.name,
            Path("model.onnx"),
            [Path("model.onnx"), Path(storage.FILE_NAME)],
            info={"opset": model.opset, "weight_container": {"coding": spec["coding"], "tensors": summary}},
        )

    def runner(self, artifact: Artifact, out_dir: Path, threads: int | None = None) -> Runner:
        # Full graph optimizations, as a deployed onnxruntime session would run the file; through
        # edgec.runtime, which decodes a weight container the way a device would.
        return edgec_runtime.load(out_dir / artifact.main, threads=threads).run


def _ready_for_unsaturated_int8(path: Path) -> None:
    """The written model as onnxruntime's u8 x u8 mode can load it (unsaturated_int8.prepare: the
    same values; edgec.runtime's sessions, and users' own with the entry, fail without it). The
    int8 initializers it copies are zero points and shared weights, small next to the model."""
    proto = onnx.load(str(path), load_external_data=False)
    if unsaturated_int8.prepare(proto.graph, dry_run=True):
        unsaturated_int8.prepare(proto.graph)
        onnx.save(proto, str(path))


def _optimizer_refusal(model: ir.Model, path: Path) -> str | None:
    """Why onnxruntime's optimizer refuses the written model, when it loads unoptimized."""
    if not ir.has_subgraphs(model.graph):
        return None  # only subgraph shape inference has been seen to break the optimizer
    session, why = edgec_runtime.optimized_session(onnx.load(str(path)))
    return why if session is not None else None
