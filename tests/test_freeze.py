"""--freeze-input NAME=VALUE: an input bound to a fixed value leaves the model, and an If on it
becomes the branch it takes (silero-vad's sample rate: its LSTM sat in If bodies that -O int8
could not quantize and TFLite could not unroll)."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgec
from edgec.cli import main

RNG = np.random.default_rng(4)
W = RNG.normal(0, 0.5, (4, 4)).astype(np.float32)


def _model_with_a_mode_input(path):
    """y = Relu(x @ W) when mode == 1, else Sigmoid(x * 2); the branch sizes its output with a
    Shape chain, as exporters write it."""
    then_branch = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Relu", ["xw"], ["then_y"])],
        "then", [], [helper.make_tensor_value_info("then_y", TensorProto.FLOAT, None)],
    )
    else_branch = helper.make_graph(
        [
            helper.make_node("Constant", [], ["two"], value=numpy_helper.from_array(np.array(2, np.float32))),
            helper.make_node("Mul", ["x", "two"], ["x2"]),
            helper.make_node("Sigmoid", ["x2"], ["else_y"]),
        ],
        "else", [], [helper.make_tensor_value_info("else_y", TensorProto.FLOAT, None)],
    )
    nodes = [
        helper.make_node("Constant", [], ["one"], value=numpy_helper.from_array(np.array(1, np.int64))),
        helper.make_node("Equal", ["mode", "one"], ["is_one"]),
        helper.make_node("If", ["is_one"], ["branch_y"], then_branch=then_branch, else_branch=else_branch),
        helper.make_node("Add", ["branch_y", "x"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "mode",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
            helper.make_tensor_value_info("mode", TensorProto.INT64, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(W, "W")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return _model_with_a_mode_input(tmp_path_factory.mktemp("freeze") / "mode.onnx")


def _original(path, x, mode):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x, "mode": np.array(mode, np.int64)})[0]


@pytest.mark.parametrize("mode", [1, 0])
def test_the_frozen_input_leaves_the_model_and_the_if_becomes_its_branch(model, tmp_path, mode):
    result = edgec.compile(str(model), target="x86-64", backend="onnx", output_dir=tmp_path / "b",
                           frozen_inputs={"mode": mode})
    assert result.ok
    built = onnx.load(tmp_path / "b" / "model.onnx")
    assert [i.name for i in built.graph.input] == ["x"]
    assert "If" not in {n.op_type for n in built.graph.node}
    x = RNG.normal(0, 1, (1, 4)).astype(np.float32)
    got = ort.InferenceSession(str(tmp_path / "b" / "model.onnx")).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, _original(model, x, mode), rtol=1e-6, atol=1e-6)
    assert f"input 'mode' frozen to {mode} (int64); it is no longer an input" in result.report["warnings"]
    folded = next(p for p in result.report["passes"] if p["name"] == "fold-constants")
    assert folded["stats"]["inlined_ifs"] == 1


def test_a_frozen_build_lowers_to_tflite_and_litert_computes_the_taken_branch(model, tmp_path):
    pytest.importorskip("ai_edge_litert")
    from edgec.backends.tflite import interpreter_runner

    result = edgec.compile(str(model), target="raspberry-pi-4", output_dir=tmp_path / "t", frozen_inputs={"mode": 1})
    assert result.ok
    run = interpreter_runner((tmp_path / "t" / result.artifact.main).read_bytes(), result.artifact.info)
    x = RNG.normal(0, 1, (1, 4)).astype(np.float32)
    np.testing.assert_allclose(next(iter(run({"x": x}).values())), _original(model, x, 1), rtol=1e-5, atol=1e-6)


def test_the_cli_freezes_and_refuses_values_that_do_not_fit(model, tmp_path, capsys):
    argv = [str(model), "-t", "x86-64", "--backend", "onnx"]
    assert main([*argv, "--freeze-input", "mode=1", "-o", str(tmp_path / "ok"), "-q"]) == 0
    assert "input 'mode' frozen to 1" in capsys.readouterr().err
    cases = [
        ("nope=1", "the model has no input 'nope' (inputs: x, mode)"),
        ("mode=1.5", "1.5 does not fit the input's int64"),
        ("mode=1e30", "does not fit the input's int64"),
        ("mode=", "expected NAME=VALUE"),
        ("mode=abc", "expected NAME=VALUE"),
        ("mode=1,2", "2 value(s) do not fill the input's shape (a scalar)"),
        ("x=nan", "is not finite"),
    ]
    for index, (value, message) in enumerate(cases):
        out = tmp_path / f"bad{index}"
        code = main([*argv, "--freeze-input", value, "-o", str(out), "-q"])
        err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("edgec:")]
        assert code == 2 and len(err) == 1 and message in err[0], (value, err)
        assert not out.exists()


def test_a_value_fills_a_static_shape(model, tmp_path):
    """x frozen to one value broadcast over its [1, 4]: the model then has no input at all but mode."""
    result = edgec.compile(str(model), target="x86-64", backend="onnx", output_dir=tmp_path / "b",
                           frozen_inputs={"x": 0.5, "mode": 0})
    assert result.ok
    built = onnx.load(tmp_path / "b" / "model.onnx")
    assert list(built.graph.input) == []
    y = ort.InferenceSession(str(tmp_path / "b" / "model.onnx")).run(None, {})[0]
    np.testing.assert_allclose(y, _original(model, np.full((1, 4), 0.5, np.float32), 0), rtol=1e-6)


def test_an_if_on_a_static_shape_folds_to_its_branch(tmp_path):
    """silero-vad's decoder branches on its state's size; with static shapes simplify-shapes
    decides the If, inlines the branch and folds what the branch computes from shapes."""
    then_branch = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["then_y"])], "then", [],
        [helper.make_tensor_value_info("then_y", TensorProto.FLOAT, None)],
    )
    else_branch = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["else_y"])], "else", [],
        [helper.make_tensor_value_info("else_y", TensorProto.FLOAT, None)],
    )
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
        helper.make_node("Equal", ["batch", "one"], ["single"]),
        helper.make_node("If", ["single"], ["y"], then_branch=then_branch, else_branch=else_branch),
    ]
    graph = helper.make_graph(
        nodes, "shape_if", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(np.array(0, np.int64), "zero"), numpy_helper.from_array(np.array(1, np.int64), "one")],
    )
    path = tmp_path / "shape_if.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    result = edgec.compile(str(path), target="raspberry-pi-4", output_dir=tmp_path / "t", input_shapes={"x": [1, 4]})
    assert result.ok
    assert {n.op for n in result.model.graph.nodes} == {"Relu"}
    simplified = next(p for p in result.report["passes"] if p["name"] == "simplify-shapes")
    assert simplified["modified"] and simplified["stats"]["shape_ops_replaced"] >= 2
