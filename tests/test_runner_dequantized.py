"""Check runs take constant int8 weights already dequantized (runner.dequantized_weights): the
same outputs bit for bit as onnxruntime dequantizing them in every run, in fewer nodes."""

import numpy as np
import onnx

from edgec import runner
from tests.helpers import GraphBuilder, feeds_for


def _dequantize(b: GraphBuilder, codes: np.ndarray, scale, zero_point=None, **attrs) -> str:
    inputs = [b.const(codes), b.const(np.asarray(scale, np.float32))]
    if zero_point is not None:
        inputs.append(b.const(zero_point))
    return b.op("DequantizeLinear", inputs, **attrs)


def _qdq_model():
    """Conv with per-channel int8 weights and an int32 bias, MatMul with per-tensor uint8 weights
    and a zero point, activations through Q/DQ, and a constant DequantizeLinear that is itself a
    graph output (which must stay a node)."""
    b = GraphBuilder(seed=3)
    rng = b.rng
    x = b.input("x", [1, 3, 8, 8])
    q = b.op("QuantizeLinear", [x, b.const(np.float32(0.02)), b.const(np.uint8(131))])
    x = b.op("DequantizeLinear", [q, b.const(np.float32(0.02)), b.const(np.uint8(131))])
    codes = rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    weights = _dequantize(b, codes, rng.uniform(1e-3, 3e-2, 4), np.zeros(4, np.int8), axis=0)
    bias_codes = rng.integers(-5000, 5000, 4).astype(np.int32)
    bias = _dequantize(b, bias_codes, rng.uniform(1e-5, 1e-4, 4).astype(np.float32), axis=0)
    y = b.op("Conv", [x, weights, bias], pads=[1, 1, 1, 1])
    y = b.op("Reshape", [y, b.const(np.array([4, 64], np.int64))])
    matrix = _dequantize(b, rng.integers(0, 256, (64, 5)).astype(np.uint8), 0.013, np.uint8(7))
    b.output(b.op("MatMul", [y, matrix]))
    b.output(_dequantize(b, np.arange(-3, 3, dtype=np.int8), 0.5, np.int8(1)))
    return b.model()


def test_dequantized_weights_give_the_same_outputs_bit_for_bit():
    model = _qdq_model()
    samples = [feeds_for(model, seed) for seed in range(4)]
    dequantizing = runner.run(runner.make_session(model), samples)  # onnxruntime's kernel, every run
    folded = runner.run_model(model, samples)
    for a, b in zip(dequantizing, folded):
        assert a.keys() == b.keys()
        for name in a:
            assert a[name].dtype == b[name].dtype and np.array_equal(a[name], b[name]), name


def test_only_constant_dequantizations_that_are_not_outputs_fold():
    proto: onnx.ModelProto = runner.dequantized_weights(_qdq_model().to_onnx())
    left = [n for n in proto.graph.node if n.op_type == "DequantizeLinear"]
    # the activation's and the graph output's stay; the Conv's weight and bias and the MatMul's fold
    assert len(left) == 2
    assert {i.name for i in proto.graph.initializer if i.data_type == onnx.TensorProto.FLOAT and len(i.dims) == 4}
    onnx.checker.check_model(proto)
    constants = {i.name for i in proto.graph.initializer}
    readers = {name for node in proto.graph.node for name in node.input}
    assert constants <= readers | {o.name for o in proto.graph.output}  # no stored codes left behind
