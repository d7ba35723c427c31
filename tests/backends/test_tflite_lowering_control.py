"""If -> TFLite IF with branch subgraphs (the enclosing values each branch reads passed explicitly)."""

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert.interpreter", reason="pip install 'edgec[tflite]'")

from ai_edge_litert import schema_py_generated as schema  # noqa: E402

import edgec  # noqa: E402
from edgec.backends.tflite.lowering import lower  # noqa: E402
from edgec.frontends import tflite  # noqa: E402
from tests.frontends.test_tflite_import_ops import REAL_MODELS, _branch_subgraph  # noqa: E402
from tests.frontends.tflite_nets import Net, interpret  # noqa: E402


def _if_model() -> bytes:
    net = Net(seed=12)
    x = net.input([2, 3])
    mean = net.op("MEAN", [x, net.const([0, 1], np.int32)], "ReducerOptions", keepDims=False, shape=[])
    positive = net.op("GREATER", [mean, net.const(0.0)], dtype=np.bool_, shape=[])
    then_index = _branch_subgraph(net, "doubled", "MUL", 2.0)
    else_index = _branch_subgraph(net, "shifted", "ADD", 10.0)
    out = net.op("IF", [positive, x], "IfOptions", thenSubgraphIndex=then_index, elseSubgraphIndex=else_index,
                 shape=[2, 3])  # fmt: skip
    return net.to_bytes([out])


def test_if_relowers_with_both_branches():
    data = _if_model()
    lowered = lower(tflite.from_bytes(data))
    flat = schema.ModelT.InitFromPackedBuf(lowered, 0)
    assert len(flat.subgraphs) == 3
    for sign, expected_branch in ((1.0, lambda x: 2 * x), (-1.0, lambda x: x + 10)):
        feed = np.abs(np.random.default_rng(0).standard_normal((2, 3))).astype(np.float32) * sign
        (reference,) = interpret(data, [feed])
        (got,) = interpret(lowered, [feed])
        np.testing.assert_allclose(reference, expected_branch(feed), rtol=1e-6)
        np.testing.assert_allclose(got, reference, rtol=1e-6)


def test_wake_word_head_with_if_builds_for_tflite(tmp_path):
    """openWakeWord's hey_jarvis -O2 for the tflite backend: the IF and its 31-node true branch
    re-lowered; 12 inputs (both branches taken) against the original file."""
    path = REAL_MODELS / "oww-hey-jarvis.tflite"
    if not path.is_file():
        pytest.skip("build/realmodels/oww-hey-jarvis.tflite missing: run scripts/fetch-realmodels")
    result = edgec.compile(str(path), target="x86-64", backend="tflite", opt="2", output_dir=tmp_path / "o")
    assert result.artifact.info["operators"]["IF"] == 1
    rng = np.random.default_rng(0)
    scores = []
    for _ in range(12):
        feed = (rng.standard_normal((1, 16, 96)) * 10).astype(np.float32)
        (reference,) = interpret(path, [feed])
        (got,) = interpret(tmp_path / "o" / "model.tflite", [feed])
        assert np.max(np.abs(reference - got)) <= 1e-5  # probabilities; measured 1.3e-6
        scores.append(float(reference.item()))
    assert min(scores) < 0.01 and max(scores) > 0.99
