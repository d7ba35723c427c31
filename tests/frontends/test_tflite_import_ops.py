"""TFLite import of the operators real float/int8 and streaming models use (EQUAL, PACK, SELECT,
SHAPE, SQUARE, SPLIT_V, resource variables with CALL_ONCE), and refusal of files LiteRT refuses."""

import json

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert.interpreter", reason="pip install 'edgec[tflite]'")

from ai_edge_litert import schema_py_generated as schema  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

from edgec.errors import ModelLoadError  # noqa: E402
from edgec.frontends import tflite  # noqa: E402
from edgec.frontends.tflite_state import METADATA_KEY, initial_state  # noqa: E402
from tests.frontends.tflite_nets import (  # noqa: E402
    Net,
    assign_variable,
    init_subgraph,
    interpret,
    interpret_stream,
    q,
    read_variable,
    var_handle,
)
from tests.helpers import linf_rel, op_counts, run  # noqa: E402

SAME = schema.Padding.SAME
REAL_MODELS = __import__("pathlib").Path(__file__).resolve().parents[2] / "build" / "realmodels"


def _compare(data, model, feeds) -> float:
    reference = interpret(data, feeds)
    got = run(model, {t.name: f for t, f in zip(model.graph.inputs, feeds)})
    worst = 0.0
    for r, g in zip(reference, got, strict=True):
        assert r.dtype == g.dtype and r.shape == g.shape, (r.dtype, g.dtype, r.shape, g.shape)
        if r.dtype == np.bool_ or np.issubdtype(r.dtype, np.integer):
            worst = max(worst, float(np.max(np.abs(r.astype(np.int64) - g.astype(np.int64)), initial=0)))
        else:
            worst = max(worst, linf_rel(r, g))
    return worst


def _equal_select(net):
    """EQUAL of two rounded inputs (many ties) picks between them with SELECT_V2 (broadcast condition)."""
    x, y = net.input([2, 3, 4], low=-2, high=2), net.input([2, 3, 4], low=-2, high=2)
    rx = net.op("ROUND", [x])
    ry = net.op("ROUND", [y])
    equal = net.op("EQUAL", [rx, ry], dtype=np.bool_)
    picked = net.op("SELECT_V2", [equal, x, net.random((4,))])
    not_equal = net.op("NOT_EQUAL", [rx, ry], dtype=np.bool_)
    return [picked, equal, not_equal]


def _select_v1_rows(net):
    """SELECT (v1) with a rank-1 condition picks whole rows."""
    c, x, y = net.input([3], low=-1, high=1), net.input([3, 5]), net.input([3, 5])
    condition = net.op("LESS", [c, net.const([0.0])], dtype=np.bool_)
    return [net.op("SELECT", [condition, x, y])]


def _select_nchw(net):
    """SELECT_V2 right after a convolution (its NCHW view) with a constant and a 4-D condition."""
    x = net.input([1, 5, 6, 3])
    conv = net.op(
        "CONV_2D", [x, net.random((4, 3, 3, 3)), net.random(4)], "Conv2DOptions", padding=SAME, strideH=1, strideW=1
    )
    positive = net.op("GREATER", [conv, net.const(0.0)], dtype=np.bool_)
    return [net.op("SELECT_V2", [positive, conv, net.random((1, 1, 1, 4))])]


def _pack(net):
    a, b = net.input([2, 3]), net.input([2, 3])
    return [
        net.op("PACK", [a, b, net.random((2, 3))], "PackOptions", valuesCount=3, axis=1),
        net.op("PACK", [a, b], "PackOptions", valuesCount=2, axis=-1),
        net.op(
            "PACK",
            [net.const([1, 2], np.int32), net.const([3, 4], np.int32)],
            "PackOptions",
            np.int32,
            valuesCount=2,
            axis=0,
        ),
    ]


def _shape(net):
    """SHAPE, and what converters compute from it (the batch, packed with -1 into a flatten shape)."""
    x = net.input([2, 3, 5])
    shape = net.op("SHAPE", [x], "ShapeOptions", np.int32, outType=schema.TensorType.INT32)
    batch = net.op(
        "STRIDED_SLICE",
        [shape, net.const([0], np.int32), net.const([1], np.int32), net.const([1], np.int32)],
        "StridedSliceOptions",
        np.int32,
        shrinkAxisMask=1,
    )
    flat = net.op("PACK", [batch, net.const(-1, np.int32)], "PackOptions", np.int32, valuesCount=2, axis=0)
    return [shape, flat]


