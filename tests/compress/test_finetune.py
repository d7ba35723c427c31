"""Recovery fine-tuning: accuracy comes back while pruning masks and shared indices stay fixed."""

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import edgec
from edgec.cli import main
from edgec.compress.layers import weighted_layers

pytest.importorskip("torch")

STAGES = "prune-magnitude{sparsity=0.85,scope=global},weight-share{bits=4}"


def initializers(directory) -> dict[str, np.ndarray]:
    proto = onnx.load(str(directory / "model.onnx"))
    return {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}


def test_finetune_recovers_accuracy_and_keeps_masks_and_indices(tmp_path, fmnist_train, fmnist_eval):
    def build(name, passes):
        return edgec.compile(
            "zoo:lenet300",
            target="arduino-nano-33-ble",
            backend="onnx",
            passes=passes,
            train=fmnist_train,
            eval=fmnist_eval,
            output_dir=tmp_path / name,
            keep_going=True,  # the untuned stages alone are allowed to fail their check
        )

    build("shared", STAGES)
    tuned = build("tuned", STAGES + ",finetune{epochs=3}")
    before, after = initializers(tmp_path / "shared"), initializers(tmp_path / "tuned")
    indices = [name for name in before if name.endswith("_idx")]
    assert len(indices) == 3
    for name in indices:
        assert np.array_equal(before[name], after[name]), name  # assignments (and so zeros) fixed
        book_before, book_after = before[name[:-4] + "_codebook"], after[name[:-4] + "_codebook"]
        assert book_after[0] == 0.0 and len(book_after) == len(book_before) <= 16
        assert not np.allclose(book_before[1:], book_after[1:])  # the centroids were trained

    accuracy = tuned.report["accuracy"]
    steps = {s["name"]: s for s in tuned.report["passes"]}
    # 85% pruning then 4-bit sharing, untrained, loses ~9 points; three short epochs of
    # distillation on 20,000 images bring most of them back (measured: 90.2 -> 80.8 -> 87.5%).
    shared_acc, tuned_acc = steps["weight-share"]["accuracy"], steps["finetune"]["accuracy"]
    assert tuned_acc > shared_acc + 0.04
    assert accuracy["original"] - tuned_acc < 0.04
    # The stages before fine-tuning were judged after it (deferred), and everything passed.
    assert tuned.report["ok"], tuned.report["passes"][-1]["check"]
    assert steps["finetune"]["stats"]["samples"] == 20000


def test_training_data_errors_are_one_line_exit_2(tmp_path, capsys, fmnist_train):
    base = ["zoo:lenet300", "--target", "arduino-nano-33-ble", "-o", str(tmp_path / "o")]
    assert main(base + ["--passes", "finetune"]) == 2
    assert "needs training data: --train DATA" in capsys.readouterr().err
    assert main(base + ["--passes", "finetune", "--train", str(tmp_path / "missing.npz")]) == 2
    assert "missing.npz" in capsys.readouterr().err
    unlabelled = tmp_path / "unlabelled.npz"
    np.savez(unlabelled, input=np.load(fmnist_train)["input"][:64])
    assert main(base + ["--passes", "finetune{distill=false}", "--train", str(unlabelled)]) == 2
    assert "without distillation needs labelled --train data" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing half-written


def test_compress_preset_without_training_data_builds_and_loads(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["zoo:lenet300", "--target", "arduino-nano-33-ble", "-O", "compress", "-o", str(out)]) == 0
    assert (out / "model.ecw").exists()
    model = edgec.runtime.load(out)
    x = np.zeros((1, 1, 28, 28), np.float32)
    assert model.run({"input": x})["logits"].shape == (1, 10)


def test_teacher_runs_in_onnxruntime_so_any_export_can_teach(tmp_path, fmnist_train):
    """The MobileNetV2 export still has Constant nodes (and BatchNorm) before -O2; the teacher's
    scores come from onnxruntime, and the student (after -O2) trains in torch."""
    result = edgec.compile(
        "zoo:mobilenetv2-fmnist",
        target="arduino-nano-33-ble",
        backend="onnx",
        opt=None,
        passes="remove-identity,fold-constants,eliminate-dead-code,fold-batchnorm,"
        "prune-magnitude{sparsity=0.3,scope=global},finetune{epochs=1,max_samples=512}",
        train=fmnist_train,
        output_dir=tmp_path / "o",
    )
    stats = result.report["passes"][-1]["stats"]
    assert stats["samples"] == 512 and stats["teacher_agreement"] > 0.9
    assert result.report["ok"]
    # Masked weights come back as +0.0: a -0.0 would cost a sparse container entry.
    weights = np.concatenate([layer.weight.values.ravel() for layer in weighted_layers(result.model.graph, 64)])
    zeros = weights[weights == 0]
    assert zeros.size >= int(0.3 * weights.size) and not np.signbit(zeros).any()
