"""-O int8 decides where int8 pays from a measured, committed cost table, never by timing the build
(issue 13: the latency search kept 0-3 layers in float depending on machine load)."""

import multiprocessing
import time

import numpy as np
import onnx
import pytest

import edgec
from edgec import ir
from edgec.errors import EdgecError
from edgec.quant import op_costs
from edgec.quant.speed import FLOAT_WEIGHT_BUDGET
from tests.helpers import GraphBuilder, last_pipeline_pass


def _burn(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_the_same_command_builds_the_same_bytes_under_cpu_load(tmp_path, fmnist_calib):
    def build(out):
        return edgec.compile(
            "zoo:mobilenetv2-fmnist", target="x86-64", backend="onnx", opt="int8", calib=fmnist_calib, output_dir=out
        )

    quiet = build(tmp_path / "quiet")
    burners = [multiprocessing.Process(target=_burn, args=(120.0,), daemon=True) for _ in range(4)]
    for burner in burners:
        burner.start()
    try:
        loaded = build(tmp_path / "loaded")
    finally:
        for burner in burners:
            burner.terminate()
    search = last_pipeline_pass(quiet.report)["stats"]["latency_search"]
    assert search["method"] == "cost table" and search["layers_costed"] > 10
    main = quiet.artifact.main
    assert (tmp_path / "quiet" / main).read_bytes() == (tmp_path / "loaded" / main).read_bytes()
    assert quiet.report["pipeline"] == loaded.report["pipeline"] and "select=cost" not in quiet.report["pipeline"]


def test_the_committed_table_is_a_measurement_of_every_layer_kind():
    rows = op_costs.table("x86-64", "onnx")
    assert {r["kind"] for r in rows} == {"conv", "depthwise", "matmul"} and len(rows) >= 100
    for r in rows:
        assert r["macs"] == r["k"] * r["c_out"] * r["spatial"] and r["int8_us"] > 0 and r["float_us"] > 0
        # The ratio is the median of per-round ratios: near float_us / int8_us, never something else.
        assert 0.5 < r["ratio"] / (r["float_us"] / r["int8_us"]) < 2.0
    assert op_costs.table("raspberry-pi-4", "tflite") is None


def _two_convs(path):
    """A depthwise 3x3 Conv over 64 channels, then a dense 3x3 Conv (K = 576)."""
    b = GraphBuilder(seed=1)
    h = b.op("Conv", [b.input("x", [1, 64, 32, 32]), b.weight(64, 1, 3, 3)], pads=[1, 1, 1, 1], group=64)
    b.output(b.op("Conv", [h, b.weight(64, 64, 3, 3)], pads=[1, 1, 1, 1]))
    onnx.save(b.proto(), path)
    model = ir.load(path)
    ir.infer_shapes(model.graph)
    ir.name_nodes(model.graph)
    return [n for n in model.graph.nodes if n.op == "Conv"]


def _rows(depthwise_ratio, conv_ratio):
    return [
        {"kind": "depthwise", "k": 9, "c_out": 64, "spatial": 1024, "macs": 9 * 64 * 1024, "int8_us": 60.0,
         "float_us": 60.0 * depthwise_ratio, "ratio": depthwise_ratio},
        {"kind": "conv", "k": 576, "c_out": 64, "spatial": 1024, "macs": 576 * 64 * 1024, "int8_us": 200.0,
         "float_us": 200.0 * conv_ratio, "ratio": conv_ratio},
    ]


def test_a_layer_goes_float_only_where_the_table_predicts_a_real_saving(tmp_path):
    depthwise, conv = _two_convs(tmp_path / "m.onnx")
    assert op_costs.layer_shape(depthwise) == ("depthwise", 9, 64, 1024)
    assert op_costs.layer_shape(conv) == ("conv", 576, 64, 1024)
    # The depthwise layer's float island predicted 40% faster, the dense one's 2x slower. The dense
    # layer holds 90% of the weights, so the depthwise one fits the 10% float budget.
    found = op_costs.cost_search([depthwise, conv], _rows(0.6, 2.0), FLOAT_WEIGHT_BUDGET)
    assert found["fallback"] == [depthwise.name] and found["predicted_saving_us"] == pytest.approx(24.0)
    # 3% faster is within the table's noise: int8 stays.
    assert op_costs.cost_search([depthwise, conv], _rows(0.97, 2.0), FLOAT_WEIGHT_BUDGET)["fallback"] == []
    # A saving the float weight budget cannot pay for is not taken.
    assert op_costs.cost_search([depthwise, conv], _rows(2.0, 0.5), FLOAT_WEIGHT_BUDGET)["fallback"] == []


def test_measure_latency_needs_this_machine_as_the_target(tmp_path):
    with pytest.raises(EdgecError, match="--measure-latency times onnxruntime on this machine"):
        edgec.compile("zoo:lenet5", target="raspberry-pi-4", opt="int8", output_dir=tmp_path / "o", measure_latency=True)
    assert not (tmp_path / "o").exists()
