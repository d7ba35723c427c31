import json

import pytest

from edgec import ir
from edgec.analysis import inspect_model
from edgec.analysis.costs import layer_costs, total_macs
from edgec.analysis.memory import peak_activation_memory
from edgec.analysis.roofline import fit
from edgec.cli import main
from edgec.models import registry
from edgec.targets import ComputeUnit, Cpu, Target, load_builtin
from tests.helpers import GraphBuilder

# LeNet-5 (Caffe) at batch 1, counted by hand:
#   conv1  20 maps x 24x24 outputs x (1 x 5x5)   =   288,000
#   conv2  50 maps x 8x8 outputs  x (20 x 5x5)   = 1,600,000
#   fc1    800 x 500                             =   400,000
#   fc2    500 x 10                              =     5,000
LENET5_LAYER_MACS = [288_000, 1_600_000, 400_000, 5_000]
LENET5_PARAMS = 20 * 25 + 20 + 50 * 20 * 25 + 50 + 800 * 500 + 500 + 500 * 10 + 10


def test_lenet5_macs_match_the_hand_count():
    model = ir.load(registry.get("lenet5").path())
    costs = layer_costs(model)
    assert [c.macs for c in costs if c.macs] == LENET5_LAYER_MACS
    assert total_macs(model.graph) == sum(LENET5_LAYER_MACS) == 2_293_000
    assert ir.param_count(model.graph) == LENET5_PARAMS == 431_080


def test_conv_transpose_lstm_and_matmul_macs():
    b = GraphBuilder()
    x = b.input("x", [1, 4, 5, 5])
    up = b.op("ConvTranspose", [x, b.weight(4, 6, 3, 3)], strides=[2, 2])  # every input scatters 6x3x3
    seq = b.input("s", [7, 1, 10])
    _, h, _ = b.op("LSTM", [seq, b.weight(1, 4 * 16, 10), b.weight(1, 4 * 16, 16)], n_out=3, hidden_size=16)
    mm = b.op("MatMul", [b.input("a", [2, 3, 8]), b.weight(8, 5)])
    for out in (up, h, mm):
        b.output(out)
    costs = {c.op: c.macs for c in layer_costs(b.model())}
    assert costs["ConvTranspose"] == 4 * 5 * 5 * 6 * 3 * 3
    assert costs["LSTM"] == 7 * 1 * 4 * 16 * (10 + 16)
    assert costs["MatMul"] == 2 * 3 * 5 * 8


def test_peak_memory_from_liveness():
    # x (400 B) -> a (400 B) -> b (400 B) -> c (40 B); `x` is also read by the last Add, so it
    # stays alive: the peak is x + a + b while computing b = 1200 B.
    b = GraphBuilder()
    x = b.input("x", [100])
    a = b.op("Relu", [x])
    bb = b.op("Sigmoid", [a])
    c = b.op("Add", [bb, x])
    b.output(b.op("ReduceSum", [c], keepdims=0))
    model = b.model()
    peak = peak_activation_memory(model.graph)
    assert peak.bytes == 1200
    assert set(peak.live) == {x, a, bb}


def test_roofline_picks_the_binding_resource():
    unit = ComputeUnit("cpu", "toy", {"fp32": 1.0})  # 1 GOPS
    target = Target(
        "toy",
        "toy",
        Cpu("t", "m", 1, 1.0),
        ram_bytes=10_000,
        flash_bytes=100_000,
        memory_bandwidth_gbps=1.0,
        compute=(unit,),
        backends=("onnx",),
        precisions={"onnx": ("fp32",)},
        quant_scheme="onnx",
    )
    b = GraphBuilder()
    x = b.input("x", [1, 100])
    b.output(b.op("MatMul", [x, b.weight(100, 100)]))  # 10,000 MACs = 20,000 ops; 40,800 bytes
    costs = layer_costs(b.model())
    f = fit(costs, target, "fp32", peak_activation_bytes=800, weight_bytes=40_000, file_bytes=40_100)
    assert f.latency_ms == pytest.approx(40_800 / 1e9 * 1e3)  # memory-bound: 40.8 us
    assert f.bound == "memory"
    assert f.ram_needed == 40_800 and not f.fits_ram and f.fits_flash


def test_inspect_fit_table_covers_every_target_and_mcu_weights_stay_in_flash():
    model = ir.load(registry.get("lenet5").path())
    info = inspect_model(model, load_builtin().values())
    by_target = {f["target"]: f for f in info["fit"]}
    assert len(by_target) >= 10
    nano = by_target["arduino-nano-33-ble"]
    assert nano["ram_needed"] == info["peak_activation_memory"]["bytes"]  # weights execute from flash
    assert not nano["fits"] and not nano["fits_flash"]  # 1.7 MB of float weights > 1 MB flash
    assert by_target["intel-ncs2"]["precision"] == "fp16"  # the VPU runs fp32 models in half precision
    assert info["macs"]["total"] == 2_293_000


def test_inspect_cli_json(capsys):
    assert main(["inspect", "zoo:lenet5", "--target", "raspberry-pi-4", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["macs"]["total"] == 2_293_000 and info["params"]["count"] == LENET5_PARAMS
    assert [f["target"] for f in info["fit"]] == ["raspberry-pi-4"]
    assert info["ops"]["Conv"] == 2


def test_inspect_cli_text(capsys):
    assert main(["inspect", "zoo:lenet5"]) == 0
    out = capsys.readouterr().out
    assert "2,293,000" in out and "arduino-nano-33-ble" in out and "peak activation memory" in out