def _square(net):
    x = net.input([1, 4, 5, 3])
    conv = net.op(
        "CONV_2D", [x, net.random((2, 1, 1, 3)), net.random(2)], "Conv2DOptions", padding=SAME, strideH=1, strideW=1
    )
    return [net.op("SQUARE", [x]), net.op("SQUARE", [conv])]


def _split_v(net):
    x = net.input([1, 4, 5, 9])
    conv = net.op(
        "CONV_2D", [x, net.random((7, 1, 1, 9)), net.random(7)], "Conv2DOptions", padding=SAME, strideH=1, strideW=1
    )
    outs = []
    for source, sizes, axis in ((x, [2, -1, 4], 3), (conv, [3, 4], -1), (x, [1, 3], 1)):
        count = len(sizes)
        tensors = [net.builder.tensor(net._name("split_v"), [1], np.float32) for _ in range(count)]
        options = schema.SplitVOptionsT()
        options.numSplits = count
        net.builder.operator(
            schema.BuiltinOperator.SPLIT_V,
            [source, net.const(sizes, np.int32), net.const(axis, np.int32)],
            tensors,
            options,
            schema.BuiltinOptions.SplitVOptions,
        )
        outs += tensors
    return outs


FLOAT_CASES = {
    "equal_not_equal_select_v2": _equal_select,
    "select_v1_rows": _select_v1_rows,
    "select_v2_after_conv_nchw": _select_nchw,
    "pack": _pack,
    "shape_and_computed_reshape": _shape,
    "square": _square,
    "split_v": _split_v,
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(FLOAT_CASES))
def test_operator_matches_the_interpreter(case):
    net = Net(seed=2)
    data = net.to_bytes(FLOAT_CASES[case](net))
    model = tflite.from_bytes(data, source=case)
    for seed in range(3):
        assert _compare(data, model, net.feeds(seed)) <= 1e-6  # measured 0 (bool/int exact; float 0)


def test_shape_is_folded_to_a_constant():
    net = Net()
    data = net.to_bytes(_shape(net))
    model = tflite.from_bytes(data)
    assert "Shape" not in op_counts(model)
    assert run(model, {"input0": net.feeds()[0]})[0].tolist() == [2, 3, 5]


def test_int8_equal_select_split_v():
    """int8 tensors through SPLIT_V, EQUAL and SELECT_V2 match the interpreter exactly."""
    net = Net(seed=4)
    x = net.input([1, 2, 3, 8], np.int8, q(0.05, 3), low=-128, high=127)
    tensors = [net.builder.tensor(net._name("split"), [1], np.int8, quantization=q(0.05, 3)) for _ in range(2)]
    options = schema.SplitVOptionsT()
    options.numSplits = 2
    net.builder.operator(
        schema.BuiltinOperator.SPLIT_V,
        [x, net.const([5, 3], np.int32), net.const(3, np.int32)],
        tensors,
        options,
        schema.BuiltinOptions.SplitVOptions,
    )
    a, b = tensors
    same = net.op(
        "EQUAL",
        [
            net.op("MUL", [x, x], "MulOptions", np.int8, q(0.5, -128)),
            net.const(np.full(8, -128), np.int8, q(0.5, -128)),
        ],
        dtype=np.bool_,
    )
    picked = net.op(
        "SELECT_V2", [same, x, net.const(np.full(8, 7), np.int8, q(0.05, 3))], dtype=np.int8, quant=q(0.05, 3)
    )
    data = net.to_bytes([a, b, same, picked])
    model = tflite.from_bytes(data)
    for seed in range(3):
        assert _compare(data, model, net.feeds(seed)) == 0


# --- resource variables: streaming state as explicit inputs and outputs -------------------------------------


