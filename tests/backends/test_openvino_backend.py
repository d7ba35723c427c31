"""The openvino backend end to end: fp32, fp16-weight and int8 OpenVINO IR checked on the CPU plugin
against onnxruntime on the IR."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ov = pytest.importorskip("openvino")

import edgec  # noqa: E402
from edgec import runner as ort_runner  # noqa: E402
from edgec.backends.openvino import ir_file  # noqa: E402
from edgec.cli import main  # noqa: E402
from edgec.compare import Tolerance, compare  # noqa: E402
from edgec.errors import EdgecError  # noqa: E402
from edgec.models import fashion_mnist  # noqa: E402
from edgec.registry import Registry  # noqa: E402
from tests.helpers import GraphBuilder, zoo_entry  # noqa: E402

MODELS = ["lenet5", "mobilenetv2-fmnist"]
# Outputs vs onnxruntime on the IR, on 64 Fashion-MNIST test images. Measured (OpenVINO 2026.4.1,
# onnxruntime 1.32): fp32 and fp16 max_rel_err <= 6e-7 (both compute float32 with the same
# weights); int8 LeNet-5 79 dB, MobileNetV2 32.2 dB / cosine 0.99970 (the CPU plugin keeps
# residual branches unrounded inside its fused int8 kernels, see OpenvinoBackend).
FLOAT_MAX_REL_ERR = 1e-5
INT8_MIN_SQNR_DB = {"lenet5": 60.0, "mobilenetv2-fmnist": 28.0}


@pytest.fixture(scope="module")
def build(tmp_path_factory, fmnist_calib):
    """Builds once per (model, -O, target) for the whole module."""
    done = {}

    def get(name, opt, target="x86-64"):
        if (name, opt, target) not in done:
            zoo_entry(name)
            out = tmp_path_factory.mktemp("openvino") / f"{name}-{opt}-{target}"
            calib = fmnist_calib if opt == "int8" else None
            done[name, opt, target] = edgec.compile(
                f"zoo:{name}", target, opt=opt, backend="openvino", calib=calib, output_dir=out
            )
        return done[name, opt, target]

    return get


@pytest.fixture(scope="module")
def images():
    if not fashion_mnist.available():
        pytest.skip("apt-get install dataset-fashion-mnist")
    x = fashion_mnist.normalize(fashion_mnist.load("test")[0][:64]).reshape(64, 1, 1, 28, 28)
    return [{"input": sample.astype(np.float32)} for sample in x]


def _versus_ir(result, samples, precision="f32"):
    """The artifact through the backend's runner against onnxruntime on the IR it came from."""
    expected = ort_runner.run(ort_runner.make_session(result.model), samples)
    run = Registry().backend("openvino").runner(result.artifact, result.output_dir, precision=precision)
    return compare(expected, [run(s) for s in samples], Tolerance(), "IR")


def _bin_bytes(result) -> int:
    return (result.output_dir / "model.bin").stat().st_size


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("opt", ["2", "fp16", "int8"])
def test_builds_validate_against_the_ir(build, images, name, opt):
    result = build(name, opt)
    check = result.report["backend_check"]
    assert result.ok and result.report["backend"] == "openvino" and check["ok"]
    info = result.report["artifact"]
    assert info["precision"] == {"2": "fp32", "fp16": "fp16", "int8": "int8"}[opt]
    assert info["inputs"] == [{"name": "input", "shape": [1, 1, 28, 28], "dtype": "float32", "layout": "NCHW"}]
    assert [p["name"] for p in info["outputs"]] == ["logits"] and info["outputs"][0]["shape"] == [1, 10]
    assert info["ir_version"] == 11 and info["openvino"] == ov.get_version()
    xml = (result.output_dir / "model.xml").read_text()
    assert xml.count('type="FakeQuantize"') == info["fake_quantize"] == info["operators"].get("FakeQuantize", 0)
    measured = _versus_ir(result, images)
    if opt == "int8":
        assert measured.sqnr_db >= INT8_MIN_SQNR_DB[name] and measured.cosine >= 0.999
        assert measured.top1_agreement >= 0.98
    else:
        assert measured.max_rel_err <= FLOAT_MAX_REL_ERR


