import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgec.cli import main
from edgec.models import registry
from tests.helpers import linf_rel, run

PLUGINS = Path(__file__).parent / "plugins"
LENET5 = str(registry.get("lenet5").path())


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1
    line = err[-1]
    assert line.startswith("edgec: error: ")
    assert "Traceback" not in "\n".join(err)
    return line


def test_build_writes_the_bundle_and_a_complete_report(tmp_path, capsys):
    out = tmp_path / "lenet5-pi"
    assert main([LENET5, "--target", "raspberry-pi-4", "--backend", "onnx", "-O2", "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx", "report.json", "report.md"]
    report = json.loads((out / "report.json").read_text())
    assert report["ok"] and report["target"] == "raspberry-pi-4" and report["backend"] == "onnx"
    assert report["pipeline"].startswith("remove-identity,fold-constants{max_growth_bytes=1048576")
    for p in report["passes"]:
        assert {"name", "modified", "seconds", "stats", "check"} <= set(p)
        if p["modified"]:
            assert set(p["check"]) >= {"ok", "max_abs_err", "max_rel_err", "cosine", "sqnr_db"}
    assert set(report["size_bytes"]) >= {"before", "after"} and set(report["params"]) == {"before", "after"}
    assert report["params"]["before"] == report["params"]["after"] == 431_080
    assert report["final_check"]["ok"] and report["final_check"]["max_rel_err"] <= 1e-5
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["pipeline"] == report["pipeline"]
    assert manifest["inputs"][0]["layout"] == "NCHW"
    assert set(manifest["files"]) == {"model.onnx", "report.json", "report.md"}
    written = onnx.load(out / "model.onnx")
    assert {p.key: p.value for p in written.metadata_props}["edgec.pipeline"] == report["pipeline"]
    assert "| # | pass |" in (out / "report.md").read_text()
    # The optimized file computes what the original did.
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    assert linf_rel(run(onnx.load(LENET5), {"input": x})[0], run(written, {"input": x})[0]) <= 1e-5


def test_default_output_dir_is_build_model_target(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["zoo:lenet300", "-t", "x86-64", "--backend", "onnx", "-q"]) == 0
    assert (tmp_path / "build" / "lenet300-x86-64" / "model.onnx").is_file()


def test_print_pipeline_is_the_reproducible_text(capsys):
    assert main(["m.onnx", "--target", "jetson-nano", "-O1", "--print-pipeline"]) == 0
    text = capsys.readouterr().out.strip()
    assert text == (
        "remove-identity,fold-constants{max_growth_bytes=1048576,keep_ops=[DequantizeLinear]},"
        "eliminate-dead-code,topological-sort"
    )
    assert main(["m.onnx", "--target", "jetson-nano", "--passes", text, "--print-pipeline"]) == 0
    assert capsys.readouterr().out.strip() == text


def test_plugin_pass_runs_and_shows_in_pipeline_and_report(tmp_path, capsys):
    plugin = str(PLUGINS / "round_weights.py")
    passes = "fold-constants,round-weights{decimals=3}"
    assert main([LENET5, "-t", "raspberry-pi-4", "--plugin", plugin, "--passes", passes, "--print-pipeline"]) == 0
    assert "round-weights{decimals=3}" in capsys.readouterr().out
    out = tmp_path / "b"
    assert main([LENET5, "-t", "raspberry-pi-4", "--plugin", plugin, "--passes", passes, "-o", str(out), "-q"]) == 0
    report = json.loads((out / "report.json").read_text())
    step = next(p for p in report["passes"] if p["name"] == "round-weights")
    assert step["modified"] and step["stats"]["values_changed"] > 1000
    assert step["check"]["against"] == "original" and step["check"]["ok"] and step["check"]["cosine"] > 0.999
    assert main(["passes", "--plugin", plugin]) == 0
    assert "round-weights" in capsys.readouterr().out


def test_plugin_given_as_an_importable_module(tmp_path, capsys):
    argv = [LENET5, "-t", "x86-64", "--plugin", "tests.plugins.round_weights", "--passes", "round-weights"]
    assert main(argv + ["-o", str(tmp_path / "o"), "-q"]) == 0
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["pipeline"] == "round-weights{decimals=2}" and report["passes"][0]["modified"]


def test_dump_dir_numbers_each_pass(tmp_path, capsys):
    dump = tmp_path / "dump"
    assert main([LENET5, "-t", "x86-64", "-O1", "-o", str(tmp_path / "o"), "--dump-dir", str(dump), "-q"]) == 0
    assert sorted(p.name for p in dump.iterdir()) == [
        "000_input.onnx",
        "001_remove-identity.onnx",
        "002_fold-constants.onnx",
        "003_eliminate-dead-code.onnx",
        "004_topological-sort.onnx",
    ]


def test_failed_lossy_check_stops_the_build_or_is_recorded_with_keep_going(tmp_path, capsys):
    plugin = str(PLUGINS / "too_lossy.py")
    out = tmp_path / "o"
    assert main([LENET5, "-t", "x86-64", "--plugin", plugin, "--passes", "scramble-weights", "-o", str(out), "-q"]) == 1
    line = _error_line(capsys)
    assert "pass 'scramble-weights' failed its equivalence check" in line and f"{out}.failed/report.md" in line
    assert not out.exists()  # a failed build writes no bundle, and its report goes beside the destination
    failed_dir = tmp_path / "o.failed"
    assert sorted(p.name for p in failed_dir.iterdir()) == [".edgec-failed-build", "report.json", "report.md"]
    failed = json.loads((failed_dir / "report.json").read_text())
    assert not failed["ok"] and "scramble-weights" in failed["error"] and not failed["passes"][0]["check"]["ok"]
    code = main(
        [
            LENET5,
            "-t",
            "x86-64",
            "--plugin",
            plugin,
            "--passes",
            "scramble-weights",
            "-o",
            str(out),
            "--keep-going",
            "-q",
        ]
    )
    assert code == 1
    report = json.loads((out / "report.json").read_text())
    assert not report["ok"] and not report["passes"][0]["check"]["ok"]
    assert "CHECKS FAILED" in capsys.readouterr().out


def test_torchscript_with_input_shape(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU()).eval()
    path = tmp_path / "net.pt"
    torch.jit.script(module).save(str(path))
    out = tmp_path / "o"
    build = [str(path), "-t", "raspberry-pi-5", "--backend", "onnx", "--input-shape", "input=1x3x8x8"]
    assert main([*build, "-o", str(out), "-q"]) == 0
    model = onnx.load(out / "model.onnx")
    assert [n.op_type for n in model.graph.node] == ["Conv", "Relu"]  # BatchNorm folded
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        expected = module(x).numpy()
    assert linf_rel(expected, run(model, {"input": x.numpy()})[0]) <= 1e-5
    assert main([str(path), "-t", "raspberry-pi-5", "-o", str(out)]) == 2
    assert "needs --input-shape" in _error_line(capsys)


# --- bad input: one line on stderr, exit code 2, nothing written ---------------------------------


def _corrupt_files(tmp_path: Path) -> dict[str, Path]:
    text = tmp_path / "notes.onnx"
    text.write_text("this is not a model\n")
    noise = tmp_path / "noise.onnx"
    noise.write_bytes(np.random.default_rng(1).integers(0, 256, 10_000, dtype=np.uint8).tobytes())
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(Path(LENET5).read_bytes()[:5000])
    return {"text": text, "noise": noise, "truncated": truncated}


@pytest.mark.parametrize("kind", ["text", "noise", "truncated"])
def test_files_that_are_not_models(tmp_path, capsys, kind):
    out = tmp_path / "out"
    assert main([str(_corrupt_files(tmp_path)[kind]), "-t", "x86-64", "-o", str(out)]) == 2
    assert "not an ONNX model" in _error_line(capsys) or "not a valid ONNX model" in _error_line(capsys)
    assert not out.exists()


@pytest.mark.parametrize(
    "argv,message",
    [
        (["missing.onnx", "-t", "x86-64"], "missing.onnx: no such file"),
        (["lenet5.onnx", "-t", "x86-64"], "did you mean zoo:lenet5?"),
        ([LENET5, "-t", "toaster"], "unknown target 'toaster' (targets: android-arm64,"),
        ([LENET5, "-t", "x86-64", "--passes", "fold-everything"], "unknown pass 'fold-everything' (passes:"),
        ([LENET5, "-t", "x86-64", "--passes", "fold-constants{speed=11}"], "has no option 'speed'"),
        ([LENET5, "-t", "x86-64", "--passes", "fold-constants{max_growth_bytes=lots}"], "'lots' is not an integer"),
        ([LENET5, "-t", "x86-64", "--passes", "fold-constants{"], "malformed pipeline text at column 16"),
        ([LENET5, "-t", "x86-64", "-O", "7"], "unknown optimization level '7'"),
        ([LENET5, "-t", "x86-64", "--backend", "coreml"], "unknown backend 'coreml'"),
        ([LENET5, "-t", "x86-64", "--input-shape", "input=1xfoo"], "expected NAME=DIMxDIMx"),
        ([LENET5, "-t", "x86-64", "--inputs", "nope.npz"], "nope.npz: no such file"),
        ([LENET5], "the following arguments are required: --target"),
        (
            [LENET5, "-t", "x86-64", "--plugin", str(PLUGINS / "broken_on_import.py")],
            "failed to import: RuntimeError: this plugin cannot find its config",
        ),
        ([LENET5, "-t", "x86-64", "--plugin", "no_such_plugin_module"], "plugin no_such_plugin_module: no module"),
        (
            [LENET5, "-t", "x86-64", "--plugin", str(PLUGINS / "raises_in_pass.py"), "--passes", "explode"],
            "pass 'explode' raised KeyError: 'weights'",
        ),
        (["zoo:nonexistent", "-t", "x86-64"], "unknown model 'zoo:nonexistent'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    assert main(argv + ["-o", str(out)]) == 2
    assert message in _error_line(capsys)
    assert not out.exists()


def test_bad_check_inputs_name_the_file(tmp_path, capsys):
    bad = tmp_path / "inputs.npz"
    np.savez(bad, input=np.full((1, 1, 28, 28), np.nan, np.float32))
    assert main([LENET5, "-t", "x86-64", "--inputs", str(bad), "-o", str(tmp_path / "o")]) == 2
    assert f"{bad}[0]: 'input' contains NaN or Inf" in _error_line(capsys)
    np.savez(bad, image=np.zeros((1, 1, 28, 28), np.float32), mask=np.zeros(3))
    assert main([LENET5, "-t", "x86-64", "--inputs", str(bad), "-o", str(tmp_path / "o")]) == 2
    assert "arrays image, mask do not match the inputs input" in _error_line(capsys)


@pytest.mark.parametrize("shape,count", [((5, 1, 1, 28, 28), 5), ((5, 1, 28, 28), 5)])
def test_real_check_inputs_are_used(tmp_path, capsys, shape, count):
    """One more axis than the input stacks samples; so does a batch for the dynamic-batch input (a user
    with a (5, 1, 28, 28) array for an (N, 1, 28, 28) model means five samples)."""
    good = tmp_path / "inputs.npz"
    np.savez(good, input=np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    out = tmp_path / "o"
    assert main([LENET5, "-t", "x86-64", "--inputs", str(good), "-o", str(out), "-q"]) == 0
    assert json.loads((out / "report.json").read_text())["samples"] == {"count": count, "source": f"file {good}"}


def test_an_existing_output_is_replaced_only_when_the_build_succeeds(tmp_path, capsys):
    out = tmp_path / "o"
    assert main([LENET5, "-t", "x86-64", "-o", str(out), "-q"]) == 0
    before = (out / "report.json").read_text()
    assert main([LENET5, "-t", "x86-64", "-o", str(out), "--passes", "bogus"]) == 2
    assert (out / "report.json").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["o"]  # no staging directory left behind


def test_the_console_script_prints_no_traceback(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    bad = tmp_path / "bad.onnx"
    bad.write_text("garbage")
    proc = subprocess.run(
        [sys.executable, "-m", "edgec", str(bad), "-t", "x86-64"], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("edgec: error:")
    debug = subprocess.run(
        [sys.executable, "-m", "edgec", str(bad), "-t", "x86-64", "--debug"], capture_output=True, text=True, env=env
    )
    assert debug.returncode == 2 and "Traceback" in debug.stderr


def test_list_commands(capsys):
    assert main(["targets"]) == 0
    out = capsys.readouterr().out
    assert "jetson-nano" in out and "OpenVINO dropped the MYRIAD plugin" in out
    assert main(["targets", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) >= 10
    assert main(["passes", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["fold-constants"]["options"] == {"max_growth_bytes": "1048576", "keep_ops": "[DequantizeLinear]"}
    assert main(["models"]) == 0
    assert "zoo:silero-vad" in capsys.readouterr().out