def _streaming(int8: bool) -> tuple[Net, bytes, np.ndarray]:
    """A streaming layer as converters write it: state (2 frames) ++ new frame -> a conv over the
    3 frames; the last 2 frames become the next state. CALL_ONCE assigns a non-zero initial state."""
    net = Net(seed=9)
    dtype, quant = (np.int8, q(0.04, -5)) if int8 else (np.float32, None)
    frame = net.input([1, 1, 1, 4], dtype, quant, *((-128, 127) if int8 else (-2, 2)))
    initial = net.rng.integers(-100, 100, (1, 2, 1, 4)) if int8 else net.rng.standard_normal((1, 2, 1, 4))
    initial = np.asarray(initial, dtype)
    handle = var_handle(net.builder, net.builder.subgraph, "stream/states")
    state = read_variable(net, handle, [1, 2, 1, 4], dtype, quant)
    joined = net.op("CONCATENATION", [state, frame], "ConcatenationOptions", dtype, quant, axis=1)
    kept = net.op(
        "STRIDED_SLICE",
        [
            joined,
            net.const([0, 1, 0, 0], np.int32),
            net.const([1, 3, 1, 4], np.int32),
            net.const([1, 1, 1, 1], np.int32),
        ],
        "StridedSliceOptions",
        dtype,
        quant,
        beginMask=0b1101,
        endMask=0b1111,
        shape=[1, 2, 1, 4],
    )
    assign_variable(net, handle, kept)
    if int8:
        w = net.const(net.rng.integers(-127, 128, (3, 3, 1, 4)), np.int8, q(np.full(3, 0.01), np.zeros(3, np.int64)))
        b = net.const(net.rng.integers(-50, 50, 3), np.int32, q(np.full(3, 0.0004), np.zeros(3, np.int64)))
        out = net.op(
            "CONV_2D",
            [joined, w, b],
            "Conv2DOptions",
            np.int8,
            q(0.02, 0),
            padding=schema.Padding.VALID,
            strideH=1,
            strideW=1,
        )
    else:
        out = net.op(
            "CONV_2D",
            [joined, net.random((3, 3, 1, 4)), net.random(3)],
            "Conv2DOptions",
            padding=schema.Padding.VALID,
            strideH=1,
            strideW=1,
        )
    init_subgraph(net, {"stream/states": (initial, quant)})
    return net, net.to_bytes([out]), initial


@pytest.mark.parametrize("int8", [False, True], ids=["float", "int8"])
def test_streaming_variables_become_state_ports_and_match_the_interpreter_over_invocations(int8):
    net, data, initial = _streaming(int8)
    model = tflite.from_bytes(data)
    assert [t.name for t in model.graph.inputs] == ["input0", "stream_states:state_in"]
    assert [t.name for t in model.graph.outputs][1:] == ["stream_states:state_out"]
    assert np.dtype(model.graph.inputs[1].dtype) == (np.int8 if int8 else np.float32)
    (record,) = json.loads(model.metadata[METADATA_KEY])
    assert record["variable"] == "stream/states" and record["input"] == "stream_states:state_in"
    assert record["output"] == "stream_states:state_out" and record["shape"] == [1, 2, 1, 4]
    assert record["initial"]["source"] == "CALL_ONCE subgraph 1 (Init)"
    state = initial_state(model)
    np.testing.assert_array_equal(state["stream_states:state_in"], initial)
    steps = [net.feeds(seed) for seed in range(8)]
    reference = interpret_stream(data, steps)
    for feeds, expected in zip(steps, reference):
        got, new_state = run(model, {"input0": feeds[0], **state})
        if int8:
            np.testing.assert_array_equal(got, expected[0])  # measured: bit-exact on every step
        else:
            assert linf_rel(expected[0], got) <= 1e-6
        state = {"stream_states:state_in": new_state}


def test_streaming_state_depends_on_history():
    """Invocation 2 of the same frame differs from invocation 1: the state really is carried."""
    net, data, _ = _streaming(False)
    feeds = net.feeds(0)
    first, second = interpret_stream(data, [feeds, feeds])
    assert not np.allclose(first[0], second[0])
    model = tflite.from_bytes(data)
    out1, state = run(model, {"input0": feeds[0], **initial_state(model)})
    out2, _ = run(model, {"input0": feeds[0], "stream_states:state_in": state})
    assert linf_rel(first[0], out1) <= 1e-6 and linf_rel(second[0], out2) <= 1e-6


