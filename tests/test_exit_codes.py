"""Exit codes (issue 12, class 15, and the small items of 19 and 20): 0 ok, 1 a check or the time
budget failed, 2 bad input (named, one line), 3 edgec's own bug. Loader fuzzing: a mutated .onnx
or .tflite is loaded or refused with an EdgecError, never anything else."""

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgec
from edgec import frontends
from edgec.cli import main
from edgec.errors import EdgecError, PipelineError
from edgec.models import registry
from edgec.registry import Registry

LENET5 = str(registry.get("lenet5").path())


def _one_line(capsys, code_expected: int, code: int) -> str:
    captured = capsys.readouterr()
    err = _error_lines(captured.err)
    assert code == code_expected, captured.err
    assert len(err) == 1, err
    assert err[0].startswith("edgec: ") and "Traceback" not in captured.err
    return err[0]


def _one_line_in_a_child(argv: list[str], code_expected: int) -> str:
    """`edgec ARGV` as its own process: the --timeout alarm interrupts whatever runs, and what it
    interrupts must not be this test process's (the whole suite's) libraries."""
    done = subprocess.run(
        [sys.executable, "-m", "edgec", *argv], capture_output=True, text=True, timeout=300
    )
    # onnxruntime's native log lines reach a child's stderr; in-process they bypass capsys.
    err = [line for line in _error_lines(done.stderr) if "[W:onnxruntime" not in line]
    assert done.returncode == code_expected, done.stderr
    assert len(err) == 1, err
    assert err[0].startswith("edgec: ") and "Traceback" not in done.stderr
    return err[0]


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("edgec: warning")]


def _tiny(opset: int = 17, weights_as_constant_nodes: bool = False, input_shape=(1, 1, 14, 14)) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    fw = rng.standard_normal((4 * 6 * 6, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
        helper.make_node("Reshape", ["p", "shape"], ["f"], name="flat"),
        helper.make_node("MatMul", ["f", "fw"], ["y"], name="fc"),
    ]
    shape = numpy_helper.from_array(np.array([1, -1], np.int64), "shape")
    inits = [shape]
    if weights_as_constant_nodes:
        nodes = [
            helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(w, "w_value"), name="w_const"),
            helper.make_node("Constant", [], ["fw"], value=numpy_helper.from_array(fw, "fw_value"), name="fw_const"),
        ] + nodes
    else:
        inits += [numpy_helper.from_array(w, "w"), numpy_helper.from_array(fw, "fw")]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


# --- 3: edgec's own bugs ----------------------------------------------------------------------


def test_an_internal_error_is_exit_3_and_says_so(tmp_path, monkeypatch, capsys):
    from edgec import compiler

    def broken(*args, **kwargs):
        raise KeyError("probs_f__float32")

    monkeypatch.setattr(compiler, "compile", broken)
    line = _one_line(capsys, 3, main([LENET5, "-t", "x86-64", "-o", str(tmp_path / "o")]))
    assert line.startswith("edgec: internal error: KeyError") and "bug in edgec" in line and "--debug" in line


def test_an_internal_error_raised_at_a_boundary_is_exit_3(tmp_path, monkeypatch, capsys):
    from edgec import compiler
    from edgec.errors import InternalError

    def broken(*args, **kwargs):
        raise InternalError("backend 'onnx' could not run what it wrote: shape mismatch")

    monkeypatch.setattr(compiler, "compile", broken)
    assert _one_line(capsys, 3, main([LENET5, "-t", "x86-64"])) == (
        "edgec: internal error: backend 'onnx' could not run what it wrote: shape mismatch "
        "(a bug in edgec; run with --debug for the traceback)"
    )


