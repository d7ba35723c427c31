"""A detector head that concatenates boxes (pixels) and class scores (0..1) in one output (issue 12,
class 8): int8 must keep the scores, and the check must see them apart from the boxes."""

import numpy as np
import onnx
import pytest

import edgec
from edgec import quantities
from edgec.errors import CheckFailed
from edgec.quant import qdq
from tests.helpers import GraphBuilder, last_pipeline_pass


def _yolo_head(path, classes=6):
    b = GraphBuilder(seed=1)
    x = b.input("x", [1, 3, 16, 16])
    features = b.op("Relu", [b.op("Conv", [x, b.weight(8, 3, 3, 3), b.weight(8)], pads=[1, 1, 1, 1])])
    flat = b.const(np.array([1, -1, 256]))
    boxes = b.op("Sigmoid", [b.op("Conv", [features, b.weight(4, 8, 1, 1)])])
    boxes = b.op("Reshape", [b.op("Mul", [boxes, b.const(np.float32(640.0))]), flat])
    scores = b.op("Reshape", [b.op("Sigmoid", [b.op("Conv", [features, b.weight(classes, 8, 1, 1, scale=2.0)])]), flat])
    b.output(b.op("Concat", [boxes, scores], axis=1))
    onnx.save(b.proto(), path)
    return path


def test_groups_split_boxes_from_scores_but_not_logits():
    rng = np.random.default_rng(0)
    head = np.concatenate([rng.uniform(0, 640, (8, 1, 4, 256)), rng.uniform(0, 1, (8, 1, 6, 256))], axis=2)
    assert quantities.groups(head) == (2, [(0, 4), (4, 10)])
    assert quantities.groups(rng.standard_normal((8, 1, 1000))) is None  # one kind of value


@pytest.mark.parametrize("target,backend", [("raspberry-pi-4", "tflite"), ("x86-64", "onnx")])
def test_scores_keep_their_own_scale_and_are_judged_apart(tmp_path, target, backend):
    model = _yolo_head(tmp_path / "head.onnx")
    result = edgec.compile(
        model, target=target, backend=backend, opt="int8", calib="random:32", output_dir=tmp_path / "o"
    )
    quantize = next(p for p in result.report["passes"] if p["name"] == "quantize")
    parts = quantize["check"]["quantities"]
    assert [p["slices"] for p in parts] == [[0, 4], [4, 10]] and parts[0]["peak"] > 100 > 1 >= parts[1]["peak"]
    assert result.ok and min(p["sqnr_db"] for p in parts) >= 20
    if backend == "tflite":  # full int8 would quantize the joined output with the boxes' scale
        assert quantize["stats"]["float_concats"] == [n.name for n in result.model.graph.nodes if n.op == "Concat"]


def test_one_shared_scale_is_caught_by_the_per_quantity_check(tmp_path, monkeypatch):
    monkeypatch.setattr(qdq, "MIXED_CONCAT_RATIO", float("inf"))  # the quantizer as it was
    model = _yolo_head(tmp_path / "head.onnx")
    pipeline = "quantize{scheme=tflite,calib=minmax,recover=false}"
    with pytest.raises(CheckFailed, match=r"slices 4:10 of axis 1 \(peak 1\) sqnr [-0-9.]+ dB < 12 dB"):
        edgec.compile(model, target="raspberry-pi-4", passes=pipeline, calib="random:32", output_dir=tmp_path / "o")
    # With recovery on, the check's per-quantity verdict is what sends layers back to float.
    result = edgec.compile(
        model,
        target="raspberry-pi-4",
        passes=pipeline.replace("false", "true"),
        calib="random:32",
        output_dir=tmp_path / "r",
    )
    assert result.ok and last_pipeline_pass(result.report)["stats"]["recovery"]["fallback"]