def test_read_only_variable_is_its_initial_value():
    net = Net(seed=1)
    x = net.input([2, 3])
    handle = var_handle(net.builder, net.builder.subgraph, "scale")
    scale = read_variable(net, handle, [2, 3])
    out = net.op("MUL", [x, scale], "MulOptions")
    init_subgraph(net, {"scale": (np.arange(6, dtype=np.float32).reshape(2, 3), None)})
    data = net.to_bytes([out])
    model = tflite.from_bytes(data)
    assert [t.name for t in model.graph.inputs] == ["input0"] and METADATA_KEY not in model.metadata
    assert _compare(data, model, net.feeds()) <= 1e-7


def test_uninitialized_variable_is_refused():
    net = Net()
    x = net.input([2, 3])
    handle = var_handle(net.builder, net.builder.subgraph, "acc")
    total = net.op("ADD", [read_variable(net, handle, [2, 3]), x], "AddOptions")
    assign_variable(net, handle, total)
    data = net.to_bytes([total])
    with pytest.raises(ModelLoadError, match="variable 'acc' is read before any CALL_ONCE subgraph initializes it"):
        tflite.from_bytes(data)
    # LiteRT runs it, reading uninitialized memory (3.4e17 measured in the first element).


def test_micro_wake_word_streams_bit_exactly():
    """microWakeWord's okay_nabu (full int8, 6 resource variables, CALL_ONCE, SPLIT_V): 60 invocations
    with the state ports fed back match one LiteRT interpreter keeping its variables."""
    path = REAL_MODELS / "mww-okay-nabu.tflite"
    if not path.is_file():
        pytest.skip("build/realmodels/mww-okay-nabu.tflite missing: run scripts/fetch-realmodels")
    data = path.read_bytes()
    model = tflite.from_bytes(data, source=path.name)
    records = json.loads(model.metadata[METADATA_KEY])
    assert len(records) == 6 and {r["initial"]["fill"] for r in records} == {-128}
    rng = np.random.default_rng(1)
    steps = [[rng.integers(-128, -60, (1, 3, 40)).astype(np.int8)] for _ in range(60)]
    reference = interpret_stream(data, steps)
    state = initial_state(model)
    names = [t.name for t in model.graph.outputs]
    seen = set()
    for feeds, expected in zip(steps, reference):
        got = dict(zip(names, run(model, {model.graph.inputs[0].name: feeds[0], **state})))
        np.testing.assert_array_equal(got[names[0]], expected[0])
        seen.add(int(expected[0].item()))
        state = {n.replace(":state_out", ":state_in"): v for n, v in got.items() if n.endswith(":state_out")}
    assert len(seen) > 1  # the outputs vary (0..3 measured), so the comparison means something


# --- invalid quantization parameters: refused as LiteRT refuses them ------------------------------------------


def _small_int8(mutate) -> bytes:
    net = Net(seed=3)
    x = net.input([1, 4, 4, 2], np.int8, q(0.02, -3), low=-128, high=127)
    w = net.const(net.rng.integers(-127, 128, (3, 3, 3, 2)), np.int8, q(np.full(3, 0.01), np.zeros(3, np.int64)))
    b = net.const(net.rng.integers(-99, 99, 3), np.int32, q(np.full(3, 0.0002), np.zeros(3, np.int64)))
    y = net.op("CONV_2D", [x, w, b], "Conv2DOptions", np.int8, q(0.05, 2), padding=SAME, strideH=1, strideW=1)
    data = net.to_bytes([y])
    model = schema.ModelT.InitFromPackedBuf(data, 0)
    mutate(model.subgraphs[0].tensors)
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _set(index, field, value):
    def mutate(tensors):
        setattr(tensors[index].quantization, field, value)

    return mutate


def _both(index, scale, zero_point):
    def mutate(tensors):
        tensors[index].quantization.scale, tensors[index].quantization.zeroPoint = scale, zero_point

    return mutate