def test_a_builtin_pass_crashing_is_exit_3_and_a_plugin_pass_crashing_is_exit_2(tmp_path, monkeypatch, capsys):
    cls = Registry().pass_class("fold-constants")

    def crash(self, graph, ctx):
        raise KeyError("probs_f__float32")

    monkeypatch.setattr(cls, "run", crash)
    argv = [LENET5, "-t", "x86-64", "--passes", "fold-constants", "-q", "-o", str(tmp_path / "o")]
    line = _one_line(capsys, 3, main(argv))
    assert line == (
        "edgec: internal error: pass 'fold-constants' raised KeyError: 'probs_f__float32' "
        "(a bug in edgec; run with --debug for the traceback)"
    )
    plugin = str(Path(__file__).parent / "plugins" / "raises_in_pass.py")
    argv = [LENET5, "-t", "x86-64", "--plugin", plugin, "--passes", "explode", "-q", "-o", str(tmp_path / "o")]
    assert _one_line(capsys, 2, main(argv)).startswith("edgec: error: pass 'explode' raised")
    assert not (tmp_path / "o").exists()


# --- 2: bad input -----------------------------------------------------------------------------


def test_unknown_command_word(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    line = _one_line(capsys, 2, main(["bulid", "x.onnx"]))
    assert line == (
        "edgec: error: unknown command 'bulid'; commands: inspect, passes, targets, models, debug-precision, "
        "bench, build-engine, or a model to build (edgec MODEL --target TARGET)"
    )
    assert "required" in _one_line(capsys, 2, main([]))  # no arguments at all: usage, not a crash
    (tmp_path / "bulid").write_bytes(b"not a model")  # a file of that name is a model to build
    assert "unknown command" not in _one_line(capsys, 2, main(["bulid", "-t", "x86-64"]))


@pytest.mark.parametrize(
    "argv, option",
    [
        ([LENET5, "-t", "x86-64", "--samples", "0"], "--samples"),
        ([LENET5, "-t", "x86-64", "--samples", "99999999999"], "--samples"),
        ([LENET5, "-t", "x86-64", "--tune-trials", "-1"], "--tune-trials"),
        ([LENET5, "-t", "x86-64", "--holdout", "1.5"], "--holdout"),
        ([LENET5, "-t", "x86-64", "--holdout", "nan"], "--holdout"),
        ([LENET5, "-t", "x86-64", "--timeout", "-1"], "--timeout"),
        ([LENET5, "-t", "x86-64", "--max-drop", "-2"], "--max-drop"),
        ([LENET5, "-t", "x86-64", "--seed", "-1"], "--seed"),
        (["bench", "b", "--threads", "-1"], "--threads"),
        (["bench", "b", "--runs", "0"], "--runs"),
        (["bench", "b", "--warmup", "-1"], "--warmup"),
        (["debug-precision", LENET5, "--calib", "random:4", "--samples", "0"], "--samples"),
    ],
)
def test_nonsensical_options_are_refused_naming_the_option(argv, option, capsys):
    line = _one_line(capsys, 2, main(argv))
    assert f"argument {option}: " in line


@pytest.mark.parametrize(
    "text, message",
    [
        ("equalize-cross-layer{iterations=-5}", "pass 'equalize-cross-layer' option iterations=-5: must be >= 1"),
        ("quantize{percentile=-1}", "pass 'quantize' option percentile=-1.0: must be >= 1"),
        ("fold-constants{max_growth_bytes=-1}", "pass 'fold-constants' option max_growth_bytes=-1: must be >= 0"),
        ("prune-magnitude{sparsity=1.5}", "pass 'prune-magnitude' option sparsity=1.5: must be < 1"),
        ("weight-share{bits=0}", "pass 'weight-share' option bits=0: must be >= 1"),
        ("finetune{lr=inf}", "pass 'finetune' option lr=inf: must be a finite number"),
    ],
)
def test_pass_options_out_of_their_declared_bounds(text, message, capsys):
    line = _one_line(capsys, 2, main([LENET5, "-t", "x86-64", "--passes", text, "--print-pipeline"]))
    assert line == f"edgec: error: {message}"


def test_pass_option_bounds_hold_for_direct_construction_too():
    cls = Registry().pass_class("equalize-cross-layer")
    with pytest.raises(PipelineError, match="iterations=0: must be >= 1"):
        cls(iterations=0)
    assert cls(iterations=2).iterations == 2


def test_torch_save_pickle_points_to_the_python_api(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    path = tmp_path / "model.pt"
    torch.save(torch.nn.Sequential(torch.nn.Linear(3, 2)), path)
    line = _one_line(capsys, 2, main([str(path), "-t", "x86-64", "-o", str(tmp_path / "o")]))
    assert "torch.save() pickle" in line and "edgec.compile(module, example_inputs=...)" in line
    assert "corrupt" not in line


def test_truncated_external_data_is_bad_input(tmp_path, capsys):
    onnx.save(onnx.load(LENET5), tmp_path / "m.onnx", save_as_external_data=True, location="m.data", size_threshold=0)
    data = (tmp_path / "m.data").read_bytes()
    (tmp_path / "m.data").write_bytes(data[: len(data) // 2])
    line = _one_line(capsys, 2, main([str(tmp_path / "m.onnx"), "-t", "x86-64", "-o", str(tmp_path / "o")]))
    assert "external data for tensor" in line and "truncated" in line and "m.data" in line
    assert _one_line(capsys, 2, main(["inspect", str(tmp_path / "m.onnx")]))


def test_corrupt_npz_archives_for_data_options(tmp_path, capsys):
    np.savez(tmp_path / "good.npz", input=np.zeros((20, 1, 28, 28), np.float32), labels=np.zeros(20, np.int64))
    data = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "bad.npz").write_bytes(data[: len(data) // 2])
    for option in (
        ["--calib", str(tmp_path / "bad.npz"), "-O", "int8"],
        ["--inputs", str(tmp_path / "bad.npz")],
        ["--eval", str(tmp_path / "bad.npz")],
    ):
        line = _one_line(capsys, 2, main([LENET5, "-t", "x86-64", "-q", "-o", str(tmp_path / "o"), *option]))
        assert "bad.npz" in line


# --- plugins: sys.exit and hangs ----------------------------------------------------------------


EXITING_PASS = """
import sys
from edgec.pass_infra import Pass, PassResult

class ExitPass(Pass):
    name = "exit-zero"
    summary = "Calls sys.exit(0)."

    def run(self, graph, ctx):
        sys.exit(0)
"""

HANGING_PASS = """
import time
from edgec.pass_infra import Pass, PassResult

class HangPass(Pass):
    name = "hang"
    summary = "Never returns, and swallows exceptions while it waits."

    def run(self, graph, ctx):
        while True:
            try:
                time.sleep(0.05)
            except Exception:
                pass
"""


def test_plugin_sys_exit_at_import_is_a_plugin_error(tmp_path, capsys):
    plugin = tmp_path / "exits.py"
    plugin.write_text("import sys\nsys.exit(0)\n")
    line = _one_line(
        capsys, 2, main([LENET5, "-t", "x86-64", "--plugin", str(plugin), "-q", "-o", str(tmp_path / "o")])
    )
    assert f"plugin {plugin} called sys.exit(0)" in line
    assert not (tmp_path / "o").exists()


def test_plugin_sys_exit_in_its_pass_is_a_plugin_error(tmp_path, capsys):
    plugin = tmp_path / "exit_pass.py"
    plugin.write_text(EXITING_PASS)
    argv = [LENET5, "-t", "x86-64", "--plugin", str(plugin), "--passes", "exit-zero", "-q", "-o", str(tmp_path / "o")]
    line = _one_line(capsys, 2, main(argv))
    assert "pass 'exit-zero' called sys.exit(0)" in line
    assert not (tmp_path / "o").exists()


def test_calibration_plugin_sys_exit_is_a_plugin_error(tmp_path, capsys):
    plugin = tmp_path / "calib_exit.py"
    plugin.write_text("import sys\n\ndef calibration_samples(inputs):\n    sys.exit(0)\n    yield {}\n")
    argv = [LENET5, "-t", "x86-64", "-O", "int8", "--calib", f"plugin:{plugin}", "-o", str(tmp_path / "o"), "-q"]
    line = _one_line(capsys, 2, main(argv))
    assert "sys.exit(0)" in line
    assert not (tmp_path / "o").exists()


def test_a_hanging_pass_is_stopped_by_the_timeout(tmp_path, capsys):
    plugin = tmp_path / "hang.py"
    plugin.write_text(HANGING_PASS)
    argv = [
        LENET5,
        "-t",
        "x86-64",
        "--plugin",
        str(plugin),
        "--passes",
        "fold-constants,hang",
        "-q",
        "-o",
        str(tmp_path / "o"),
        "--timeout",
        "1.5",
    ]
    start = time.monotonic()
    line = _one_line_in_a_child(argv, 1)
    assert time.monotonic() - start < 30
    assert "ran past --timeout 1.5s while running pass 'hang'" in line and f"{plugin}:" in line
    assert not (tmp_path / "o").exists() and [p.name for p in tmp_path.iterdir()] == ["hang.py"]


def test_a_hanging_calibration_plugin_is_stopped_by_the_timeout(tmp_path, capsys):
    plugin = tmp_path / "calib_hang.py"
    plugin.write_text(
        "import time\n\ndef calibration_samples(inputs):\n    while True:\n        time.sleep(0.05)\n    yield {}\n"
    )
    argv = [
        LENET5,
        "-t",
        "x86-64",
        "-O",
        "int8",
        "--calib",
        f"plugin:{plugin}",
        "-o",
        str(tmp_path / "o"),
        "-q",
        "--timeout",
        "1",
    ]
    line = _one_line_in_a_child(argv, 1)
    assert "ran past --timeout 1s" in line and f"{plugin}:" in line


# --- loader fuzzing -----------------------------------------------------------------------------


def _mutate(data: bytes, rng) -> bytes:
    from tests.test_bundle_load import _mutate as mutate

    return mutate(data, rng)


def _fuzz(path: Path, data: bytes, count: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    outcomes = {"loaded": 0, "refused": 0}
    for _ in range(count):
        path.write_bytes(_mutate(data, rng))
        try:
            frontends.load(path)
            outcomes["loaded"] += 1
        except EdgecError as exc:
            assert exc.exit_code == 2
            outcomes["refused"] += 1
    return outcomes


def test_fuzzing_the_onnx_loader_gives_only_edgec_errors(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(_tiny(), path)
    start = time.monotonic()
    outcomes = _fuzz(path, path.read_bytes(), 200, seed=1)
    assert outcomes["refused"] > 50 and time.monotonic() - start < 60, outcomes


@pytest.fixture(scope="module")
def tiny_tflite(tmp_path_factory):
    pytest.importorskip("ai_edge_litert")
    out = tmp_path_factory.mktemp("tflite")
    edgec.compile(_tiny(), "raspberry-pi-4", "2", output_dir=out / "fp32")
    edgec.compile(_tiny(), "raspberry-pi-4", "int8", output_dir=out / "int8", calib="random:16")
    return [(out / kind / "model.tflite").read_bytes() for kind in ("fp32", "int8")]


def test_fuzzing_the_tflite_loader_gives_only_edgec_errors(tmp_path, tiny_tflite):
    start = time.monotonic()
    for seed, data in enumerate(tiny_tflite):
        outcomes = _fuzz(tmp_path / "m.tflite", data, 100, seed)
        assert outcomes["refused"] > 30, outcomes
    assert time.monotonic() - start < 60


# --- inspect: overflow, opset, Constant-node weights ---------------------------------------------


def test_inspect_a_2_to_the_62_dimension_does_not_wrap_to_zero(tmp_path, capsys):
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="relu")],
        "huge",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1 << 62])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1 << 62])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "huge.onnx")
    assert main(["inspect", str(tmp_path / "huge.onnx"), "-t", "raspberry-pi-4", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["peak_activation_memory"]["bytes"] == 2 * 4 * (1 << 62)
    assert info["fit"][0]["fits"] is False and info["fit"][0]["ram_needed"] > info["fit"][0]["ram_available"]
    assert main(["inspect", str(tmp_path / "huge.onnx"), "-t", "raspberry-pi-4"]) == 0
    text = capsys.readouterr().out
    assert "NO" in text and " 0 B" not in text


def test_inspect_prints_the_files_opset_and_counts_constant_node_weights(tmp_path, capsys):
    onnx.save(_tiny(opset=11, weights_as_constant_nodes=True), tmp_path / "old.onnx")
    assert main(["inspect", str(tmp_path / "old.onnx"), "-t", "x86-64", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["opset"] == 11 and info["opset_converted_to"] >= 13
    layers = {layer["name"]: layer for layer in info["macs"]["layers"]}
    assert layers["conv"]["params"] == 4 * 9 and layers["fc"]["params"] == 144 * 3
    assert layers["conv"]["weight_bytes"] == 4 * 9 * 4
    assert main(["inspect", str(tmp_path / "old.onnx"), "-t", "x86-64"]) == 0
    assert f"(opset 11, converted to {info['opset_converted_to']}" in capsys.readouterr().out


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header declares width x height (no pixel data): what a decompression bomb shows PIL."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def test_decompression_bomb_images_and_zero_scale_are_bad_input(tmp_path, capsys):
    for label in ("cat", "dog"):
        (tmp_path / "images" / label).mkdir(parents=True)
        _png_header_only(tmp_path / "images" / label / "a.png", 30000, 30000)
    out = str(tmp_path / "o")
    line = _one_line(
        capsys,
        2,
        main(
            [
                LENET5,
                "-t",
                "x86-64",
                "-q",
                "-o",
                out,
                "--eval",
                str(tmp_path / "images"),
                "--preprocess",
                "resize=28,color=gray",
            ]
        ),
    )
    assert "a.png" in line
    line = _one_line(
        capsys,
        2,
        main(
            [
                LENET5,
                "-t",
                "x86-64",
                "-q",
                "-o",
                out,
                "-O",
                "int8",
                "--calib",
                str(tmp_path / "images" / "cat"),
                "--preprocess",
                "scale=1/0",
            ]
        ),
    )
    assert "scale=1/0" in line
    assert not (tmp_path / "o").exists()


def test_a_too_long_name_anywhere_edgec_writes_is_bad_input(tmp_path, capsys):
    dump = tmp_path / ("d" * 300)
    argv = [LENET5, "-t", "x86-64", "-q", "-o", str(tmp_path / "o"), "--dump-dir", str(dump)]
    assert _one_line(capsys, 2, main(argv)).startswith("edgec: error: file name too long: ")


def test_input_shape_dtype_a_broken_zip_pt_and_a_dump_dir_that_is_a_file(tmp_path, capsys):
    line = _one_line(capsys, 2, main([LENET5, "-t", "x86-64", "--input-shape", "input=1x1x28x28:float99"]))
    assert "'float99' is not a numeric dtype" in line
    (tmp_path / "z.pt").write_bytes(b"PK\x03\x04junk")
    line = _one_line(capsys, 2, main([str(tmp_path / "z.pt"), "-t", "x86-64", "--input-shape", "x=1x3"]))
    assert "not a TorchScript archive (not a readable zip file" in line
    (tmp_path / "file").write_text("x")
    argv = [LENET5, "-t", "x86-64", "-q", "-o", str(tmp_path / "o"), "--dump-dir", str(tmp_path / "file")]
    assert "exists and is not a directory" in _one_line(capsys, 2, main(argv))
