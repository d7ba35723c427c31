"""If branches that do not fit the static input shape they are never taken at (silero-vad: its
8 kHz branch squeezes an axis that is 2 at the 16 kHz input shape). fold-constants turned the
branches' Constant nodes into initializers, from which onnxruntime infers both branches' shapes
at load: the folded model no longer loaded (exit 2 for edgec's bug, on every backend)."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import edgec
import edgec.runtime
from edgec import ir, runner
from edgec.ir import iter_graphs
from edgec.pass_infra import PassContext, apply_pass
from edgec.passes.cleanup.fold_constants import FoldConstantsPass


def _branchy_model(path):
    """y = If(c, x + (2 * 3), x - 1), the constants as Constant nodes inside the branches."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])
    c = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])

    def const(name, value):
        return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, TensorProto.FLOAT, [], [value]))

    then = helper.make_graph(
        [const("two", 2.0), const("three", 3.0), helper.make_node("Mul", ["two", "three"], ["six"]),
         helper.make_node("Add", ["x", "six"], ["then_out"])],
        "then", [], [helper.make_tensor_value_info("then_out", TensorProto.FLOAT, [1, 2])],
    )
    other = helper.make_graph(
        [const("one", 1.0), helper.make_node("Sub", ["x", "one"], ["else_out"])],
        "else", [], [helper.make_tensor_value_info("else_out", TensorProto.FLOAT, [1, 2])],
    )
    graph = helper.make_graph([helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)], "g", [x, c], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_branches_stay_as_written_and_the_main_graph_folds(tmp_path):
    model = ir.load(_branchy_model(tmp_path / "if.onnx"))
    before = [[(n.op, [t.name for t in n.inputs]) for n in g.nodes] for g in list(iter_graphs(model.graph))[1:]]
    result = apply_pass(FoldConstantsPass(), model.graph, PassContext())
    after = [[(n.op, [t.name for t in n.inputs]) for n in g.nodes] for g in list(iter_graphs(model.graph))[1:]]
    assert after == before and not result.modified
    session = runner.make_session(model)
    x = np.array([[1.0, 2.0]], np.float32)
    assert runner.run(session, [{"x": x, "c": np.array(True)}])[0]["y"].tolist() == [[7.0, 8.0]]
    assert runner.run(session, [{"x": x, "c": np.array(False)}])[0]["y"].tolist() == [[0.0, 1.0]]


@pytest.fixture(scope="module")
def silero_vad():
    from bench.realmodels.corpus import BY_NAME

    path = BY_NAME["silero-vad"].path
    if not path.exists():
        pytest.skip(f"{path} missing: run scripts/fetch-realmodels (make test-data)")
    return path


def test_silero_vad_at_16khz_builds_and_its_runtime_runs_it_unoptimized(silero_vad, tmp_path):
    rng = np.random.default_rng(0)
    feeds = {
        "input": rng.standard_normal((4, 1, 512)).astype(np.float32) * 0.1,
        "state": np.zeros((4, 2, 1, 128), np.float32),
        "sr": np.full((4,), 16000, np.int64),
    }
    np.savez(tmp_path / "inputs.npz", **feeds)
    result = edgec.compile(
        str(silero_vad), target="x86-64", backend="onnx", opt="2", output_dir=tmp_path / "out",
        input_shapes={"input": [1, 512], "state": [2, 1, 128]}, inputs=str(tmp_path / "inputs.npz"),
    )
    assert result.ok
    # onnxruntime's own optimizer folds the branch constants and refuses the model at 1x512: the
    # runtime runs it unoptimized and says why; the report tells users of their own sessions.
    loaded = edgec.runtime.load(tmp_path / "out")
    assert loaded.unoptimized_because is not None and "If" in loaded.unoptimized_because
    assert any("ORT_DISABLE_ALL" in note for note in result.artifact.info["notes"])
    reference = runner.make_session(onnx.load(str(silero_vad)))
    one = {k: np.asarray(v[0]) for k, v in feeds.items()}
    expected = runner.run(reference, [one])[0]
    got = loaded.run(one)
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-4, atol=1e-6)
