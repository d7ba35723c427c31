"""TFLite Micro backend: C sources that hold the flatbuffer, the op resolver, the arena plan and limits."""

import dataclasses
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("ai_edge_litert.interpreter", reason="pip install 'edgec[tflite]'")

import edgec  # noqa: E402
from edgec import ir  # noqa: E402
from ai_edge_litert import schema_py_generated as schema  # noqa: E402
from edgec.backends.tflite.lowering import lower  # noqa: E402
from edgec.backends.tflm import _idle_tensors, arena, budget, planner, reader, resolver, scratch  # noqa: E402
from edgec.backends.tflm.planner import Buffer  # noqa: E402
from edgec.cli import main  # noqa: E402
from edgec.errors import EdgecError  # noqa: E402
from edgec.registry import Registry  # noqa: E402
from tests.helpers import GraphBuilder  # noqa: E402

LENET5 = "models/lenet5.onnx"
LENET300 = "models/lenet300.onnx"
MOBILENET = "models/mobilenetv2_fmnist.onnx"
OPERATOR_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


def small_convnet(path):
    """A model that fits the Nano 33 BLE in float32: conv, pool, dense, softmax."""
    g = GraphBuilder()
    x = g.input("image", [1, 3, 16, 16])
    y = g.op("Relu", [g.op("Conv", [x, g.weight(8, 3, 3, 3), g.weight(8)], pads=[1, 1, 1, 1])])
    y = g.op("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])
    y = g.op("Flatten", [g.op("GlobalAveragePool", [y])])
    g.output(g.op("Softmax", [g.op("Gemm", [y, g.weight(8, 4), g.weight(4)])], axis=1))
    onnx.save(g.proto(), str(path))
    return path


@pytest.fixture(scope="module")
def nano_build(tmp_path_factory):
    root = tmp_path_factory.mktemp("nano")
    return edgec.compile(small_convnet(root / "convnet.onnx"), "arduino-nano-33-ble", opt="2", output_dir=root / "out")


def flatbuffer_ops(data: bytes) -> list[str]:
    """Operator names straight from the schema, independent of the backend's reader."""
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    return sorted({OPERATOR_NAMES[codes[op.opcodeIndex]] for op in model.subgraphs[0].operators})


# --- the emitted project files ------------------------------------------------------------


def test_full_compile_for_the_nano_writes_the_tflm_project(nano_build):
    out = nano_build.output_dir
    assert nano_build.ok and nano_build.report["backend"] == "tflm"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["model.tflite", "model_data.cc", "model_data.h", "op_resolver.h", "memory_plan.json"]
        + ["manifest.json", "report.json", "report.md"]
    )
    info = nano_build.artifact.info
    assert info["kernels"] == "cmsis-nn"
    assert info["flash_bytes"] == (out / "model.tflite").stat().st_size
    assert (info["ram_budget_bytes"], info["flash_budget_bytes"]) == (262144, 1048576)
    # The conv reads the padded 18x18x3 floats while it writes 16x16x8 (ReLU fused): 3,888 + 8,192.
    assert info["peak_activation_bytes"] == 3888 + 8192
    assert info["peak_activation_bytes"] < info["arena_size"] < 20_000
    assert nano_build.report["backend_check"]["ok"]
    assert nano_build.report["backend_check"]["max_rel_err"] < 1e-4
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["backend"] == "tflm" and manifest["inputs"][0]["layout"] == "NHWC"
    assert any("kTensorArenaSize" in note for note in manifest["notes"])


