"""A model quantized by onnxruntime's quantize_dynamic (ConvInteger, MatMulInteger,
DynamicQuantizeLinear; no Q/DQ pairs), as ddddocr ships its CRNN: OpenVINO computes it in float
from the dequantized weights, so its outputs differ from onnxruntime's integer kernels by int8
rounding. The backend check held it to float32's 1e-4 (exit 1 on a correct artifact)."""

import numpy as np
import onnx
import pytest

import edgec
from edgec import ir
from tests.helpers import GraphBuilder


@pytest.fixture(scope="module")
def dynamic_int8(tmp_path_factory):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    work = tmp_path_factory.mktemp("dyn")
    b = GraphBuilder(seed=3)
    x = b.input("x", [1, 3, 16, 16])
    c = b.op("Relu", [b.op("Conv", [x, b.weight(16, 3, 3, 3), b.weight(16)], pads=[1, 1, 1, 1])])
    f = b.op("Flatten", [c])
    b.output(b.op("MatMul", [f, b.weight(16 * 16 * 16, 10, scale=0.05)]))
    onnx.save(b.proto(), work / "float.onnx")
    quantize_dynamic(str(work / "float.onnx"), str(work / "int8.onnx"), weight_type=QuantType.QUInt8,
                     op_types_to_quantize=["Conv", "MatMul"])
    return work / "int8.onnx"


def test_integer_operators_count_as_quantized_numerics(dynamic_int8):
    graph = ir.load(dynamic_int8).graph
    assert {"ConvInteger", "DynamicQuantizeLinear"} <= {n.op for n in ir.iter_nodes(graph)}
    assert ir.has_quantized_numerics(graph) and ir.compute_precision(graph) == "fp32"


def test_openvino_build_of_a_dynamically_quantized_model_validates(dynamic_int8, tmp_path):
    pytest.importorskip("openvino")
    from edgec.registry import Registry

    result = edgec.compile(str(dynamic_int8), target="x86-64", backend="openvino", opt="2", output_dir=tmp_path / "o")
    assert result.ok
    backend = Registry().backend("openvino")
    check = result.report["backend_check"]
    assert check["ok"] and check["max_rel_err"] > 0  # different numerics, within the quantized budget
    assert backend.check_tolerance(result.model) == backend.quantized_check()
