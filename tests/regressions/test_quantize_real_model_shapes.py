"""Regression models for what broke -O int8 on real models edgec had never seen (issue 12):
each is the smallest graph with the feature that broke it, built on all int8 backends."""

from dataclasses import replace

import json

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest

import edgec
from edgec import runner

from edgec.pass_infra import PassContext
from edgec.passes.quantize.quantize import QuantizePass
from edgec.quant import qdq
from edgec.quant import scheme as schemes
from edgec.registry import Registry
from edgec.targets import host_int8_pair_sums_saturate
from tests.helpers import GraphBuilder

INT8_BUILDS = [
    ("x86-64", "onnx"),
    ("x86-64", "openvino"),
    ("raspberry-pi-4", "tflite"),
    ("jetson-orin-nano", "tensorrt"),
]


def _scalar_operands(path):
    """Conv -> Mul(x, 0.1667) -> Add(x, 0.5) -> Relu with 0-d initializers, as Paddle and TF export HardSigmoid."""
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8])
    c = b.op("Conv", [x, b.weight(4, 3, 3, 3), b.weight(4)], pads=[1, 1, 1, 1])
    m = b.op("Mul", [c, b.const(np.float32(0.1667))])
    a = b.op("Add", [m, b.const(np.float32(0.5))])
    b.output(b.op("Relu", [a]))
    onnx.save(b.proto(), path)
    return path


@pytest.mark.parametrize("target,backend", INT8_BUILDS)
def test_zero_d_constant_operands_quantize_on_every_backend(tmp_path, target, backend):
    model = _scalar_operands(tmp_path / "scalar.onnx")
    result = edgec.compile(
        model, target=target, backend=backend, opt="int8", calib="random:32", output_dir=tmp_path / "out"
    )
    assert result.ok
    quantize = next(p for p in result.report["passes"] if p["name"] == "quantize")
    assert quantize["stats"]["quantized_nodes"] >= 1 and quantize["check"]["ok"]


def test_x86_targets_without_vnni_get_weights_that_cannot_saturate():
    registry = Registry()
    host = registry.target("x86-64")
    avx2 = replace(host, cpu=replace(host.cpu, features=("+avx2", "+fma")))
    vnni = replace(host, cpu=replace(host.cpu, features=("+avx2", "+fma", "+avx512_vnni")))
    assert avx2.int8_pair_sums_saturate and not vnni.int8_pair_sums_saturate
    assert not registry.target("raspberry-pi-4").int8_pair_sums_saturate
    # 2 x 255 x 64 fits VPMADDUBSW's int16 pair sum; 2 x 255 x 127 does not.
    assert 2 * 255 * schemes.REDUCED_WEIGHT_QMAX <= 32767 < 2 * 255 * schemes.WEIGHT_QMAX
    # OpenVINO's kernels there have no non-saturating mode; onnxruntime's do (x64quantprecision).
    cases = ((avx2, "openvino", "reduced"), (vnni, "openvino", "full"), (avx2, "onnx", "full"), (avx2, "tflite", "full"))
    for target, scheme, expected in cases:
        quantize = QuantizePass(scheme=scheme, calib="minmax")
        quantize.settle(_scalar_model_graph(), PassContext(target=target))
        assert quantize.weight_range == expected


def _scalar_model_graph():
    b = GraphBuilder()
    b.output(b.op("Relu", [b.op("Conv", [b.input("x", [1, 3, 4, 4]), b.weight(2, 3, 1, 1)])]))
    return b.model().graph


