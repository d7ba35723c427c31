"""`edgec bench BUNDLE`: latency through each backend's runner, on a verified bundle."""

import json

import pytest

from edgec.cli import main
from edgec.models import registry

LENET5 = str(registry.get("lenet5").path())


RUNTIME_MODULES = {"tflite": "ai_edge_litert", "openvino": "openvino", "tvm": "tvm", "tensorrt": "onnxruntime"}


@pytest.mark.parametrize(
    "backend, target",
    [
        ("onnx", "raspberry-pi-4"),
        ("tflite", "raspberry-pi-4"),
        ("openvino", "x86-64"),
        ("tvm", "x86-64"),
        ("tensorrt", "jetson-nano"),
    ],
)
def test_bench_reports_ordered_percentiles_through_the_backend(tmp_path, capsys, backend, target):
    if backend in RUNTIME_MODULES:
        pytest.importorskip(RUNTIME_MODULES[backend])
    out = tmp_path / backend
    assert main([LENET5, "-t", target, "--backend", backend, "-o", str(out), "-q"]) == 0
    capsys.readouterr()
    assert main(["bench", str(out), "--runs", "30", "--warmup", "3", "--threads", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    ms = result["latency_ms"]
    assert result["backend"] == backend and result["threads"] == 2 and result["runs"] == 30
    assert 0 < ms["p50"] <= ms["p90"] <= ms["p99"] < 1000


def test_bench_refuses_a_tampered_bundle_and_bad_options(tmp_path, capsys):
    out = tmp_path / "b"
    assert main([LENET5, "-t", "raspberry-pi-4", "--backend", "onnx", "-o", str(out), "-q"]) == 0
    capsys.readouterr()
    assert main(["bench", str(out), "--runs", "0"]) == 2
    assert "--runs: must be >= 1" in capsys.readouterr().err
    data = (out / "model.onnx").read_bytes()
    (out / "model.onnx").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert main(["bench", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edgec: error:") and "model.onnx" in err[0]


def test_bench_times_openvino_in_its_default_precision_on_request(tmp_path, capsys):
    pytest.importorskip("openvino")
    out = tmp_path / "ov"
    assert main([LENET5, "-t", "x86-64", "--backend", "openvino", "-o", str(out), "-q"]) == 0
    capsys.readouterr()
    assert main(["bench", str(out), "--runs", "20", "--warmup", "2", "--precision", "default", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["precision"] == "default" and result["runtime"] == "OpenVINO CPU plugin"
    assert 0 < result["latency_ms"]["p50"] < 1000
    onnx_out = tmp_path / "onnx"
    assert main([LENET5, "-t", "x86-64", "--backend", "onnx", "-o", str(onnx_out), "-q"]) == 0
    capsys.readouterr()
    assert main(["bench", str(onnx_out), "--precision", "default"]) == 2
    assert "--precision is for openvino" in capsys.readouterr().err