# (mutation, the message naming the tensor, whether LiteRT refuses the file too)
INVALID = {
    "zero_scale_output": (_set(3, "scale", [0.0]), r"tensor 'conv_2d3' has quantization scale 0\.0", True),
    "nan_scale_output": (_set(3, "scale", [float("nan")]), r"tensor 'conv_2d3' has quantization scale nan", True),
    # LiteRT runs a NaN weight scale (its per-channel multipliers come out as garbage): refused anyway.
    "nan_scale_weight": (
        _set(1, "scale", [0.01, float("nan"), 0.01]),
        r"tensor 'const1' has quantization scale nan",
        False,
    ),
    "inf_input_scale": (_set(0, "scale", [float("inf")]), r"tensor 'input0' has quantization scale inf", True),
    "negative_scale": (_set(3, "scale", [-0.05]), r"tensor 'conv_2d3' has quantization scale -0\.05", True),
    # LiteRT runs both of these and writes all-zero outputs: refused anyway.
    "empty_scale": (_set(3, "scale", []), r"tensor 'conv_2d3' has zero points but an empty quantization scale", False),
    "empty_scale_and_zero_point": (
        _both(3, [], []),
        r"tensor 'conv_2d3' is int8 without quantization parameters",
        False,
    ),
    "empty_weight_scale": (_set(1, "scale", []), r"tensor 'const1' has zero points but an empty quantization", True),
    "zero_point_1000": (_set(3, "zeroPoint", [1000]), r"tensor 'conv_2d3' has zero point 1000, outside the int8", True),
    "per_channel_count": (_both(1, [0.01, 0.01], [0, 0]), r"tensor 'const1': 2 per-channel scales do not match", True),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_quantization_is_refused_as_litert_refuses_it(case):
    mutate, message, litert_refuses = INVALID[case]
    data = _small_int8(mutate)
    with pytest.raises(ModelLoadError, match=message):
        tflite.from_bytes(data, source=f"{case}.tflite")
    assert _litert_refuses(data) == litert_refuses


def _litert_refuses(data: bytes) -> bool:
    try:
        interpreter = Interpreter(model_content=data)
        interpreter.allocate_tensors()
        detail = interpreter.get_input_details()[0]
        interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
        interpreter.invoke()
    except (RuntimeError, ValueError):
        return True
    return False


def test_the_unmutated_model_imports_and_runs():
    data = _small_int8(lambda tensors: None)
    assert not _litert_refuses(data)
    tflite.from_bytes(data)


def test_micro_wake_word_relowers_to_tflite_with_state_ports_fed_back_unchanged(tmp_path):
    """-O2 for raspberry-pi-4 (the tflite backend): the file's state ports keep the model's own
    layout and int8 values (state_out can be fed to state_in as is), and 30 invocations of the
    artifact match the original file's interpreter bit for bit."""
    import edgec

    path = REAL_MODELS / "mww-okay-nabu.tflite"
    if not path.is_file():
        pytest.skip("build/realmodels/mww-okay-nabu.tflite missing: run scripts/fetch-realmodels")
    result = edgec.compile(str(path), target="raspberry-pi-4", opt="2", output_dir=tmp_path / "o")
    assert result.report["backend_check"]["max_abs_err"] == 0.0
    ports = {p["name"]: p for p in result.artifact.info["inputs"] + result.artifact.info["outputs"]}
    records = json.loads(result.model.metadata[METADATA_KEY])
    for record in records:
        state_in, state_out = ports[record["input"]], ports[record["output"]]
        assert state_in["shape"] == state_out["shape"] == record["shape"] and state_in["dtype"] == "int8"
    artifact = Interpreter(model_path=str(tmp_path / "o" / "model.tflite"))
    artifact.allocate_tensors()
    by_name = {d["name"]: d["index"] for d in artifact.get_input_details() + artifact.get_output_details()}
    state = initial_state(result.model)
    rng = np.random.default_rng(2)
    steps = [[rng.integers(-128, -60, (1, 3, 40)).astype(np.int8)] for _ in range(30)]
    reference = interpret_stream(path.read_bytes(), steps)
    audio, score = "serving_default_input_audio:0", "StatefulPartitionedCall:0"
    for feeds, expected in zip(steps, reference):
        artifact.set_tensor(by_name[audio], feeds[0])
        for name, value in state.items():
            artifact.set_tensor(by_name[name], value)
        artifact.invoke()
        np.testing.assert_array_equal(artifact.get_tensor(by_name[score]), expected[0])
        state = {r["input"]: artifact.get_tensor(by_name[r["output"]]).copy() for r in records}


def test_mutated_files_are_refused_with_one_line_never_an_internal_error():
    """Random byte mutations of the new-operator and streaming models: every failure is a
    ModelLoadError (a one-line exit 2), none a TypeError/ValueError/... from inside the frontend.
    (3,150 mutations measured: 0 internal errors; this runs 240 of them.)"""
    from edgec.errors import EdgecError

    seeds = [_streaming(True)[1], _streaming(False)[1]]
    for case in ("pack", "split_v", "equal_not_equal_select_v2", "shape_and_computed_reshape"):
        net = Net(seed=2)
        seeds.append(net.to_bytes(FLOAT_CASES[case](net)))
    rng = np.random.default_rng(0)
    for data in seeds:
        for _ in range(40):
            mutated = bytearray(data)
            for _ in range(int(rng.integers(1, 6))):
                mutated[int(rng.integers(8, len(mutated)))] = int(rng.integers(0, 256))
            try:
                tflite.from_bytes(bytes(mutated), source="mutated.tflite")
            except EdgecError as error:
                assert "\n" not in str(error)


# --- dynamic dimensions: --input-shape sets them, LiteRT propagates them ----------------------------------


def test_dynamic_length_input_takes_its_shape_from_input_shapes():
    """A [1, -1, 3] input (streaming/audio converters write these, with placeholder 1s in the
    file): given a length, every tensor gets the shape LiteRT computes for it."""
    net = Net(seed=6)
    x = net.input([1, 1, 3])
    net.builder.subgraph.tensors[x].shapeSignature = [1, -1, 3]
    scaled = net.op("MUL", [x, net.random((3,))], "MulOptions")
    padded = net.op("PAD", [scaled, net.const([[0, 0], [2, 1], [0, 0]], np.int32)])
    pooled = net.op("MEAN", [padded, net.const([2], np.int32)], "ReducerOptions", keepDims=False)
    data = net.to_bytes([pooled, padded])
    model = tflite.from_bytes(data, input_shapes={"input0": [1, 50, 3]})
    assert model.graph.inputs[0].shape == [1, 50, 3]
    assert [t.shape for t in model.graph.outputs] == [[1, 53], [1, 53, 3]]
    feed = np.random.default_rng(0).standard_normal((1, 50, 3)).astype(np.float32)
    interpreter = Interpreter(model_content=data)
    interpreter.resize_tensor_input(0, [1, 50, 3])
    interpreter.allocate_tensors()
    interpreter.set_tensor(0, feed)
    interpreter.invoke()
    expected = [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]
    for reference, got in zip(expected, run(model, {"input0": feed}), strict=True):
        assert linf_rel(reference, got) <= 1e-6
    with pytest.raises(ModelLoadError, match=r"input 'input0' is 1xNx3; --input-shape 2x50x3 does not fit it"):
        tflite.from_bytes(data, input_shapes={"input0": [2, 50, 3]})
    with pytest.raises(ModelLoadError, match=r"--input-shape names wrong; the inputs are input0"):
        tflite.from_bytes(data, input_shapes={"wrong": [1, 5, 3]})


def test_audio_feature_model_with_dynamic_length_imports_at_the_given_length():
    """openWakeWord's melspectrogram (BATCH_MATMUL, input [1, -1]) at 1280 samples."""
    path = REAL_MODELS / "oww-melspectrogram.tflite"
    if not path.is_file():
        pytest.skip("build/realmodels/oww-melspectrogram.tflite missing: run scripts/fetch-realmodels")
    model = tflite.load(path, input_shapes={"serving_default_input:0": [1, 1280]})
    feed = np.random.default_rng(1).uniform(-3000, 3000, (1, 1280)).astype(np.float32)
    interpreter = Interpreter(model_path=str(path))
    interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], [1, 1280])
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], feed)
    interpreter.invoke()
    (expected,) = [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]
    (got,) = run(model, {"serving_default_input:0": feed})
    assert got.shape == expected.shape == (1, 1, 5, 32)
    assert linf_rel(expected, got) <= 1e-5  # measured 1.9e-7


