"""`edgec bench BUNDLE`: latency through each backend's runner, on a verified bundle."""

import json

import pytest

from edgec.cli import main
from edgec.models import registry

LENET5 = str(registry.get("lenet5").path())


@pytest.mark.parametrize("backend", ["onnx", "tflite"])
def test_bench_reports_ordered_percentiles_through_the_backend(tmp_path, capsys, backend):
    if backend == "tflite":
        pytest.importorskip("ai_edge_litert")
    out = tmp_path / backend
    assert main([LENET5, "-t", "raspberry-pi-4", "--backend", backend, "-o", str(out), "-q"]) == 0
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
    assert "--runs must be >= 1" in capsys.readouterr().err
    data = (out / "model.onnx").read_bytes()
    (out / "model.onnx").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert main(["bench", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edgec: error:") and "model.onnx" in err[0]
