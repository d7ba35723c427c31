"""A real model over 2 GiB through the whole build (slow: writes and reads ~5 GB)."""

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import edgec
from edgec import runner

pytestmark = pytest.mark.slow


def test_model_over_2_gib_compiles(tmp_path):
    rng = np.random.default_rng(0)
    shapes = [(16384, 12288), (12288, 16384), (16384, 12288)]  # 3 x 805 MB of float32
    nodes = [helper.make_node("Identity", ["x"], ["x_id"])]
    graph = helper.make_graph(
        nodes,
        "big",
        [helper.make_tensor_value_info("x", 1, [1, shapes[0][0]])],
        [helper.make_tensor_value_info("y2", 1, [1, shapes[-1][1]])],
    )
    previous = "x_id"
    for i, shape in enumerate(shapes):
        weight = (rng.standard_normal(shape, dtype=np.float32) * 0.01).astype(np.float32)
        graph.initializer.append(numpy_helper.from_array(weight, f"w{i}"))  # one at a time: <2 GiB each
        graph.node.append(helper.make_node("MatMul", [previous, f"w{i}"], [f"y{i}"]))
        previous = f"y{i}"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    source = tmp_path / "big.onnx"
    onnx.save(model, str(source), save_as_external_data=True, location="big.onnx.data")
    del model, graph, weight

    result = edgec.compile(str(source), target="x86-64", opt="2", output_dir=tmp_path / "out")

    assert result.ok and result.report["final_check"]["max_rel_err"] <= 1e-5
    assert result.report["passes"][0]["modified"]  # the Identity went
    out = tmp_path / "out"
    assert (out / "model.onnx").stat().st_size < 100_000
    assert (out / "model.onnx.data").stat().st_size == sum(a * b for a, b in shapes) * 4
    feeds = {"x": rng.standard_normal((1, shapes[0][0])).astype(np.float32)}
    original = runner.make_session(source).run(None, feeds)[0]
    optimized = runner.make_session(out / "model.onnx").run(None, feeds)[0]
    np.testing.assert_array_equal(original, optimized)