def test_full_range_weights_run_unsaturated_in_edgec_sessions_on_every_x86(tmp_path, fmnist_calib):
    """On a CPU without VNNI, onnxruntime's default fused u8 x s8 kernels ran LeNet-5 at 16 dB from
    its own Q/DQ graph with full-range weights. edgec's sessions select onnxruntime's u8 x u8
    kernels there (session.x64quantprecision), so the onnx scheme keeps full-range weights for an
    x86 target without VNNI and the deployed session agrees with the IR on any host."""
    avx2 = replace(Registry().target("x86-64"), cpu=replace(Registry().target("x86-64").cpu, features=("+avx2",)))
    result = edgec.compile(
        "zoo:lenet5", target=avx2, backend="onnx", opt="int8", calib=fmnist_calib, output_dir=tmp_path / "out"
    )
    proto = onnx.load(tmp_path / "out" / "model.onnx")
    weights = [onnx.numpy_helper.to_array(t) for t in proto.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert max(int(np.abs(w.astype(np.int32)).max()) for w in weights) == 127
    assert result.report["backend_check"]["ok"] and result.report["backend_check"]["sqnr_db"] > 40
    notes = json.loads((tmp_path / "out" / "manifest.json").read_text())["notes"]
    assert any("session.x64quantprecision=1" in note for note in notes)
    options = runner.session_options(optimize=True)
    assert (options.get_session_config_entry("session.x64quantprecision") == "1") == host_int8_pair_sums_saturate()


def test_first_layer_weights_are_reduced_and_the_rest_full_range(tmp_path):
    """weight_range=first (NNCF's default overflow fix): only the layer reading the model input, here
    through a Transpose, gets [-64, 64] weights."""
    b = GraphBuilder()
    x = b.op("Transpose", [b.input("x", [1, 8, 8, 3])], perm=[0, 3, 1, 2])
    first = b.op("Conv", [x, b.weight(8, 3, 3, 3), b.weight(8)], pads=[1, 1, 1, 1])
    second = b.op("Conv", [b.op("Relu", [first]), b.weight(4, 8, 1, 1), b.weight(4)])
    b.output(second)
    onnx.save(b.proto(), tmp_path / "m.onnx")
    edgec.compile(
        tmp_path / "m.onnx", target="x86-64", backend="onnx", calib="random:16", output_dir=tmp_path / "out",
        passes="quantize{scheme=onnx,calib=minmax,weight_range=first}",
    )
    proto = onnx.load(tmp_path / "out" / "model.onnx")
    widest = {
        t.name: int(np.abs(onnx.numpy_helper.to_array(t).astype(np.int32)).max())
        for t in proto.graph.initializer
        if t.data_type == onnx.TensorProto.INT8 and "__edgec_zero_point" not in t.name
    }
    assert sorted(widest.values()) == [64, 127], widest
    by_shape = {onnx.numpy_helper.to_array(t).shape: widest[t.name] for t in proto.graph.initializer if t.name in widest}
    assert by_shape[(8, 3, 3, 3)] == 64 and by_shape[(4, 8, 1, 1)] == 127


def _unnamed(path, source):
    proto = onnx.load(source)
    for node in proto.graph.node:
        node.name = ""
    onnx.save(proto, path)
    return path


def test_unnamed_nodes_get_unique_names_and_the_latency_search_keeps_int8(tmp_path, fmnist_calib):
    """Every node of a TFLite import is unnamed: one fallback ("") used to return every layer to float,
    and the build said ok with quantized_nodes 0."""
    from edgec.models import registry

    model = _unnamed(tmp_path / "unnamed.onnx", registry.get("lenet5").path())
    result = edgec.compile(
        model,
        target="x86-64",
        backend="onnx",
        passes="fold-constants,quantize{scheme=onnx,select=latency,select_seconds=2}",
        calib=fmnist_calib,
        output_dir=tmp_path / "out",
    )
    stats = next(p for p in result.report["passes"] if p["name"] == "quantize")["stats"]
    names = [n.name for n in result.model.graph.nodes if n.op in ("Conv", "Gemm")]
    assert all(names) and len(set(names)) == len(names) == 4
    assert set(stats["fallback"]) <= set(names) and stats["quantized_nodes"] >= 4 - len(stats["fallback"]) > 0


def test_a_model_with_nothing_to_quantize_is_refused(tmp_path, capsys):
    """-O int8 that would write a float model and say ok (silero-vad: all its layers are in If
    bodies) is refused with the reason instead."""
    from edgec.cli import main

    b = GraphBuilder()
    b.output(b.op("Softsign", [b.input("x", [1, 8])]))
    onnx.save(b.proto(), tmp_path / "m.onnx")
    code = main([str(tmp_path / "m.onnx"), "--target", "x86-64", "--backend", "onnx", "-O", "int8",
                 "--calib", "random:16", "-o", str(tmp_path / "out")])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("edgec: error")]
    assert code == 2 and len(errors) == 1
    assert "no layer of this model is quantizable" in errors[0] and "-O2" in errors[0]
    assert not (tmp_path / "out").exists()


