"""The .tflite writer: files it packs load in LiteRT's interpreter and compute what numpy does."""

import numpy as np
import pytest

litert = pytest.importorskip("ai_edge_litert.interpreter", reason="pip install 'edgec[tflite]'")

from ai_edge_litert import schema_py_generated as schema  # noqa: E402

from edgec.backends.tflite.flatbuffer import ModelBuilder, Quantization  # noqa: E402


def run(data: bytes, *inputs: np.ndarray) -> list[np.ndarray]:
    interpreter = litert.Interpreter(model_content=data)
    interpreter.allocate_tensors()
    for detail, value in zip(interpreter.get_input_details(), inputs, strict=True):
        interpreter.set_tensor(detail["index"], value)
    interpreter.invoke()
    return [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]


def test_fully_connected_relu_then_broadcast_add_matches_numpy():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 4)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    c = rng.standard_normal((1, 3)).astype(np.float32)
    m = ModelBuilder()
    x = m.tensor("x", [2, 4], np.float32)
    h = m.tensor("h", [2, 3], np.float32)
    y = m.tensor("y", [2, 3], np.float32)
    options = schema.FullyConnectedOptionsT()
    options.fusedActivationFunction = schema.ActivationFunctionType.RELU
    m.operator(
        schema.BuiltinOperator.FULLY_CONNECTED,
        [x, m.constant("w", w), m.constant("b", b)],
        [h],
        options,
        schema.BuiltinOptions.FullyConnectedOptions,
    )
    m.operator(
        schema.BuiltinOperator.ADD, [h, m.constant("c", c)], [y], schema.AddOptionsT(), schema.BuiltinOptions.AddOptions
    )
    m.set_io([x], [y])
    data = m.to_bytes()
    assert data[4:8] == b"TFL3"
    xs = rng.standard_normal((2, 4)).astype(np.float32)
    (got,) = run(data, xs)
    np.testing.assert_allclose(got, np.maximum(xs @ w.T + b, 0) + c, rtol=1e-6, atol=1e-6)


def test_opcodes_are_shared_and_builtins_past_127_use_the_placeholder():
    m = ModelBuilder()
    assert m.opcode(schema.BuiltinOperator.ADD) == m.opcode(schema.BuiltinOperator.ADD) == 0
    assert m.opcode(schema.BuiltinOperator.ADD, version=2) == 1
    big = m.opcode(schema.BuiltinOperator.GELU)  # 150
    code = m.model.operatorCodes[big]
    assert code.builtinCode == 150 and code.deprecatedBuiltinCode == 127


def test_int8_quantize_dequantize_round_trip_with_per_tensor_parameters():
    m = ModelBuilder()
    x = m.tensor("x", [1, 5], np.float32)
    q = m.tensor("q", [1, 5], np.int8, quantization=Quantization(np.array([0.05]), np.array([3])))
    y = m.tensor("y", [1, 5], np.float32)
    m.operator(schema.BuiltinOperator.QUANTIZE, [x], [q])
    m.operator(schema.BuiltinOperator.DEQUANTIZE, [q], [y])
    m.set_io([x], [y])
    xs = np.array([[-1.0, -0.26, 0.0, 0.51, 5.0]], np.float32)
    (got,) = run(m.to_bytes(), xs)
    expected = (np.clip(np.round(xs / 0.05) + 3, -128, 127) - 3) * 0.05
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_bad_constants_are_refused():
    m = ModelBuilder()
    with pytest.raises(ValueError, match="no type for"):
        m.constant("c", np.zeros(2, np.complex64))
    with pytest.raises(ValueError, match="data shape"):
        m.tensor("t", [3], np.float32, data=np.zeros(2, np.float32))
