"""-O compress --train fitted to the model (issue 12, item 18): pruning stops at the last step that
still meets the fidelity budget after fine-tuning, codebooks widen until it holds; the build
succeeds with what the model can take instead of failing on a schedule tuned to another model."""

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import edgec
from edgec import presets
from edgec.cli import main
from edgec.compress.layers import weighted_layers
from edgec.models import fashion_mnist

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def small_train(tmp_path_factory):
    if not fashion_mnist.available():
        pytest.skip("apt-get install dataset-fashion-mnist")
    return fashion_mnist.export_npz("train", tmp_path_factory.mktemp("train") / "train.npz", 2000)


def _build(tmp_path, passes, train):
    return edgec.compile(
        "zoo:lenet300", target="x86-64", backend="onnx", passes=passes, train=train, output_dir=tmp_path / "o"
    )


def _stats(result, name):
    return next(p for p in result.report["passes"] if p["name"] == name)


def test_pruning_stops_at_the_last_step_that_keeps_fidelity(tmp_path, small_train):
    result = _build(tmp_path, "prune-gradual{sparsities=[0.5,0.999],epochs=[1,1]}", small_train)
    assert result.ok and result.report["final_check"]["ok"]
    record = _stats(result, "prune-gradual")
    steps = record["stats"]["steps"]
    assert [s["ok"] for s in steps] == [True, False] and record["stats"]["chosen_sparsity"] == 0.5
    assert steps[1]["cosine"] < 0.9 <= steps[0]["cosine"]
    assert record["check"]["ok"] and record["check"]["cosine"] == pytest.approx(steps[0]["cosine"], abs=1e-4)
    assert any("stopped at sparsity 0.5; 0.999 missed" in w for w in result.report["warnings"])
    # The written weights are the 50% step's, not the 99.9% one's.
    model = onnx.load(str(tmp_path / "o" / "model.onnx"))
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    layers = weighted_layers(result.model.graph, 64)
    zeros = sum(int(np.sum(weights[layer.weight.name] == 0)) for layer in layers)
    total = sum(weights[layer.weight.name].size for layer in layers)
    assert zeros / total == pytest.approx(0.5, abs=0.01)


def test_codebooks_widen_until_fidelity_holds(tmp_path, small_train):
    result = _build(tmp_path, "share-finetune{bits=1,conv_bits=1,epochs=1,max_bits=4}", small_train)
    assert result.ok
    stats = _stats(result, "share-finetune")["stats"]
    assert stats["tried"][0]["bits"] == 1 and not stats["tried"][0]["ok"] and stats["tried"][-1]["ok"]
    assert stats["bits"] == stats["tried"][-1]["bits"] > 1
    model = onnx.load(str(tmp_path / "o" / "model.onnx"))
    codebooks = [numpy_helper.to_array(t) for t in model.graph.initializer if t.name.endswith("_codebook")]
    assert codebooks and max(c.size for c in codebooks) <= 2 ** stats["bits"]


def test_the_trained_preset_is_the_fitted_passes():
    text = presets.expand("compress", train=True)
    assert "prune-gradual{sparsities=[0.5,0.7,0.8,0.9,0.94],epochs=[2,2,3,3,6]" in text
    assert "share-finetune{bits=4,conv_bits=6,epochs=3}" in text and "finetune{" not in text.replace("share-finetune{", "")


@pytest.mark.parametrize(
    "passes, message",
    [
        ("prune-gradual{sparsities=[0.5,0.7],epochs=[1]}", "one epochs value per step"),
        ("prune-gradual{sparsities=[0.7,0.5],epochs=[1,1]}", "must not decrease"),
        ("prune-gradual{sparsities=[0.5,1.0],epochs=[1,1]}", "must be < 1"),
    ],
)
def test_bad_schedules_are_one_line_exit_2(tmp_path, capsys, small_train, passes, message):
    code = main(["zoo:lenet300", "--target", "x86-64", "--backend", "onnx", "--passes", passes,
                 "--train", str(small_train), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
