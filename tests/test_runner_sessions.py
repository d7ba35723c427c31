"""Build-time onnxruntime sessions do not spin idle threads (CPU seconds of the build); the
device runtime's sessions keep onnxruntime's default."""

import onnx

from edgec import runner, runtime
from tests.helpers import GraphBuilder


def _spinning(session) -> str | None:
    entries = session.get_session_options().get_session_config_entry
    try:
        return entries("session.intra_op.allow_spinning")
    except Exception:  # noqa: BLE001 - not set: onnxruntime's default (spinning)
        return None


def _model():
    b = GraphBuilder()
    b.output(b.op("Relu", [b.input("x", [1, 4])]))
    return b.model()


def test_build_sessions_do_not_spin():
    assert _spinning(runner.make_session(_model())) == "0"
    assert _spinning(runner.make_session(_model(), optimize=True)) == "0"


def test_device_runtime_sessions_keep_the_default():
    proto: onnx.ModelProto = _model().to_onnx()
    session, why = runtime.optimized_session(proto)
    assert why is None and _spinning(session) in (None, "1")


def test_the_arena_only_for_runs_whose_activations_fit():
    """onnxruntime's CPU arena saves the page faults of fresh activation buffers in every run
    (ResNet-50 -O int8: 9.5 -> 6.3 sys CPU s), but holds up to ~2x a run's peak until the session
    ends (PP-OCRv4's detector at 640x640: 2.06 GB peak instead of 1.45): only runs whose
    activations sum to ARENA_ACTIVATION_BYTES or less get it."""
    import onnx_graphsurgeon as gs

    small = _model()
    assert runner.arena_pays(small.graph)
    b = GraphBuilder()
    side = 4096  # 3 x 4096 x 4096 float32: 192 MB per tensor, input and output 384 MB
    b.output(b.op("Relu", [b.input("x", [1, 3, side, side])]))
    large = b.model()
    assert runner.arena_pays(large.graph) and not runner.arena_pays(large.graph, batch=2)
    relu = large.graph.nodes[0]
    hidden = gs.Variable("hidden", dtype=relu.outputs[0].dtype)  # unknown shape: counted as the largest
    large.graph.nodes.append(gs.Node("Relu", inputs=[relu.outputs[0]], outputs=[hidden]))
    assert not runner.arena_pays(large.graph)
    assert runner.session_options(arena=True).enable_cpu_mem_arena
    assert not runner.session_options().enable_cpu_mem_arena


def test_arena_sessions_give_their_unused_chunks_back_after_each_run():
    """Without the shrinkage an arena's memory outlived its session (DNSMOS -O int8: 2.27 GB peak,
    666 MB without the arena, 771 MB with the shrinkage); onnxruntime refuses the option on a
    session without an arena, so only arena sessions get it, and both kinds run."""
    import numpy as np

    feeds = [{"x": np.array([[-1.0, 2.0, -3.0, 4.0]], np.float32)}]
    with_arena, without = runner.make_session(_model(), arena=True), runner.make_session(_model())
    assert runner.run_options(with_arena).get_run_config_entry("memory.enable_memory_arena_shrinkage") == "cpu:0"
    assert runner.run_options(without) is None
    for session in (with_arena, without):
        np.testing.assert_array_equal(runner.run(session, feeds)[0][session.get_outputs()[0].name], [[0, 2, 0, 4]])