@pytest.mark.parametrize("name", MODELS)
def test_fp16_holds_the_irs_float16_weights_in_half_the_bytes(build, name):
    fp32, fp16 = build(name, "2"), build(name, "fp16")
    assert 0.49 < _bin_bytes(fp16) / _bin_bytes(fp32) < 0.51
    # OpenVINO's own fp16 form: float16 constants decompressed to float32 at load, so the
    # device picks the precision it computes in...
    xml = (fp16.output_dir / "model.xml").read_text()
    assert xml.count('<attribute name="decompression"') >= 2
    # ...and they are exactly the float16 weights and biases convert-fp16 left in the IR, not
    # re-rounded (scalars such as Clip's bounds become attributes in OpenVINO).
    from edgec import ir

    model = ov.Core().read_model(fp16.output_dir / "model.xml")
    written = [op.get_data() for op in model.get_ordered_ops() if op.get_type_name() == "Constant"]
    halves = [c.values for c in ir.constants(fp16.model.graph).values()]
    assert _float16_elements(written) == _float16_elements(halves)


def _float16_elements(arrays) -> list[int]:
    """The bit patterns of every float16 tensor of more than one element, as a sorted list."""
    return sorted(np.concatenate([a.ravel() for a in arrays if a.dtype == np.float16 and a.size > 1]).view(np.uint16))


@pytest.mark.parametrize("name", MODELS)
def test_int8_runs_on_int8_kernels(build, name):
    result = build(name, "int8")
    info = result.report["artifact"]
    assert info["fake_quantize"] > 0
    layers = info["runtime"]["compute_layers"]
    assert {"Convolution", "FullyConnected"} <= set(layers)
    assert all(set(precisions) <= {"u8", "i8"} for precisions in layers.values())
    assert info["runtime"]["int8_layers"] == sum(sum(p.values()) for p in layers.values())
    # int8 weights: a quarter of the float32 bytes, plus per-channel scales and int32 biases.
    assert _bin_bytes(result) < 0.35 * _bin_bytes(build(name, "2"))


def test_intel_ncs2_gets_fp16_ir_that_openvino_2022_3_reads(build, images):
    result = build("lenet5", "2", "intel-ncs2")
    info = result.report["artifact"]
    assert info["precision"] == "fp16"
    assert 0.49 < _bin_bytes(result) / _bin_bytes(build("lenet5", "2")) < 0.51
    assert result.report["backend_check"]["tolerance"] == {
        "min_cosine": 0.9999, "min_sqnr_db": 40.0, "max_sqnr_loss_vs_float_db": 1.0, "sqnr_vs_float_enough_db": 30.0
    }  # the fp16 artifact is judged against float next to the IR, whose every op rounds to fp16
    written = ir_file.read(result.output_dir / "model.xml")
    assert written.ir_version == 11 and not written.unreadable_by_2022_3()
    assert any("2022.3" in n and "MYRIAD" in n for n in info["notes"])
    measured = _versus_ir(result, images)
    assert measured.sqnr_db >= 60.0 and measured.cosine >= 0.99999  # measured 77 dB


