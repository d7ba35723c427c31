"""Models quantized by onnxruntime's quantize_static (uint8 activations, per-channel int8 weights,
its own Softmax/Sigmoid output scales) lower to TFLite (smart-turn failed with exit 3: "input->type
== kTfLiteInt8 ... CONV_2D failed to prepare", then "output->params.scale not near 1.f / 256")."""

import numpy as np
import onnx
import pytest

import edgec
from tests.helpers import GraphBuilder

pytest.importorskip("ai_edge_litert.interpreter", reason="pip install 'edgec[tflite]'")


def _ort_quantized(tmp_path, head):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    b = GraphBuilder(seed=2)
    x = b.input("x", [1, 3, 12, 12])
    c = b.op("Conv", [x, b.weight(8, 3, 3, 3), b.weight(8)], pads=[1, 1, 1, 1])
    r = b.op("Relu", [c])
    flat = b.op("Flatten", [b.op("GlobalAveragePool", [r])])
    logits = b.op("Gemm", [flat, b.weight(5, 8), b.weight(5)], transB=1)
    b.output(b.op(head, [logits], **({"axis": 1} if head == "Softmax" else {})))
    onnx.save(b.proto(), tmp_path / "float.onnx")
    rng = np.random.default_rng(0)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"x": rng.normal(0, 1, (1, 3, 12, 12)).astype(np.float32)} for _ in range(16)])

        def get_next(self):
            return next(self.items, None)

    quantize_static(
        str(tmp_path / "float.onnx"), str(tmp_path / "q.onnx"), Reader(), quant_format=QuantFormat.QDQ,
        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
    )
    return tmp_path / "q.onnx"


@pytest.mark.parametrize("head", ["Softmax", "Sigmoid", "Tanh"])
def test_onnxruntime_quantized_model_builds_for_tflite(tmp_path, head):
    from ai_edge_litert import schema_py_generated as schema

    model = _ort_quantized(tmp_path, head)
    zero_points = {i.name: onnx.numpy_helper.to_array(i).dtype for i in onnx.load(str(model)).graph.initializer}
    assert np.dtype(np.uint8) in zero_points.values()  # the source really has uint8 activations
    result = edgec.compile(str(model), target="raspberry-pi-4", opt="2", output_dir=tmp_path / "o")
    assert result.ok and result.report["backend_check"]["ok"]
    flat = schema.ModelT.InitFromObj(schema.Model.GetRootAs((tmp_path / "o" / "model.tflite").read_bytes(), 0))
    types = {t.type for t in flat.subgraphs[0].tensors}
    assert schema.TensorType.UINT8 not in types and schema.TensorType.INT8 in types
