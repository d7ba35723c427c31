"""Calibration runs stack samples along a dynamic batch axis, but never so many that a big
activation's copies exceed collect.BATCH_BYTES (32 detector images at 608x800 held GBs)."""

import numpy as np
import onnx

from edgec import ir
from edgec.quant import collect
from tests.helpers import GraphBuilder


def _conv_model(path, batch, side):
    b = GraphBuilder()
    x = b.input("x", [batch, 3, side, side])
    b.output(b.op("Relu", [b.op("Conv", [x, b.weight(16, 3, 3, 3)], pads=[1, 1, 1, 1])]))
    onnx.save(b.proto(), path)
    return ir.load(path)


def test_small_activations_take_full_batches(tmp_path):
    model = _conv_model(tmp_path / "m.onnx", "N", 16)
    assert collect.batch_size(model) == collect.BATCH
    samples = [{"x": np.zeros((1, 3, 16, 16), np.float32)} for _ in range(40)]
    assert [n for _, n in collect.batches(samples, model)] == [32, 8]


def test_large_activations_take_fewer_samples_per_run(tmp_path):
    model = _conv_model(tmp_path / "m.onnx", "N", 608)  # 16x608x608 floats: 23.7 MB per sample
    size = collect.batch_size(model)
    per_sample = 16 * 608 * 608 * 4
    assert size == collect.BATCH_BYTES // (per_sample * collect.BATCH_LIVE_TENSORS) == 2
    samples = [{"x": np.zeros((1, 3, 608, 608), np.float32)} for _ in range(5)]
    runs = list(collect.batches(samples, model))
    assert [n for _, n in runs] == [2, 2, 1] and runs[0][0]["x"].shape == (2, 3, 608, 608)


def test_a_fixed_batch_runs_one_sample_at_a_time(tmp_path):
    model = _conv_model(tmp_path / "m.onnx", 1, 16)
    assert collect.batch_size(model) == 1
    samples = [{"x": np.zeros((1, 3, 16, 16), np.float32)} for _ in range(3)]
    assert [n for _, n in collect.batches(samples, model)] == [1, 1, 1]