def test_int8_for_intel_ncs2_is_one_line_error(tmp_path, fmnist_calib, capsys):
    zoo_entry("lenet5")
    out = tmp_path / "o"
    argv = ["zoo:lenet5", "-t", "intel-ncs2", "-O", "int8", "--calib", str(fmnist_calib), "-o", str(out), "-q"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "fp16 only" in err and "int8" in err
    assert not out.exists()


def test_runner_honours_threads_and_precision(build, images):
    result = build("lenet5", "2")
    backend = Registry().backend("openvino")
    for threads in (1, 2):
        run = backend.runner(result.artifact, result.output_dir, threads=threads)
        assert run.properties["INFERENCE_NUM_THREADS"] == threads
        assert run.properties["INFERENCE_PRECISION_HINT"] == "f32"
        assert run.properties["PERFORMANCE_HINT"] == "LATENCY"
    out = run(images[0])
    assert list(out) == ["logits"] and out["logits"].dtype == np.float32 and out["logits"].shape == (1, 10)
    default = backend.runner(result.artifact, result.output_dir, precision="default")
    host_default = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").to_string()
    assert default.properties["INFERENCE_PRECISION_HINT"] == host_default
    measured = _versus_ir(result, images, precision="default")
    # bf16 on CPUs with it (measured 53.6 dB here), else float32.
    assert measured.sqnr_db >= (40.0 if host_default == "bf16" else 100.0)
    # The file is static at batch 1 (noted); another batch runs on a reshaped copy.
    assert any("batch of input fixed to 1" in n for n in result.report["artifact"]["notes"])
    stacked = run({"input": np.concatenate([s["input"] for s in images[:5]])})["logits"]
    one_by_one = np.concatenate([run(s)["logits"] for s in images[:5]])
    assert stacked.shape == (5, 10) and np.abs(stacked - one_by_one).max() <= 1e-5 * np.abs(one_by_one).max()
    with pytest.raises(ValueError, match="f32, default"):
        backend.runner(result.artifact, result.output_dir, precision="f16")


def test_fp16_io_keeps_float16_ports(tmp_path):
    zoo_entry("lenet5")
    result = edgec.compile(
        "zoo:lenet5", "x86-64", passes="convert-fp16{io=fp16}", backend="openvino", output_dir=tmp_path / "o"
    )
    info = result.report["artifact"]
    assert result.report["backend_check"]["ok"] and info["precision"] == "fp16"
    assert [p["dtype"] for p in info["inputs"] + info["outputs"]] == ["float16", "float16"]


def test_unconvertible_operator_is_one_line_error(tmp_path):
    g = GraphBuilder()
    g.output(g.op("Det", [g.input("x", [2, 3, 3])]))
    with pytest.raises(
        EdgecError, match="openvino: cannot convert the model: no OpenVINO conversion rule for Det"
    ) as e:
        edgec.compile(g.model(), "x86-64", opt="0", backend="openvino", output_dir=tmp_path / "o")
    assert "\n" not in str(e.value)


def test_importing_the_backend_leaves_openvino_unloaded():
    code = "import sys, edgec.backends.openvino as b; b.OpenvinoBackend().available(); print('openvino' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_ir_file_flags_operators_2022_3_cannot_read(tmp_path):
    xml = tmp_path / "model.xml"
    xml.write_text(
        '<?xml version="1.0"?><net name="m" version="11"><layers>'
        '<layer id="0" name="x" type="Parameter" version="opset1"/>'
        '<layer id="1" name="p" type="MaxPool" version="opset14"/>'
        '<layer id="2" name="a" type="Add" version="opset1"/>'
        '<layer id="3" name="y" type="Result" version="opset1"/></layers></net>'
    )
    written = ir_file.read(Path(xml))
    assert written.operators == {"Add": 1, "MaxPool": 1} and written.opsets == ["opset1", "opset14"]
    assert written.unreadable_by_2022_3() == ["MaxPool (opset14)"]


def test_intel_ncs2_refuses_dynamic_shapes(tmp_path):
    g = GraphBuilder()
    g.output(g.op("Relu", [g.input("x", ["batch", "features"])]))
    # Random check inputs cannot guess a dynamic feature width: real ones give it.
    inputs = [{"x": np.linspace(-1, 1, 6, dtype=np.float32)[None]}]
    with pytest.raises(EdgecError, match=r"MYRIAD plugin needs static input shapes, not x \[1, None\]"):
        edgec.compile(g.model(), "intel-ncs2", opt="0", backend="openvino", output_dir=tmp_path / "o", inputs=inputs)
    # The CPU plugin takes them: only the batch is fixed to 1.
    result = edgec.compile(
        g.model(), "x86-64", opt="0", backend="openvino", output_dir=tmp_path / "cpu", inputs=inputs
    )
    assert result.report["artifact"]["inputs"][0]["shape"] == [1, None] and result.report["backend_check"]["ok"]


def _newer_operators_graph(pool_input: int = 9, pool_pads=(0, 0, 0, 0)):
    """Pad, AveragePool/MaxPool with ceil_mode, Resize by scales and by sizes, TopK: what the
    ONNX frontend writes as Pad-12, AvgPool-16, Interpolate-11 and TopK-11."""
    g = GraphBuilder()
    x = g.op("Pad", [g.input("x", [1, 3, pool_input - 2, pool_input - 2]), g.const(np.array([0, 0, 1, 1] * 2))])
    x = g.op("AveragePool", [x], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1, pads=list(pool_pads))
    x = g.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)
    x = g.op("Resize", [x, "", g.const(np.array([1, 1, 2, 2], np.float32))], mode="linear")
    x = g.op("Resize", [x, "", "", g.const(np.array([1, 3, 9, 7]))], mode="nearest")
    values, _ = g.op("TopK", [x, g.const(np.array([2]))], n_out=2, axis=1)
    g.output(values)
    return g.model()


