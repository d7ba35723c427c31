"""Regression models for what broke -O int8 on real models edgec had never seen (issue 12):
each is the smallest graph with the feature that broke it, built on all int8 backends."""

from dataclasses import replace

import numpy as np
import onnx
import pytest

import edgec

from edgec.quant import scheme as schemes
from edgec.registry import Registry
from tests.helpers import GraphBuilder

INT8_BUILDS = [
    ("x86-64", "onnx"),
    ("x86-64", "openvino"),
    ("raspberry-pi-4", "tflite"),
    ("jetson-orin-nano", "tensorrt"),
]


def _scalar_operands(path):
    """Conv -> Mul(x, 0.1667) -> Add(x, 0.5) -> Relu with 0-d initializers, as Paddle and TF export HardSigmoid."""
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8])
    c = b.op("Conv", [x, b.weight(4, 3, 3, 3), b.weight(4)], pads=[1, 1, 1, 1])
    m = b.op("Mul", [c, b.const(np.float32(0.1667))])
    a = b.op("Add", [m, b.const(np.float32(0.5))])
    b.output(b.op("Relu", [a]))
    onnx.save(b.proto(), path)
    return path


@pytest.mark.parametrize("target,backend", INT8_BUILDS)
def test_zero_d_constant_operands_quantize_on_every_backend(tmp_path, target, backend):
    model = _scalar_operands(tmp_path / "scalar.onnx")
    result = edgec.compile(
        model, target=target, backend=backend, opt="int8", calib="random:32", output_dir=tmp_path / "out"
    )
    assert result.ok
    quantize = next(p for p in result.report["passes"] if p["name"] == "quantize")
    assert quantize["stats"]["quantized_nodes"] >= 1 and quantize["check"]["ok"]


def test_x86_targets_without_vnni_get_weights_that_cannot_saturate():
    registry = Registry()
    host = registry.target("x86-64")
    avx2 = replace(host, cpu=replace(host.cpu, features=("+avx2", "+fma")))
    vnni = replace(host, cpu=replace(host.cpu, features=("+avx2", "+fma", "+avx512_vnni")))
    assert avx2.int8_pair_sums_saturate and not vnni.int8_pair_sums_saturate
    assert not registry.target("raspberry-pi-4").int8_pair_sums_saturate
    # 2 x 255 x 64 fits VPMADDUBSW's int16 pair sum; 2 x 255 x 127 does not.
    assert 2 * 255 * schemes.REDUCED_WEIGHT_QMAX <= 32767 < 2 * 255 * schemes.WEIGHT_QMAX
    for target, expected in ((avx2, "weight_range=reduced"), (vnni, "weight_range=full")):
        text = edgec.compiler.plan(target, "int8", backend="onnx").pipeline
        assert expected in text
    assert "weight_range=full" in edgec.compiler.plan("raspberry-pi-4", "int8", backend="tflite").pipeline


def test_reduced_weights_stay_within_64_and_the_fused_kernels_match_the_ir(tmp_path, fmnist_calib):
    """On a CPU without VNNI, onnxruntime's fused u8s8 kernels ran LeNet-5 at 16 dB from its own Q/DQ graph
    with full-range weights; with [-64, 64] weights the deployed session must agree with the IR."""
    result = edgec.compile(
        "zoo:lenet5",
        target=replace(Registry().target("x86-64"), cpu=replace(Registry().target("x86-64").cpu, features=("+avx2",))),
        backend="onnx",
        opt="int8",
        calib=fmnist_calib,
        output_dir=tmp_path / "out",
    )
    proto = onnx.load(tmp_path / "out" / "model.onnx")
    weights = [
        onnx.numpy_helper.to_array(t) for t in proto.graph.initializer if t.data_type == onnx.TensorProto.INT8
    ]
    assert weights and max(int(np.abs(w.astype(np.int32)).max()) for w in weights) == 64
    assert result.report["backend_check"]["ok"] and result.report["backend_check"]["sqnr_db"] > 30
