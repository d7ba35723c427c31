"""float-integer-ops: onnxruntime's quantize_dynamic output (ConvInteger, MatMulInteger,
DynamicQuantizeLSTM around DynamicQuantizeLinear) rewritten as float layers reading int8 weights,
which TFLite, TVM and TensorRT can take (they refused ddddocr's CRNN by operator name). Compared
with onnxruntime running the integer model: only the run-time activation rounding may differ."""

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import edgec
from edgec import ir
from edgec.passes.quantize.float_integer_ops import float_layers_from_integer_ops
from edgec.targets import host_int8_pair_sums_saturate
from tests.helpers import GraphBuilder

INTEGER_OPS = {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger", "DynamicQuantizeLSTM"}


def _float_model(path, hidden=16):
    b = GraphBuilder(seed=5)
    x = b.input("x", [1, 3, 6, 6])
    c = b.op("Relu", [b.op("Conv", [x, b.weight(8, 3, 3, 3), b.weight(8, scale=0.1)], pads=[1, 1, 1, 1])])
    f = b.op("Reshape", [c, b.const(np.array([1, -1], np.int64))])
    m = b.op("MatMul", [f, b.weight(8 * 6 * 6, 20, scale=0.05)])
    seq = b.op("Reshape", [m, b.const(np.array([2, 1, 10], np.int64))])
    y, _, _ = b.op("LSTM", [seq, b.weight(2, 4 * hidden, 10, scale=0.2), b.weight(2, 4 * hidden, hidden, scale=0.2)],
                   n_out=3, hidden_size=hidden, direction="bidirectional")
    b.output(y)
    onnx.save(b.proto(), path)


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    """(float model, its quantize_dynamic form) per weight scheme."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    work = tmp_path_factory.mktemp("dynamic")
    _float_model(work / "float.onnx")
    made = {}
    for name, weight_type, per_channel in (("u8", QuantType.QUInt8, False), ("s8-channel", QuantType.QInt8, True)):
        out = work / f"{name}.onnx"
        quantize_dynamic(str(work / "float.onnx"), str(out), weight_type=weight_type, per_channel=per_channel,
                         op_types_to_quantize=["Conv", "MatMul", "LSTM"])
        made[name] = out
    return work / "float.onnx", made


def _feeds(count=8):
    rng = np.random.default_rng(1)
    return [{"x": rng.normal(0, 1, (1, 3, 6, 6)).astype(np.float32)} for _ in range(count)]


def _sqnr(reference, other):
    return 10 * np.log10(np.sum(reference**2) / np.sum((reference - other) ** 2))


def _outputs(proto_or_path, feeds):
    source = proto_or_path.SerializeToString() if isinstance(proto_or_path, onnx.ModelProto) else str(proto_or_path)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return np.stack([session.run(None, f)[0] for f in feeds])


@pytest.mark.parametrize("scheme", ["u8", "s8-channel"])
def test_every_integer_layer_becomes_a_float_layer_within_activation_rounding(quantized, scheme):
    float_path, made = quantized
    graph = gs.import_onnx(onnx.load(made[scheme]))
    assert INTEGER_OPS <= {n.op for n in graph.nodes}
    assert float_layers_from_integer_ops(graph) == 3
    ops = {n.op for n in graph.nodes}
    assert not ops & INTEGER_OPS and {"Conv", "MatMul", "LSTM", "DequantizeLinear"} <= ops
    rewritten = gs.export_onnx(graph)
    onnx.checker.check_model(rewritten)
    feeds = _feeds()
    integer, floated, exact = _outputs(made[scheme], feeds), _outputs(rewritten, feeds), _outputs(float_path, feeds)
    if not (scheme == "s8-channel" and host_int8_pair_sums_saturate()):
        assert _sqnr(integer, floated) > 30.0  # the run-time 8-bit activation rounding, and nothing more
    # else onnxruntime's u8 x s8 kernels saturate their pair sums (x86 without VNNI): the integer
    # model itself is off there (12 dB from its rewrite), the rewrite computes what it means
    # Without that rounding the model is closer to the float model it was quantized from.
    assert _sqnr(exact, floated) > _sqnr(exact, integer) + 0.5
    # Conv and MatMul keep their 8-bit weights: the rewrite dequantizes exactly what they computed with.
    int_weights = [n for n in graph.nodes if n.op == "DequantizeLinear"]
    assert len(int_weights) == 2 and all(n.inputs[0].values.dtype in (np.int8, np.uint8) for n in int_weights)


def test_the_int32_bias_of_older_quantize_dynamic_folds_into_the_conv(quantized):
    """ddddocr's CRNN (onnxruntime 1.x of 2021) adds its bias in int32 before the Cast:
    Add(acc, Reshape(Cast(Floor(Div(b, x_scale * w_scale)))))."""
    _, made = quantized
    proto = onnx.load(made["u8"])
    graph = proto.graph
    add = next(n for n in graph.node if n.op_type == "Add" and any("bias" in i for i in n.input))
    scaled, bias_reshaped = add.input
    mul = next(n for n in graph.node if n.output[0] == scaled)
    cast = next(n for n in graph.node if n.output[0] == mul.input[0])
    conv = next(n for n in graph.node if n.output[0] == cast.input[0])
    reshape = next(n for n in graph.node if n.output[0] == bias_reshaped)
    bias_name, shape_name = reshape.input
    new = [
        helper.make_node("Div", [bias_name, mul.input[1]], ["b_div"]),
        helper.make_node("Floor", ["b_div"], ["b_floor"]),
        helper.make_node("Cast", ["b_floor"], ["b_int"], to=TensorProto.INT32),
        helper.make_node("Reshape", ["b_int", shape_name], ["b_int_shaped"]),
        helper.make_node("Add", [conv.output[0], "b_int_shaped"], ["acc_bias"]),
    ]
    cast.input[0] = "acc_bias"
    mul.output[0] = add.output[0]
    nodes = [n for n in graph.node if n is not add and n is not reshape]
    index = nodes.index(conv) + 1
    del graph.node[:]
    graph.node.extend(nodes[:index] + new + nodes[index:])
    onnx.checker.check_model(proto)
    feeds = _feeds(4)
    reference = _outputs(proto, feeds)
    imported = gs.import_onnx(proto)
    assert float_layers_from_integer_ops(imported) == 3
    conv_node = next(n for n in imported.nodes if n.op == "Conv")
    assert len(conv_node.inputs) == 3 and conv_node.inputs[2].values.shape == (8,)
    assert not {"Floor", "Div"} & {n.op for n in imported.nodes}
    assert _sqnr(reference, _outputs(gs.export_onnx(imported), feeds)) > 30.0


def test_a_pattern_that_does_not_match_is_left_for_the_backend_to_refuse(tmp_path):
    """ConvInteger reading a quantized graph input (no DynamicQuantizeLinear): nothing to rewrite."""
    w = helper.make_tensor("w", TensorProto.UINT8, [2, 1, 1, 1], [3, 5])
    node = helper.make_node("ConvInteger", ["x", "w"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 1, 2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, [1, 2, 2, 2])], [w])
    imported = gs.import_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
    assert float_layers_from_integer_ops(imported) == 0
    assert [n.op for n in imported.nodes] == ["ConvInteger"]


def test_tflite_builds_a_dynamically_quantized_model_and_runs_it_in_litert(quantized, tmp_path):
    pytest.importorskip("ai_edge_litert")
    from edgec.backends.tflite import interpreter_runner

    _, made = quantized
    result = edgec.compile(str(made["u8"]), target="raspberry-pi-4", opt="2", output_dir=tmp_path / "b")
    assert result.ok
    first = result.report["passes"][0]
    assert first["name"] == "float-integer-ops" and first["stats"]["layers_rewritten"] == 3
    assert first["check"]["ok"] and first["check"]["sqnr_db"] > 30.0
    assert not ir.has_integer_arithmetic(result.model.graph)
    artifact = result.artifact
    run = interpreter_runner((tmp_path / "b" / artifact.main).read_bytes(), artifact.info)
    feeds = _feeds(4)
    litert = np.stack([next(iter(run(f).values())) for f in feeds])
    assert _sqnr(_outputs(made["u8"], feeds), litert) > 30.0


def test_only_backends_without_integer_kernels_prepare_and_only_models_that_need_it(quantized):
    from edgec.registry import Registry

    float_path, made = quantized
    registry = Registry()
    integer, plain = ir.load(made["u8"]).graph, ir.load(float_path).graph
    for name in ("onnx", "openvino"):  # onnxruntime runs the operators; OpenVINO converts them
        assert registry.backend(name).prepare_passes(None, integer) == ""
    for name in ("tflite", "tvm", "tensorrt"):
        assert registry.backend(name).prepare_passes(None, integer) == "float-integer-ops"
        assert registry.backend(name).prepare_passes(None, plain) == ""


def test_a_pipeline_given_with_the_rewrite_first_does_not_get_it_twice(quantized, tmp_path):
    _, made = quantized
    result = edgec.compile(str(made["u8"]), target="raspberry-pi-4", passes="float-integer-ops,fold-constants",
                           output_dir=tmp_path / "b")
    assert [p["name"] for p in result.report["passes"]] == ["float-integer-ops", "fold-constants"]


def test_tensorrt_stores_the_uint8_weights_as_float_and_plans_a_float_engine(quantized, tmp_path):
    """TensorRT reads only symmetric int8: the uint8 weights with zero points that the rewrite
    leaves were refused by name; their float values are the same weights."""
    _, made = quantized
    result = edgec.compile(str(made["u8"]), target="jetson-orin-nano", opt="2", output_dir=tmp_path / "t")
    assert result.ok and result.report["backend_check"]["ok"]
    artifact = result.report["artifact"]
    assert artifact["precision"] == "fp16" and artifact["ir_precision"] == "fp32"
    legalized = "uint8 weights with a zero point stored as float (TensorRT reads symmetric int8 only)"
    assert artifact["legalized"][legalized] == 2
    written = onnx.load(tmp_path / "t" / "model.trt.onnx")
    assert not {"QuantizeLinear", "DequantizeLinear", "ConvInteger"} & {n.op_type for n in written.graph.node}
