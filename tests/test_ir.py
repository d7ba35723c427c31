import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import helper, numpy_helper

import edgec
from edgec import external_data, ir, runner
from edgec.errors import EdgecError, ModelLoadError
from tests.helpers import GraphBuilder, assert_equivalent, linf_rel, run


def test_save_load_round_trip_keeps_outputs_and_metadata(tmp_path):
    b = GraphBuilder()
    x = b.input("x", ["batch", 3])
    b.output(b.op("MatMul", [x, b.weight(3, 2)]))
    model = b.model()
    model.metadata["edgec.pipeline"] = "fold-constants"
    ir.save(model, tmp_path / "m.onnx")
    loaded = ir.load(tmp_path / "m.onnx")
    assert loaded.metadata == {"edgec.pipeline": "fold-constants"}
    assert loaded.input_specs() == [{"name": "x", "dtype": "float32", "shape": ["batch", 3]}]
    assert loaded.output_specs()[0]["shape"] == ["batch", 2]  # from shape inference
    assert_equivalent(model, loaded)


def test_old_opset_is_upgraded_into_the_supported_range(tmp_path):
    # Opset 11 Squeeze takes axes as an attribute; opset 13 takes them as an input.
    node = helper.make_node("Squeeze", ["x"], ["y"], axes=[1])
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", 1, [2, 1, 3])], [helper.make_tensor_value_info("y", 1, [2, 3])]
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    onnx.save(proto, tmp_path / "old.onnx")
    model = ir.load(tmp_path / "old.onnx")
    assert model.opset == ir.MIN_OPSET
    squeeze = next(n for n in model.graph.nodes if n.op == "Squeeze")
    assert len(squeeze.inputs) == 2 and "axes" not in squeeze.attrs
    x = np.arange(6, dtype=np.float32).reshape(2, 1, 3)
    np.testing.assert_array_equal(run(model, {"x": x})[0], x.reshape(2, 3))


def test_input_shapes_fix_dynamic_dims_and_reject_contradictions():
    b = GraphBuilder()
    x = b.input("x", ["N", 3])
    b.output(b.op("Relu", [x]))
    model = ir.from_proto(b.proto(), input_shapes={"x": [4, 3]})
    assert model.graph.inputs[0].shape == [4, 3] and model.graph.outputs[0].shape == [4, 3]
    with pytest.raises(EdgecError, match="dimension 3 is fixed in the model, 5 given"):
        ir.from_proto(b.proto(), input_shapes={"x": [4, 5]})
    with pytest.raises(EdgecError, match=r"no input of that name \(inputs: x\)"):
        ir.from_proto(b.proto(), input_shapes={"y": [4, 3]})
    with pytest.raises(EdgecError, match="rank 3 given, the model declares rank 2"):
        ir.from_proto(b.proto(), input_shapes={"x": [4, 3, 1]})


def test_external_data_past_the_size_limit(tmp_path, monkeypatch):
    """Models over 2 GiB keep their weights beside the .onnx file; the threshold is lowered
    here so the same code path runs on a 400 KB model."""
    monkeypatch.setattr(external_data, "THRESHOLD", 100_000)
    b = GraphBuilder()
    x = b.input("x", [1, 256])
    b.output(b.op("MatMul", [x, b.weight(256, 400)]))
    model = b.model()
    files = ir.save(model, tmp_path / "big.onnx")
    assert [f.name for f in files] == ["big.onnx", "big.onnx.data"]
    assert (tmp_path / "big.onnx").stat().st_size < 10_000
    assert (tmp_path / "big.onnx.data").stat().st_size == 256 * 400 * 4
    assert ir.serialized_size(model) == pytest.approx(256 * 400 * 4, rel=0.01)
    loaded = ir.load(tmp_path / "big.onnx")
    session = runner.make_session(tmp_path / "big.onnx")
    x = np.random.default_rng(0).standard_normal((1, 256)).astype(np.float32)
    expected = session.run(None, {"x": x})[0]
    np.testing.assert_array_equal(list(runner.run_model(loaded, [{"x": x}])[0].values())[0], expected)
    with pytest.raises(EdgecError, match="too large for one protobuf"):
        loaded.to_onnx()


def test_large_model_compiles_end_to_end(tmp_path, monkeypatch):
    """The whole build (load, passes with checks, shape inference, save) on the large-model path."""
    monkeypatch.setattr(external_data, "THRESHOLD", 50_000)
    b = GraphBuilder()
    x = b.input("x", [2, 128])
    y = b.op("MatMul", [b.op("Identity", [x]), b.weight(128, 256)])
    y = b.op("Add", [y, b.op("Mul", [b.weight(256), b.const(np.float32(2))])])  # foldable bias
    b.output(b.op("MatMul", [y, b.weight(256, 64)]))
    path = tmp_path / "in.onnx"
    ir.save(b.model(), path)
    assert (tmp_path / "in.onnx.data").is_file()
    result = edgec.compile(str(path), target="x86-64", backend="onnx", opt="2", output_dir=tmp_path / "out")
    assert result.ok and result.report["final_check"]["max_rel_err"] <= 1e-5
    assert sorted(result.manifest["files"]) == ["model.onnx", "model.onnx.data", "report.json", "report.md"]
    assert result.report["size_bytes"]["after"] >= (128 * 256 + 256 * 64) * 4
    feeds = {"x": np.ones((2, 128), np.float32)}
    original = runner.make_session(path).run(None, feeds)[0]
    optimized = runner.make_session(tmp_path / "out" / "model.onnx").run(None, feeds)[0]
    assert linf_rel(original, optimized) <= 1e-5


