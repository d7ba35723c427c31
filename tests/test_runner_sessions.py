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


def test_arena_sessions_give_their_unused_chunks_back_after_their_last_run():
    """Without the shrinkage an arena's memory outlived its session (DNSMOS -O int8: 2.27 GB peak,
    666 MB without the arena); after every run it cost the page faults the arena saves (ResNet-50
    calibration 8.9 -> 11.9 CPU s), so only a session's last run shrinks. onnxruntime refuses the
    option on a session without an arena, so only arena sessions get it, and both kinds run."""
    import numpy as np

    feeds = [{"x": np.array([[-1.0, 2.0, -3.0, 4.0]], np.float32) * k} for k in (1, 2, 3)]
    with_arena, without = runner.make_session(_model(), arena=True), runner.make_session(_model())
    assert runner.run_options(with_arena).get_run_config_entry("memory.enable_memory_arena_shrinkage") == "cpu:0"
    assert runner.run_options(with_arena, last=False) is None
    assert runner.run_options(without) is None
    for session in (with_arena, without):
        passed = []

        class Recording:
            def __getattr__(self, name):
                return getattr(session, name)

            def run(self, names, inputs, options=None):
                passed.append(options)
                return session.run(names, inputs, options)

        outputs = runner.run(Recording(), feeds)
        for k, out in zip((1, 2, 3), outputs):
            np.testing.assert_array_equal(out[session.get_outputs()[0].name], [[0, 2 * k, 0, 4 * k]])
        shrinking = [o is not None and o.get_run_config_entry("memory.enable_memory_arena_shrinkage") == "cpu:0"
                     for o in passed]
        assert shrinking == ([False, False, True] if session is with_arena else [False] * 3)


def _weighted_model():
    """A 2 MB float weight, int8 weights behind DequantizeLinear, and an If whose branch holds its
    own 4 KB weight (stays inline: not a top-level initializer)."""
    import numpy as np
    from onnx import helper

    b = GraphBuilder(seed=3)
    x = b.input("x", [2, 512])
    h = b.op("MatMul", [x, b.weight(512, 1024)])
    codes = b.const(np.random.default_rng(1).integers(-127, 128, (1024, 64)).astype(np.int8))
    h = b.op("MatMul", [h, b.op("DequantizeLinear", [codes, b.const(np.float32(0.01)), b.const(np.int8(0))])])
    values = np.linspace(-1, 1, 1024).astype(np.float32)
    branch_weight = helper.make_tensor("branch_w", onnx.TensorProto.FLOAT, [64, 16], values)
    then = helper.make_graph(
        [helper.make_node("MatMul", [h, "branch_w"], ["then_out"])], "then", [],
        [helper.make_tensor_value_info("then_out", onnx.TensorProto.FLOAT, [2, 16])], [branch_weight],
    )
    other = helper.make_graph(
        [helper.make_node("Slice", [h, b.const(np.array([0], np.int64)), b.const(np.array([16], np.int64)),
                                    b.const(np.array([1], np.int64))], ["else_out"])], "else", [],
        [helper.make_tensor_value_info("else_out", onnx.TensorProto.FLOAT, [2, 16])],
    )
    flag = b.op("Greater", [b.op("ReduceSum", [x], keepdims=0), b.const(np.float32(0.0))])
    b.output(b.op("If", [flag], then_branch=then, else_branch=other))
    return b.model()


def test_sessions_read_large_weights_in_place_with_the_same_outputs(monkeypatch):
    """Top-level weights of 1 KB or more reach onnxruntime as in-memory external initializers,
    not inside the serialized model: the same outputs bit for bit, with and without optimization
    and with the int8 weights dequantized, from a proto of a few KB."""
    import numpy as np
    import onnxruntime as ort

    from edgec import ir

    model = _weighted_model()
    before = {id(c): c.values.copy() for c in ir.constants(model.graph).values()}
    samples = [{"x": np.random.default_rng(s).standard_normal((2, 512)).astype(np.float32) * (1 if s else -1)}
               for s in range(2)]
    sizes = []
    original = ort.InferenceSession

    def recording(proto, *args, **kwargs):
        sizes.append(len(proto))
        return original(proto, *args, **kwargs)

    for options in ({}, {"optimize": True}, {"dequantize_weights": True}):
        proto = model.to_onnx()
        if options.get("dequantize_weights"):
            proto = runner.dequantized_weights(proto)
        session_options = runner.session_options(options.get("optimize", False))
        serialized = original(proto.SerializeToString(), session_options, providers=["CPUExecutionProvider"])
        expected = [serialized.run(None, s) for s in samples]
        monkeypatch.setattr(runner.ort, "InferenceSession", recording)
        session = runner.make_session(model, **options)
        monkeypatch.setattr(runner.ort, "InferenceSession", original)
        for sample, want in zip(samples, expected):
            got = session.run(None, sample)
            assert all(np.array_equal(a, b) for a, b in zip(got, want)), options
    assert len(sizes) == 3 and max(sizes) < 16 << 10  # the 2 MB and the int8 weights stayed out
    # onnxruntime only read the graph's arrays: not one changed
    assert all(np.array_equal(before[id(c)], c.values) for c in ir.constants(model.graph).values())
    assert len(model.to_onnx().SerializeToString()) > 2 << 20


def test_a_dead_dequantize_of_weights_does_not_break_a_session():
    """quantize scored re-rounded copies of a weight-only int8 model's weights while their original
    DequantizeLinear still stood, read by nothing: dequantized for the check session, its float32
    result became an in-memory initializer no node reads, which onnxruntime drops and then fails to
    attach ("ReplaceInitializedTensorImpl Failed to find existing initializer"; an internal error
    on hosts without VNNI, where the weight range is measured). Dead nodes stay out of sessions."""
    import numpy as np
    import onnxruntime as ort

    b = GraphBuilder(seed=4)
    rng = np.random.default_rng(0)
    b.op("DequantizeLinear", [b.const(rng.integers(-127, 128, (64, 64)).astype(np.int8)), b.const(np.float32(0.02))])
    live = b.op("DequantizeLinear", [b.const(rng.integers(-127, 128, (64, 8)).astype(np.int8)), b.const(np.float32(0.01))])
    b.output(b.op("MatMul", [b.op("MatMul", [b.input("x", [1, 64]), b.weight(64, 64)]), live]))
    model = b.model()
    sample = {"x": rng.standard_normal((1, 64)).astype(np.float32)}
    for options in ({}, {"optimize": True}, {"dequantize_weights": True}):
        serialized = ort.InferenceSession(
            model.to_onnx().SerializeToString(), runner.session_options(options.get("optimize", False)),
            providers=["CPUExecutionProvider"],
        )
        got = runner.make_session(model, **options).run(None, sample)
        assert np.array_equal(got[0], serialized.run(None, sample)[0]), options
    assert len(model.graph.nodes) == 4  # the model keeps its dead DequantizeLinear: only sessions drop it


def test_dead_node_removal_keeps_every_live_node_of_an_unsorted_graph():
    """A consumer listed before its producer (onnxruntime sorts for itself) is still live."""
    from onnx import helper

    from edgec.runner import _without_dead_nodes

    nodes = [
        helper.make_node("Neg", ["a"], ["y"]),  # reads a, written below
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Abs", ["x"], ["dead"]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
        [helper.make_tensor("unread", onnx.TensorProto.FLOAT, [1], [1.0])],
    )
    assert _without_dead_nodes(graph) == set()
    assert [n.op_type for n in graph.node] == ["Neg", "Relu"]