@pytest.mark.parametrize("case", ["inf_input_scale", "zero_point_1000", "empty_scale"])
def test_invalid_quantization_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, case):
    from edgec.cli import main

    path = tmp_path / f"{case}.tflite"
    path.write_bytes(_small_int8(INVALID[case][0]))
    assert main([str(path), "-t", "raspberry-pi-4", "-O2", "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("edgec: error: ") and "Traceback" not in "\n".join(err)
    assert "quantization" in err[-1] or "zero point" in err[-1]
    assert not (tmp_path / "out").exists()


# --- IF: two branch subgraphs as an ONNX If ----------------------------------------------------------------


def _branch_subgraph(net: Net, name: str, builtin: str, constant: float) -> int:
    """A subgraph (x [2, 3]) -> builtin(x, constant), appended to the model; returns its index."""
    builder = net.builder
    main, branch = builder.subgraph, schema.SubGraphT()
    branch.name, branch.tensors, branch.operators = name.encode(), [], []
    builder.subgraph = branch
    x = builder.tensor(f"{name}_x", [2, 3], np.float32)
    c = builder.constant(f"{name}_c", np.full(3, constant, np.float32))
    y = builder.tensor(f"{name}_y", [2, 3], np.float32)
    options = getattr(schema, f"{builtin.title()}OptionsT")()
    builder.operator(
        getattr(schema.BuiltinOperator, builtin),
        [x, c],
        [y],
        options,
        getattr(schema.BuiltinOptions, f"{builtin.title()}Options"),
    )
    branch.inputs, branch.outputs = [x], [y]
    builder.subgraph = main
    builder.model.subgraphs.append(branch)
    return len(builder.model.subgraphs) - 1


def test_if_converts_both_branches_and_matches_the_interpreter():
    net = Net(seed=12)
    x = net.input([2, 3])
    mean = net.op("MEAN", [x, net.const([0, 1], np.int32)], "ReducerOptions", keepDims=False, shape=[])
    positive = net.op("GREATER", [mean, net.const(0.0)], dtype=np.bool_, shape=[])
    then_index = _branch_subgraph(net, "doubled", "MUL", 2.0)
    else_index = _branch_subgraph(net, "shifted", "ADD", 10.0)
    out = net.op(
        "IF", [positive, x], "IfOptions", thenSubgraphIndex=then_index, elseSubgraphIndex=else_index, shape=[2, 3]
    )
    data = net.to_bytes([out])
    model = tflite.from_bytes(data)
    assert "If" in op_counts(model)
    seen = set()
    for sign in (1.0, -1.0):
        feed = np.abs(np.random.default_rng(0).standard_normal((2, 3))).astype(np.float32) * sign
        (expected,) = interpret(data, [feed])
        (got,) = run(model, {"input0": feed})
        np.testing.assert_allclose(got, expected, rtol=1e-6)
        seen.add("then" if np.allclose(expected, 2 * feed) else "else" if np.allclose(expected, feed + 10) else "?")
    assert seen == {"then", "else"}


def test_wake_word_head_with_if_matches_the_interpreter():
    """openWakeWord's hey_jarvis: a score, GREATER_EQUAL, and an IF whose true branch runs a
    second network (its LayerNorms as MEAN/SUB/RSQRT)."""
    path = REAL_MODELS / "oww-hey-jarvis.tflite"
    if not path.is_file():
        pytest.skip("build/realmodels/oww-hey-jarvis.tflite missing: run scripts/fetch-realmodels")
    model = tflite.load(path)
    rng = np.random.default_rng(0)
    for _ in range(12):
        feed = (rng.standard_normal((1, 16, 96)) * 10).astype(np.float32)
        (expected,) = interpret(path, [feed])
        (got,) = run(model, {model.graph.inputs[0].name: feed})
        assert np.max(np.abs(expected - got)) <= 1e-5  # probabilities; measured 6e-7


@pytest.mark.parametrize(
    "padding,size", [(schema.Padding.SAME, [1, 10, 12, 3]), (schema.Padding.VALID, [1, 11, 13, 3])]
)
def test_transpose_conv_matches_the_interpreter(padding, size):
    net = Net(seed=13)
    x = net.input([1, 5, 6, 4])
    out = net.op(
        "TRANSPOSE_CONV",
        [net.const(size, np.int32), net.random((3, 3, 3, 4)), x, net.random(3)],
        "TransposeConvOptions",
        padding=padding,
        strideH=2,
        strideW=2,
        shape=size,
    )
    data = net.to_bytes([out])
    model = tflite.from_bytes(data)
    assert "ConvTranspose" in op_counts(model)
    assert _compare(data, model, net.feeds()) <= 1e-5