def test_intel_ncs2_rewrites_newer_operators_to_ones_2022_3_reads(tmp_path):
    result = edgec.compile(
        _newer_operators_graph(), "intel-ncs2", opt="0", backend="openvino", output_dir=tmp_path / "o"
    )
    info = result.report["artifact"]
    assert result.report["backend_check"]["ok"] and result.report["backend_check"]["max_rel_err"] <= 1e-5
    written = ir_file.read(result.output_dir / "model.xml")
    assert not written.unreadable_by_2022_3() and set(written.opsets) <= {"opset1", "opset3", "opset4", "opset8"}
    rewritten = next(n for n in info["notes"] if n.startswith("rewritten to operators OpenVINO 2022.3 reads"))
    for rule in ("Pad-12 -> Pad-1 x1", "AvgPool-16 -> AvgPool-1 x1", "Interpolate-11 -> Interpolate-4 x2"):
        assert rule in rewritten
    assert "TopK-11 -> TopK-3 x1" in rewritten
    # Other targets keep the operators current OpenVINO writes.
    current = edgec.compile(_newer_operators_graph(), "x86-64", opt="0", backend="openvino", output_dir=tmp_path / "c")
    assert {"opset11", "opset12", "opset16"} <= set(current.report["artifact"]["opsets"])


def test_intel_ncs2_names_operators_2022_3_cannot_read(tmp_path):
    # 5 + 2 padding with ceil: the last window starts in the right padding, which ceil_torch
    # (AvgPool-14+) drops and AvgPool-1's ceil keeps: no rewrite means the same.
    model = _newer_operators_graph(pool_input=7, pool_pads=(1, 1, 1, 1))
    with pytest.raises(EdgecError, match=r"OpenVINO 2022.3 .* cannot read this IR \(IR v11; AvgPool \(opset16\)\)"):
        edgec.compile(model, "intel-ncs2", opt="0", backend="openvino", output_dir=tmp_path / "o")


def test_a_mixed_float16_ir_keeps_its_float32_layers_weights(tmp_path):
    """convert-fp16 may keep the layers nearest the outputs in float32 (its recovery); their
    weights must not be halved on the way to OpenVINO (compress_to_fp16 would: PP-OCRv4's
    detector fell from 27.4 to 20.6 dB from float)."""
    from edgec.backends.openvino import convert

    b = GraphBuilder(seed=3)
    x = b.input("x", [1, 32])
    rng = np.random.default_rng(3)
    exact = rng.standard_normal((32, 32)).astype(np.float16).astype(np.float32)  # what an fp16 layer holds
    precise = rng.standard_normal((32, 8)).astype(np.float32)  # a layer kept in float32
    b.output(b.op("MatMul", [b.op("Relu", [b.op("MatMul", [x, b.const(exact)])]), b.const(precise)]))
    model = b.model()
    converted = convert.to_openvino(model, widen_fp16=False)
    assert convert.keeps_float32_weights(converted)
    assert convert.half_exact_constants(converted) == 1
    ov.save_model(converted, tmp_path / "m.xml", compress_to_fp16=False)
    read = ov.Core().read_model(tmp_path / "m.xml")
    constants = {op.get_element_type().get_type_name(): op.get_data() for op in read.get_ops() if op.get_type_name() == "Constant"}
    # (the frontend may store a MatMul weight transposed: compared as multisets)
    np.testing.assert_array_equal(np.sort(constants["f16"].astype(np.float32), axis=None), np.sort(exact, axis=None))
    np.testing.assert_array_equal(np.sort(constants["f32"], axis=None), np.sort(precise, axis=None))  # bit for bit
    feeds = {"x": rng.standard_normal((1, 32)).astype(np.float32)}
    compiled = ov.Core().compile_model(read, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got = compiled.create_infer_request().infer([feeds["x"]])[compiled.outputs[0]]
    expected = np.maximum(feeds["x"] @ exact, 0) @ precise
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