def _minus_one_dims(path):
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8])
    b.output(b.op("Relu", [b.op("Conv", [x, b.weight(4, 3, 3, 3)], pads=[1, 1, 1, 1])]))
    proto = b.proto()
    for value in (proto.graph.input[0], proto.graph.output[0]):
        for dim in value.type.tensor_type.shape.dim[2:]:
            dim.dim_value = -1  # as some converters write a dynamic dimension
    onnx.save(proto, path)
    return path


def test_minus_one_dims_are_dynamic_and_never_checked_at_1x1(tmp_path, capsys):
    from edgec.cli import main

    model = _minus_one_dims(tmp_path / "m.onnx")
    assert main([str(model), "-t", "x86-64", "--backend", "onnx", "-o", str(tmp_path / "a"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "dynamic dimensions (1x3x?x?)" in err and "--input-shape x=" in err
    assert not (tmp_path / "a").exists()
    code = main(
        [str(model), "-t", "x86-64", "--backend", "onnx", "--input-shape", "x=1x3x16x16", "-o", str(tmp_path / "b")]
    )
    assert code == 0
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["inputs"][0]["shape"] == [1, 3, 16, 16]


def _stacked_shape_chains(path, rounds=3):
    """Shape -> Gather -> Concat -> Reshape chains, each reading the output of the last one: each
    folds only once the one before it has (one round of simplify-shapes left two of three)."""
    b = GraphBuilder()
    h = b.op("Conv", [b.input("x", [1, 3, 8, 8]), b.weight(4, 3, 3, 3)], pads=[1, 1, 1, 1])

    def dim(shape, axis):
        return b.op("Unsqueeze", [b.op("Gather", [shape, b.const(np.array(axis))], axis=0), b.const(np.array([0]))])

    for _ in range(rounds):
        s = b.op("Shape", [h])
        h = b.op(
            "Relu", [b.op("Reshape", [h, b.op("Concat", [dim(s, 0), dim(s, 1), b.const(np.array([-1]))], axis=0)])]
        )
        s = b.op("Shape", [h])
        width = b.op("Div", [b.op("Gather", [s, b.const(np.array([2]))], axis=0), b.const(np.array([8]))])
        batch_channels = b.op("Slice", [s, b.const(np.array([0])), b.const(np.array([2]))])
        h = b.op("Reshape", [h, b.op("Concat", [batch_channels, b.const(np.array([8])), width], axis=0)])
    b.output(h)
    onnx.save(b.proto(), path)
    return path


@pytest.mark.parametrize("target,backend", [("x86-64", "onnx"), ("raspberry-pi-4", "tflite"), ("x86-64", "tvm")])
def test_stacked_shape_chains_fold_to_a_fixed_point_before_any_backend(tmp_path, target, backend):
    model = _stacked_shape_chains(tmp_path / "shapes.onnx")
    result = edgec.compile(model, target=target, backend=backend, opt="2", output_dir=tmp_path / "out")
    assert result.ok and {n.op for n in result.model.graph.nodes} == {"Conv", "Relu", "Reshape"}
    simplify = next(p for p in result.report["passes"] if p["name"] == "simplify-shapes")
    assert simplify["stats"]["shape_ops_replaced"] == 6 and simplify["stats"]["rounds"] >= 3


def _weight_only_int8(path):
    """int8 weights read through DequantizeLinear, float activations: what a weight-only int8 TFLite
    model imports as."""
    b = GraphBuilder()
    rng = np.random.default_rng(0)
    w = b.op(
        "DequantizeLinear",
        [b.const(rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)), b.const(np.full(4, 0.01, np.float32))],
        axis=0,
    )
    h = b.op("Relu", [b.op("Conv", [b.input("x", [1, 3, 8, 8]), w, b.weight(4)], pads=[1, 1, 1, 1])])
    f = b.op(
        "DequantizeLinear", [b.const(rng.integers(-127, 128, (256, 10)).astype(np.int8)), b.const(np.float32(0.02))]
    )
    b.output(b.op("MatMul", [b.op("Reshape", [h, b.const(np.array([1, 256]))]), f]))
    onnx.save(b.proto(), path)
    return path


@pytest.mark.parametrize("target,backend", INT8_BUILDS)
def test_weight_only_int8_models_build_float_compute_on_every_backend(tmp_path, target, backend):
    model = _weight_only_int8(tmp_path / "wo.onnx")
    result = edgec.compile(model, target=target, backend=backend, opt="2", output_dir=tmp_path / "out")
    assert result.ok and result.report["backend_check"]["ok"]
    if backend == "openvino":  # was refused: "int8 IR converted without FakeQuantize"
        assert result.report["artifact"]["precision"] == "fp32"
        assert (tmp_path / "out" / "model.xml").read_text().count('element_type="i8"') == 2


@pytest.mark.parametrize("target,backend", INT8_BUILDS)
def test_int8_on_a_weight_only_int8_model_keeps_its_weights_weights(tmp_path, target, backend):
    """Its DequantizeLinear weights are weights, not activations to wrap in Q/DQ; on an x86 target
    without VNNI full-range ones are re-rounded into [-64, 64] (OpenVINO's kernels saturated: 15 dB)."""
    model = _weight_only_int8(tmp_path / "wo.onnx")
    result = edgec.compile(
        model, target=target, backend=backend, opt="int8", calib="random:32", output_dir=tmp_path / "out"
    )
    assert result.ok and result.report["backend_check"]["ok"]
    graph = result.model.graph
    stored = [n for n in graph.nodes if n.op == "DequantizeLinear" and isinstance(n.inputs[0], gs.Constant)]
    assert stored and not any(
        n.op == "QuantizeLinear" and n.inputs[0].inputs[:1] in ([d] for d in stored) for n in graph.nodes
    )
    if Registry().target(target).int8_pair_sums_saturate and backend == "openvino":
        stats = next(p for p in result.report["passes"] if p["name"] == "quantize")["stats"]
        chosen = stats["weight_range"]
        assert chosen == "reduced"
        first = qdq.layers_reading_inputs(edgec.ir.load(model).graph)  # before Q/DQ hides the inputs
        checked = 0
        for node in (n for n in graph.nodes if n.op in ("Conv", "MatMul") and _reads_quantized_activation(n)):
            weight = node.inputs[1].inputs[0].inputs[0].values
            if chosen == "reduced" or (chosen == "first" and node.name in first):
                assert int(np.abs(np.asarray(weight, np.int32)).max()) <= 64, node.name
                checked += 1
        assert checked >= (2 if chosen == "reduced" else 1 if chosen == "first" else 0)


def _reads_quantized_activation(node):
    source = node.inputs[0].inputs[0] if node.inputs[0].inputs else None
    return source is not None and source.op == "DequantizeLinear" and not isinstance(source.inputs[0], gs.Constant)


def _token_dense_layers(path):
    """(batch, tokens, features) x constant (features, units) twice, as the SVTR attention blocks of
    PP-OCRv4's recognizer project their tokens: int8 weights per output channel (axis 1)."""
    b = GraphBuilder(seed=3)
    x = b.input("x", [1, 10, 24])
    h = b.op("Relu", [b.op("MatMul", [x, b.weight(24, 36)])])
    b.output(b.op("MatMul", [h, b.weight(36, 12)]))
    onnx.save(b.proto(), path)
    return path


def test_token_dense_layers_lower_to_fully_connected_with_per_channel_int8_weights(tmp_path):
    """Before, the lowering took them as BATCH_MATMUL with the per-channel scales on the wrong axis,
    and LiteRT refused the file ("num_scales must be 1 ... or 24 for per-axis, but got 36"): exit 3."""
    from ai_edge_litert import schema_py_generated as schema

    result = edgec.compile(
        _token_dense_layers(tmp_path / "tokens.onnx"), target="raspberry-pi-4", opt="int8", calib="random:32",
        output_dir=tmp_path / "out",
    )
    assert result.ok and result.report["backend_check"]["ok"]
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs((tmp_path / "out" / "model.tflite").read_bytes(), 0))
    ops = [model.operatorCodes[op.opcodeIndex].builtinCode for op in model.subgraphs[0].operators]
    assert ops.count(schema.BuiltinOperator.FULLY_CONNECTED) == 2 and schema.BuiltinOperator.BATCH_MATMUL not in ops
    weights = [model.subgraphs[0].tensors[op.inputs[1]] for op in model.subgraphs[0].operators
               if model.operatorCodes[op.opcodeIndex].builtinCode == schema.BuiltinOperator.FULLY_CONNECTED]
    assert [len(w.quantization.scale) for w in weights] == [36, 12]
    assert all(w.type == schema.TensorType.INT8 and w.quantization.quantizedDimension == 0 for w in weights)