def test_c_array_holds_exactly_the_flatbuffer_aligned_like_xxd(nano_build):
    out = nano_build.output_dir
    data = (out / "model.tflite").read_bytes()
    source = (out / "model_data.cc").read_text()
    assert "alignas(16) const unsigned char g_model_data[] = {" in source
    body = re.search(r"g_model_data\[\] = \{\n(.*?)\n\};", source, re.DOTALL).group(1)
    rows = body.split("\n")
    assert bytes(int(b, 16) for b in re.findall(r"0x([0-9a-f]{2})", body)) == data
    assert all(len(re.findall("0x", row)) == 12 for row in rows[:-1])
    assert 1 <= len(re.findall("0x", rows[-1])) <= 12 and len(rows) == -(-len(data) // 12)
    assert f"const unsigned int g_model_data_len = {len(data)};" in source
    header = (out / "model_data.h").read_text()
    assert header.startswith("#ifndef EDGEC_MODEL_DATA_H_\n#define EDGEC_MODEL_DATA_H_\n")
    assert header.rstrip().endswith("#endif  // EDGEC_MODEL_DATA_H_")
    assert "extern const unsigned char g_model_data[];" in header
    assert "extern const unsigned int g_model_data_len;" in header
    assert f"constexpr int kTensorArenaSize = {nano_build.artifact.info['arena_size']};" in header


def test_op_resolver_registers_exactly_the_flatbuffer_operators(nano_build):
    out = nano_build.output_dir
    ops = flatbuffer_ops((out / "model.tflite").read_bytes())
    text = (out / "op_resolver.h").read_text()
    registered = re.findall(r"resolver\.(Add\w+)\(\)", text)
    assert sorted(registered) == sorted(resolver.METHODS[op] for op in ops)
    assert len(registered) == len(set(registered))
    assert f"constexpr int kNumOps = {len(ops)};" in text
    assert "tflite::MicroMutableOpResolver<kNumOps>" in text
    assert {"AddConv2D", "AddMaxPool2D", "AddFullyConnected", "AddSoftmax", "AddMean"} <= set(registered)


def test_resolver_method_names_follow_tflm_not_camel_case():
    assert resolver.methods(["BATCH_MATMUL", "PADV2", "DEPTHWISE_CONV_2D", "UNIDIRECTIONAL_SEQUENCE_LSTM"]) == [
        "AddBatchMatMul",
        "AddPadV2",
        "AddDepthwiseConv2D",
        "AddUnidirectionalSequenceLSTM",
    ]


def test_an_operator_without_a_tflm_kernel_stops_the_build(tmp_path):
    with pytest.raises(EdgecError, match=r"^tflm: TFLite Micro has no kernel for RELU_N1_TO_1, CUSTOM:Erf \("):
        resolver.methods(["CONV_2D", "RELU_N1_TO_1", "CUSTOM:Erf"])
    g = GraphBuilder()
    x = g.input("x", [1, 8])
    g.output(g.op("Clip", [x, g.const(np.float32(-1)), g.const(np.float32(1))]))  # lowers to RELU_N1_TO_1
    onnx.save(g.proto(), str(tmp_path / "clip.onnx"))
    with pytest.raises(EdgecError, match="no kernel for RELU_N1_TO_1"):
        edgec.compile(tmp_path / "clip.onnx", "arduino-nano-33-ble", opt="2", output_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- memory plan --------------------------------------------------------------------------


def assert_valid_plan(plan: planner.MemoryPlan):
    for buffer in plan.buffers:
        assert buffer.offset % planner.ALIGNMENT == 0 and buffer.offset + buffer.size <= plan.peak
    for i, a in enumerate(plan.buffers):
        for b in plan.buffers[i + 1 :]:
            if a.overlaps_in_time(b):
                assert a.offset + a.size <= b.offset or b.offset + b.size <= a.offset, (a, b)
    assert plan.peak >= plan.largest_live_set()


buffers = st.lists(
    st.tuples(st.integers(1, 5000), st.integers(0, 12), st.integers(0, 6)).map(
        lambda t: Buffer("b", t[0], t[1], t[1] + t[2])
    ),
    max_size=24,
)


@settings(max_examples=200, deadline=None)
@given(buffers)
def test_greedy_plan_never_overlaps_live_buffers_and_beats_no_reuse(requested):
    plan = planner.greedy(requested)
    assert_valid_plan(plan)
    assert plan.peak <= sum(b.size for b in requested)  # never worse than one buffer each
    assert plan.peak >= max((b.size for b in requested), default=0)


def test_plan_of_lenet5_reuses_memory_like_tflm():
    graph = reader.read(lower(ir.load(LENET5), keep_layout=False))
    plan = planner.greedy(planner.requests(graph))
    assert_valid_plan(plan)
    # pool1 reads conv1's 24x24x20 floats while writing its 12x12x20: 46,080 + 11,520 bytes.
    assert plan.largest_live_set() == 46080 + 11520 == 57600
    assert plan.peak == 57600
    # input, conv1, pool1, conv2, pool2, flatten (NHWC order, no transpose), fc1+relu, logits (16-aligned)
    assert sum(b.size for b in plan.buffers) == 3136 + 46080 + 11520 + 12800 + 3200 + 3200 + 2000 + 48


def test_equal_sizes_are_placed_in_reverse_request_order_as_tflm_does():
    # A: 0-1, B: 1-2, C: 3-4 (requested before D), D: 2-3, all equal. TFLM takes them as D, C,
    # B, A and needs two slots; in request order C would take 0 and D a third slot above B.
    a, b, c, d = (Buffer(n, 3136, f, last) for n, f, last in (("a", 0, 1), ("b", 1, 2), ("c", 3, 4), ("d", 2, 3)))
    plan = planner.greedy([a, b, c, d])
    assert plan.peak == 2 * 3136
    assert [x.offset for x in plan.buffers] == [0, 3136, 3136, 0]


def test_graph_inputs_live_from_the_start_and_outputs_to_the_end():
    graph = reader.read(lower(ir.load(LENET300), keep_layout=False))
    times = {b.name: (b.first, b.last) for b in planner.requests(graph)}
    assert times["input"][0] == 0
    assert times["logits"][1] == len(graph.operators)
    used = {i for op in graph.operators for i in (*op.inputs, *op.outputs)} | set(graph.inputs)
    for b in planner.requests(graph):
        # A tensor no operator touches still gets a slot at time -1, as TFLM gives it.
        assert 0 <= b.first <= b.last <= len(graph.operators) if b.tensor in used else b.first == b.last == -1


# --- kernel scratch -----------------------------------------------------------------------


def conv_graph(dtype: str, channels=16, pointwise=False) -> reader.Graph:
    size = 1 if pointwise else 3
    tensors = [
        reader.Tensor(0, "x", dtype, (1, 12, 12, channels), 12 * 12 * channels, False),
        reader.Tensor(1, "w", "INT8", (32, size, size, channels), 32 * size * size * channels, True, channels=32),
        reader.Tensor(2, "y", dtype, (1, 12, 12, 32), 12 * 12 * 32, False),
    ]
    options = schema.Conv2DOptionsT()
    options.padding, options.strideH, options.strideW = 0, 1, 1  # SAME
    options.dilationHFactor = options.dilationWFactor = 1
    op = reader.Operator(0, "CONV_2D", (0, 1, -1), (2,), options)
    return reader.Graph(tensors, [op], (0,), (2,), ops=["CONV_2D"])


def test_cmsis_nn_conv_scratch_is_two_int16_im2col_columns():
    assert scratch.requests(conv_graph("INT8"), "cmsis-nn") == {0: [2 * 16 * 3 * 3 * 2]}  # 576
    assert scratch.requests(conv_graph("FLOAT32"), "cmsis-nn") == {}  # float: reference kernel, no scratch
    assert scratch.requests(conv_graph("INT8"), "reference") == {}


def test_esp_nn_conv_scratch_copies_padded_input_and_filter():
    # SAME 3x3 pads 12x12 to 14x14; filter 32x3x3x16 = 4,608 int8.
    assert scratch.requests(conv_graph("INT8"), "esp-nn") == {0: [2 * (4608 + 14 * 14 * 16) + 64]}
    # 1x1 on 16 channels: 8-row transpose / batched tail buffers only.
    assert scratch.requests(conv_graph("INT8", pointwise=True), "esp-nn") == {0: [24 * 16 + 8 * 32 + 64]}


def test_scratch_buffers_are_planned_for_their_operator_only():
    graph = conv_graph("INT8")
    estimate = arena.estimate(graph, "cmsis-nn", pointer_bytes=4)
    (scratch_buffer,) = [b for b in estimate.plan.buffers if b.tensor is None]
    assert (scratch_buffer.first, scratch_buffer.last, scratch_buffer.size) == (1, 1, 576)
    assert estimate.plan.peak == 2304 + 4608 + 576  # input, output and scratch all alive in op 0
    assert estimate.persistent["scratch_handles"] == 16


def test_arena_counts_tflm_structs_for_the_device_pointer_width():
    graph = reader.read(lower(ir.load(LENET5), keep_layout=False))
    small, large = arena.estimate(graph, pointer_bytes=4), arena.estimate(graph, pointer_bytes=8)
    assert (arena.Structs(4).eval_tensor, arena.Structs(8).eval_tensor) == (12, 24)
    assert (arena.Structs(4).node_and_registration, arena.Structs(8).node_and_registration) == (32, 64)
    assert (arena.Structs(4).tensor, arena.Structs(8).tensor) == (40, 64)
    assert small.head_bytes == large.head_bytes == 57600
    assert small.persistent["eval_tensors"] == arena.align(12 * len(graph.tensors))
    assert small.arena_bytes < large.arena_bytes


# --- against the real TFLite Micro interpreter (pip install tflite-micro) -----------------

PROBE = """
import sys
from tflite_micro import runtime
interpreter = runtime.Interpreter.from_bytes(open(sys.argv[1], "rb").read(), arena_size=int(sys.argv[2]))
interpreter.print_allocations()
"""


def tflm_allocate(path, size: int) -> subprocess.CompletedProcess:
    """In a child process: a failed allocation can take the interpreter's process down."""
    return subprocess.run([sys.executable, "-c", PROBE, str(path), str(size)], capture_output=True, text=True)


def smallest_arena(path, low: int, high: int) -> int:
    while high - low > 16:
        middle = (low + high) // 32 * 16
        low, high = (low, middle) if tflm_allocate(path, middle).returncode == 0 else (middle, high)
    return high


def check_against_tflm(tmp_path, model) -> dict:
    """Our plan vs TFLM's: the head must match, the arena must suffice and stay close to the least."""
    pytest.importorskip("tflite_micro", reason="pip install tflite-micro")
    data = lower(model, keep_layout=False)
    path = tmp_path / "model.tflite"
    path.write_bytes(data)
    estimate = arena.estimate(reader.read(data), "reference", pointer_bytes=8)  # the host build's kernels
    allocated = tflm_allocate(path, estimate.arena_bytes)
    assert allocated.returncode == 0, allocated.stderr[-2000:]
    recorded = dict(re.findall(r"allocation (total|head) (\d+) bytes", allocated.stderr + allocated.stdout))
    least = smallest_arena(path, estimate.plan.peak, estimate.arena_bytes)
    return {"head": int(recorded["head"]), "total": int(recorded["total"]), "least": least, "estimate": estimate}


def test_lenet5_plan_and_arena_against_tflm(tmp_path):
    found = check_against_tflm(tmp_path, ir.load(LENET5))
    estimate = found["estimate"]
    assert found["head"] == estimate.plan.peak == 57600
    assert found["least"] == found["total"]  # the interpreter's own count is the least that works
    assert 1.0 <= estimate.arena_bytes / found["least"] <= 1.05  # measured: 1.008 (61,040 of 60,544)


def test_small_convnet_plan_and_arena_against_tflm(tmp_path):
    found = check_against_tflm(tmp_path, ir.load(small_convnet(tmp_path / "convnet.onnx")))
    assert found["head"] == found["estimate"].plan.peak
    assert 1.0 <= found["estimate"].arena_bytes / found["least"] <= 1.10


def test_tflm_computes_what_litert_computes(tmp_path):
    runtime = pytest.importorskip("tflite_micro", reason="pip install tflite-micro").runtime
    from ai_edge_litert.interpreter import Interpreter

    data = lower(ir.load(LENET5), keep_layout=False)
    x = np.random.default_rng(0).standard_normal((1, 28, 28, 1)).astype(np.float32)
    litert = Interpreter(model_content=data)
    litert.allocate_tensors()
    litert.set_tensor(litert.get_input_details()[0]["index"], x)
    litert.invoke()
    expected = litert.get_tensor(litert.get_output_details()[0]["index"])
    micro = runtime.Interpreter.from_bytes(
        data, arena_size=arena.estimate(reader.read(data), pointer_bytes=8).arena_bytes
    )
    micro.set_input(x, 0)
    micro.invoke()
    got = micro.get_output(0)
    assert got.shape == expected.shape == (1, 10)
    assert np.max(np.abs(got - expected)) <= 1e-4 * np.max(np.abs(expected))


# --- device limits ------------------------------------------------------------------------


def test_model_over_the_nanos_flash_is_refused_with_the_numbers(tmp_path, capsys):
    with pytest.raises(EdgecError, match=r"model\.tflite is 1,06\d,\d{3} bytes .* flash of 1,048,576 bytes"):
        edgec.compile(LENET300, "arduino-nano-33-ble", opt="2", output_dir=tmp_path / "a")
    assert main([LENET300, "-t", "arduino-nano-33-ble", "-O2", "-o", str(tmp_path / "b"), "-q"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("edgec: error: tflm: model.tflite is 1,06")


def test_arena_over_the_nanos_ram_is_refused_with_the_numbers(tmp_path):
    # MobileNetV2 in float32: 351 KB fits the flash, but its activations (431,104 bytes at
    # least) do not fit 256 KiB.
    with pytest.raises(
        EdgecError, match=r"tensor arena needs \d{3},\d{3} bytes .* 262,144 bytes \(256\.0 KiB\) of RAM"
    ):
        edgec.compile(MOBILENET, "arduino-nano-33-ble", opt="2", output_dir=tmp_path / "out")


def test_arena_over_internal_ram_goes_to_psram_with_a_note(tmp_path):
    esp32 = Registry().target("esp32-s3")
    small_sram = dataclasses.replace(esp32, name="esp32-s3-256k", ram_bytes=256 * 1024)
    result = edgec.compile(MOBILENET, small_sram, opt="2", output_dir=tmp_path / "out")
    info = result.artifact.info
    assert info["arena_size"] > 256 * 1024 and info["kernels"] == "esp-nn"
    (note,) = [n for n in info["notes"] if "PSRAM" in n]
    assert f"{info['arena_size']:,} bytes" in note and "MALLOC_CAP_SPIRAM" in note
    assert note in result.manifest["notes"]


def test_budget_limits_on_fake_profiles():
    esp32 = Registry().target("esp32-s3")
    assert budget.check(esp32, 100_000, 500 * 1024) == []
    assert "PSRAM" in budget.check(esp32, 100_000, 600 * 1024)[0]
    with pytest.raises(EdgecError, match=r"8,388,608 bytes \(8,192\.0 KiB\) of external RAM"):
        budget.check(esp32, 100_000, 9 * 2**20)
    copy_to_ram = dataclasses.replace(esp32, name="no-xip", weights_in_flash=False, external_ram_bytes=0)
    with pytest.raises(EdgecError, match="the tensor arena and the model copy needs 524,289 bytes"):
        budget.check(copy_to_ram, 400_000, 124_289)


# --- int8 (the tflite lowering's int8 path) ------------------------------------------------


def test_int8_lenet5_fits_the_nano(tmp_path, fmnist_calib):
    result = edgec.compile(LENET5, "arduino-nano-33-ble", opt="int8", calib=fmnist_calib, output_dir=tmp_path / "out")
    info = result.artifact.info
    assert result.ok and info["precision"] == "int8" and info["kernels"] == "cmsis-nn"
    assert {"QUANTIZE", "DEQUANTIZE", "CONV_2D", "FULLY_CONNECTED"} <= set(info["ops"])
    assert info["flash_bytes"] < 460_000  # int8 weights: a quarter of the 1.7 MB float32 file
    # int8 activations: conv1's 24x24x20 output is 11,520 bytes (46,080 in float32).
    assert info["peak_activation_bytes"] == 14400
    assert info["arena_size"] < 24_000
    plan = json.loads((tmp_path / "out" / "memory_plan.json").read_text())
    assert plan["arena"]["plan"]["peak_bytes"] >= info["peak_activation_bytes"]
    assert any(b["tensor"] is None for b in plan["arena"]["plan"]["buffers"])  # CMSIS-NN im2col scratch
    if importlib_available("tflite_micro"):
        found = check_against_tflm(tmp_path, result.model)
        assert found["head"] == found["estimate"].plan.peak
        assert 1.0 <= found["estimate"].arena_bytes / found["least"] <= 1.10


def importlib_available(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


CHECK_MAIN = r"""
#include <cstdint>
#include <cstdio>
#include "model_data.h"

int main(int, char** argv) {
  if (reinterpret_cast<std::uintptr_t>(g_model_data) % 16 != 0) return 3;
  std::FILE* file = std::fopen(argv[1], "rb");
  for (unsigned int i = 0; i < g_model_data_len; ++i) {
    if (std::fgetc(file) != g_model_data[i]) return 4;
  }
  if (std::fgetc(file) != EOF) return 5;
  std::printf("%u %d\n", g_model_data_len, kTensorArenaSize);
  return 0;
}
"""


def test_model_data_compiles_and_links_with_a_host_compiler(nano_build, tmp_path):
    """TFLM's headers are not available offline, so op_resolver.h is checked by text above;
    model_data.cc/.h need none and must compile warning-free as C++17."""
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("no g++ on this machine")
    out = nano_build.output_dir
    (tmp_path / "main.cc").write_text(CHECK_MAIN)
    build = [compiler, "-std=c++17", "-Wall", "-Wextra", "-Werror", f"-I{out}", str(out / "model_data.cc")]
    compiled = subprocess.run([*build, str(tmp_path / "main.cc"), "-o", str(tmp_path / "check")], capture_output=True)
    assert compiled.returncode == 0, compiled.stderr.decode()
    run = subprocess.run([str(tmp_path / "check"), str(out / "model.tflite")], capture_output=True, text=True)
    assert run.returncode == 0
    info = nano_build.artifact.info
    assert run.stdout.split() == [str(info["flash_bytes"]), str(info["arena_size"])]


def test_huffman_coded_weights_are_refused_until_tflm_can_decode_them(tmp_path):
    with pytest.raises(EdgecError, match="^tflm: huffman-coded weights need a decoder"):
        edgec.compile(LENET300, "esp32-s3", passes="huffman", backend="tflm", output_dir=tmp_path / "out")
    # Without --backend, the build goes to the ONNX backend, which stores the weight container.
    result = edgec.compile(LENET300, "esp32-s3", passes="huffman", output_dir=tmp_path / "onnx")
    assert result.report["backend"] == "onnx" and (tmp_path / "onnx" / "model.ecw").is_file()
    assert any("cannot store huffman-coded weights" in w for w in result.report["warnings"])


def test_tensors_no_operator_uses_still_cost_arena_as_in_tflm(tmp_path):
    from edgec.backends.tflite.flatbuffer import ModelBuilder

    builder = ModelBuilder()
    x = builder.tensor("x", (1, 64), np.float32)
    y = builder.tensor("y", (1, 64), np.float32)
    builder.tensor("dead_a", (1, 256), np.float32)  # left behind, e.g. by an operator fusion
    builder.tensor("dead_b", (1, 256), np.float32)
    builder.operator(schema.BuiltinOperator.RELU, [x], [y])
    builder.set_io([x], [y])
    data = builder.to_bytes()
    plan = planner.greedy(planner.requests(reader.read(data)))
    assert {b.name: (b.first, b.last) for b in plan.buffers}["dead_a"] == (-1, -1)
    assert plan.peak == 2 * 1024  # the two dead tensors overlap each other (time -1), not x and y
    assert _idle_tensors(plan) == [
        "2 tensors that no operator uses take 2,048 bytes of the arena all the same: dead_a, dead_b"
    ]
    if importlib_available("tflite_micro"):
        path = tmp_path / "dead.tflite"
        path.write_bytes(data)
        allocated = tflm_allocate(path, arena.estimate(reader.read(data), pointer_bytes=8).arena_bytes)
        assert re.search(r"allocation head (\d+) bytes", allocated.stderr).group(1) == "2048"