def test_missing_external_data_is_a_clear_error(tmp_path, monkeypatch):
    b = GraphBuilder()
    x = b.input("x", [1, 64])
    b.output(b.op("MatMul", [x, b.weight(64, 64)]))
    monkeypatch.setattr(external_data, "THRESHOLD", 1000)
    ir.save(b.model(), tmp_path / "m.onnx")
    (tmp_path / "m.onnx.data").unlink()
    with pytest.raises(ModelLoadError, match="external weight file missing"):
        ir.load(tmp_path / "m.onnx")


@pytest.mark.parametrize(
    "content,message",
    [
        (b"hello, this is a text file\n", "not an ONNX model"),
        (bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)), "not an ONNX model"),
        (b"", "not an ONNX model"),
    ],
)
def test_files_that_are_not_models(tmp_path, content, message):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=message):
        ir.load(path)


def test_truncated_protobuf(tmp_path):
    b = GraphBuilder()
    x = b.input("x", [1, 64])
    b.output(b.op("MatMul", [x, b.weight(64, 64)]))
    data = b.proto().SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="not an ONNX model|not a valid ONNX model"):
        ir.load(path)


def test_subgraph_weights_are_stored_once():
    """onnx-graphsurgeon copies an outer initializer into each subgraph that reads it."""
    w = numpy_helper.from_array(np.arange(1000, dtype=np.float32), "w")
    branch = lambda name: helper.make_graph(  # noqa: E731
        [helper.make_node("Add", ["x", "w"], [f"{name}_y"])],
        name,
        [],
        [helper.make_tensor_value_info(f"{name}_y", 1, [1000])],
    )
    node = helper.make_node("If", ["c"], ["y"], then_branch=branch("a"), else_branch=branch("b"))
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("c", 9, []), helper.make_tensor_value_info("x", 1, [1000])],
        [helper.make_tensor_value_info("y", 1, [1000])],
        [w],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model = ir.from_proto(proto)
    assert model.to_onnx().ByteSize() < proto.ByteSize() + 200


def test_an_inferred_output_shape_replaces_a_contradicting_declared_one():
    """ddddocr's CRNN declares its output [1, seqlen] though it computes [T, 1, 8210]; inference
    stopped at the declaration and left the lowering without a static output shape."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"]), helper.make_node("Relu", ["x"], ["z"])],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 5])],
        [
            helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, "seqlen"]),
            helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, [2, "width"]),
        ],
        [numpy_helper.from_array(np.array([2, 1, 5], np.int64), "shape")],
    )
    model = ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    ir.infer_shapes(model)
    shapes = {t.name: t.shape for t in model.graph.outputs}
    assert shapes == {"y": [2, 1, 5], "z": [2, 5]}


def test_a_declared_output_shape_stays_where_inference_knows_nothing():
    node = helper.make_node("Mystery", ["x"], ["y"], domain="com.example")
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 5])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [3, 4])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    model = ir.Model(gs.import_onnx(proto), {}, "<test>")
    ir.infer_shapes(model)
    assert model.graph.outputs[0].shape == [3, 4]


@pytest.mark.parametrize("name", ["lenet5", "mobilenetv2_fmnist"])
def test_shapes_inferred_without_weight_values_are_the_full_inference_shapes(name, monkeypatch):
    """infer_shapes hands ONNX the weights that only Conv/Gemm/MatMul-like ops read as unwritten
    references (their dims are all inference needs); every tensor's shape and type must come
    out as inference with every value written gives them."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "models" / f"{name}.onnx"
    skeleton, full = ir.load(path), ir.load(path)
    seen = []
    real_infer = ir._infer

    def counting(proto, strip=False):
        seen.append(proto.ByteSize())
        return real_infer(proto, strip)

    monkeypatch.setattr(ir, "_infer", counting)
    ir.infer_shapes(skeleton)
    monkeypatch.setattr(ir, "_never_shape_data", lambda constant: False)
    ir.infer_shapes(full)
    assert seen[0] < seen[1] / 4  # the weights stayed out
    shapes = {n: (t.shape, t.dtype) for n, t in skeleton.graph.tensors().items() if isinstance(t, gs.Variable)}
    expected = {n: (t.shape, t.dtype) for n, t in full.graph.tensors().items() if isinstance(t, gs.Variable)}
    assert shapes == expected and all(shape is not None for shape, _ in shapes.values())


def test_constants_read_as_shape_data_keep_their_values_for_inference():
    """A constant anything but a weight reader reads may feed data propagation (a Reshape's target
    shape computed from it): it is written out in full."""
    b = GraphBuilder()
    x = b.input("x", [1, 4, 6, 6])
    table = b.const(np.concatenate([[1, 144], np.zeros(400)]).astype(np.float32))  # >= 1 KiB
    head = b.op("Slice", [table, b.const(np.array([0])), b.const(np.array([2]))])
    shape = b.op("Cast", [head], to=onnx.TensorProto.INT64)
    weight = b.weight(4, 4, 3, 3)
    b.output(b.op("Reshape", [b.op("Conv", [x, weight], pads=[1, 1, 1, 1]), shape]))
    model = b.model()
    constants = {c.name: c for c in ir.constants(model.graph).values()}
    assert ir._never_shape_data(constants[weight]) and not ir._never_shape_data(constants[table])
