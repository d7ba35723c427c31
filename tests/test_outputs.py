"""Output directories (issue 12, class 13): edgec replaces only its own outputs, never the inputs,
keeps a good bundle when a build fails, and commits so that a crash at any instant leaves the old
or the new bundle at the destination."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from edgec import bundle
from edgec.cli import main
from edgec.errors import EdgecError
from edgec.models import registry
from edgec.runtime import verified_manifest

LENET5 = registry.get("lenet5").path()
PLUGINS = Path(__file__).parent / "plugins"
REPO = Path(__file__).resolve().parents[1]


def _one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert err[0].startswith("edgec: error: ") and "Traceback" not in err[0]
    return err[0]


def _build(out, *extra) -> int:
    return main([str(LENET5), "-t", "x86-64", "--backend", "onnx", "-O0", "-q", "-o", str(out), *extra])


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".edgec-stage-" in p.name or ".edgec-old-" in p.name)


def test_output_dir_holding_the_input_model_is_refused_and_the_model_kept(tmp_path, capsys):
    models = tmp_path / "models"
    models.mkdir()
    model = models / "lenet5.onnx"
    shutil.copy(LENET5, model)
    before = _tree(models)
    for force in ([], ["--force"]):
        assert main([str(model), "-t", "x86-64", "--backend", "onnx", "-O0", "-q", "-o", str(models), *force]) == 2
        assert "holds the build's input" in _one_error_line(capsys)
        assert _tree(models) == before


def test_output_dot_is_refused_and_nothing_deleted(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    shutil.copy(LENET5, tmp_path / "m.onnx")
    (tmp_path / "notes.txt").write_text("mine")
    before = _tree(tmp_path)
    for out in (".", str(tmp_path), ".."):
        assert main(["m.onnx", "-t", "x86-64", "--backend", "onnx", "-O0", "-q", "-o", out, "--force"]) == 2
        assert "current directory" in _one_error_line(capsys)
    assert _tree(tmp_path) == before


def test_a_foreign_directory_is_replaced_only_with_force(tmp_path, capsys):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "cat.jpg").write_bytes(b"\xff\xd8 not edgec's")
    assert _build(out) == 2
    line = _one_error_line(capsys)
    assert "is not an edgec bundle" in line and "--force" in line
    assert (out / "cat.jpg").read_bytes() == b"\xff\xd8 not edgec's"
    assert _build(out, "--force") == 0
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx", "report.json", "report.md"]
    assert _leftovers(tmp_path) == []


def test_a_file_at_the_output_path_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    out.write_text("a file")
    assert _build(out, "--force") == 2
    assert "is not a directory" in _one_error_line(capsys)
    assert out.read_text() == "a file"


def test_empty_dir_and_an_existing_bundle_are_replaced(tmp_path, capsys):
    out = tmp_path / "b"
    out.mkdir()
    assert _build(out) == 0
    first = verified_manifest(out)
    (out / "report.md").write_text("stale")  # the rebuilt bundle must not keep anything of the old one
    assert _build(out) == 0
    assert verified_manifest(out)["files"].keys() == first["files"].keys()
    assert (out / "report.md").read_text() != "stale"
    assert _leftovers(tmp_path) == []


def test_failed_build_keeps_the_good_bundle_and_reports_beside_it(tmp_path, capsys):
    out = tmp_path / "b"
    assert _build(out) == 0
    good = _tree(out)
    capsys.readouterr()
    code = main(
        [
            str(LENET5),
            "-t",
            "x86-64",
            "--plugin",
            str(PLUGINS / "too_lossy.py"),
            "--passes",
            "scramble-weights",
            "-o",
            str(out),
            "-q",
        ]
    )
    assert code == 1
    line = _one_error_line(capsys)
    assert f"(report: {out}.failed/report.md)" in line
    assert _tree(out) == good  # untouched, byte for byte
    failed = tmp_path / "b.failed"
    assert json.loads((failed / "report.json").read_text())["ok"] is False
    assert bundle.is_failure_report(failed) and not bundle.is_bundle(failed)
    # A failure report may be replaced by edgec (it is edgec's own), and a good build removes it.
    assert bundle.replaceable(failed)
    assert _build(out) == 0
    assert not failed.exists() and _leftovers(tmp_path) == []


def test_failure_report_never_overwrites_a_foreign_dot_failed_dir(tmp_path):
    out = tmp_path / "b"
    (tmp_path / "b.failed").mkdir()
    (tmp_path / "b.failed" / "keep.txt").write_text("x")
    assert bundle.failure_dir(out) == tmp_path / "b.failed-2"


def test_overlong_output_name_is_one_line_exit_2(tmp_path, capsys):
    out = tmp_path / ("x" * 250)
    assert _build(out) == 2
    assert "directory name is 250 bytes" in _one_error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_disk_full_is_exit_2_and_leaves_the_old_bundle(tmp_path, monkeypatch, capsys):
    out = tmp_path / "b"
    assert _build(out) == 0
    good = _tree(out)
    real = bundle.write_json

    def full(path, data):
        if Path(path).name == "report.json":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    monkeypatch.setattr(bundle, "write_json", full)
    assert _build(out) == 2
    line = _one_error_line(capsys)
    assert line.startswith("edgec: error: no space left on device writing ") and "report.json" in line
    assert _tree(out) == good and _leftovers(tmp_path) == []
    with pytest.raises(EdgecError) as raised:  # the API raises the same one-line error
        import edgec

        edgec.compile(str(LENET5), "x86-64", "0", output_dir=out, backend="onnx")
    assert raised.value.exit_code == 2 and "no space left on device" in str(raised.value)


# --- crash safety: a process SIGKILLed at every step of the commit -----------------------------

WRITER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from edgec import bundle
    out, generation = Path(sys.argv[1]), sys.argv[2]
    with bundle.Staging(out) as stage:
        for i in range(5):
            (stage.path / f"part{i}.bin").write_bytes(generation.encode() * 1000)
        bundle.write_json(stage.path / "manifest.json", {"format": "edgec-bundle", "generation": generation})
        stage.commit()
    """
)


def _write(out: Path, generation: str, crash_at: str | None = None, exchange: bool = True) -> int:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop(bundle.CRASH_HOOK, None)
    if crash_at:
        env[bundle.CRASH_HOOK] = crash_at
    if not exchange:
        env["EDGEC_NO_RENAME_EXCHANGE"] = "1"
    return subprocess.run([sys.executable, "-c", WRITER, str(out), generation], env=env, timeout=60).returncode


def _generation(out: Path) -> str:
    manifest = json.loads((out / "manifest.json").read_text())
    parts = {p.name: p.read_bytes() for p in out.glob("part*.bin")}
    assert len(parts) == 5 and all(v == manifest["generation"].encode() * 1000 for v in parts.values())
    return manifest["generation"]


@pytest.mark.parametrize(
    "step, expected",
    [("staged", "old"), ("exchanged", "new"), ("removing-old", "new"), ("removed-old", "new")],
)
def test_kill_at_any_commit_step_leaves_a_whole_bundle(tmp_path, step, expected):
    out = tmp_path / "bundle"
    assert _write(out, "old") == 0
    assert _write(out, "new", crash_at=step) == -signal.SIGKILL
    assert _generation(out) == expected  # whole: old or new, never a mix, never missing
    if step != "removed-old":
        assert _leftovers(tmp_path)  # the killed run left its staging directory...
    assert _write(out, "newer") == 0  # ...which the next run removes (its owner is dead)
    assert _generation(out) == "newer" and _leftovers(tmp_path) == []


def test_kill_during_the_first_commit_leaves_no_half_bundle(tmp_path):
    out = tmp_path / "bundle"
    assert _write(out, "new", crash_at="staged") == -signal.SIGKILL
    assert not out.exists()
    assert _write(out, "new") == 0 and _generation(out) == "new" and _leftovers(tmp_path) == []


def test_two_rename_fallback_is_repaired_by_the_next_run(tmp_path):
    """Without renameat2 (other kernels/filesystems) a kill between the two renames leaves the
    old bundle under its old-name; the next run moves it back before anything else."""
    out = tmp_path / "bundle"
    assert _write(out, "old", exchange=False) == 0
    assert _write(out, "new", crash_at="moved-old", exchange=False) == -signal.SIGKILL
    assert not out.exists()
    bundle.clean_leftovers(out)
    assert _generation(out) == "old" and _leftovers(tmp_path) == []


def test_leftovers_of_a_live_process_are_kept(tmp_path):
    out = tmp_path / "bundle"
    live = tmp_path / f".bundle.edgec-stage-{os.getppid()}-abcd1234"
    dead = tmp_path / ".bundle.edgec-stage-999999999-abcd1234"
    other = tmp_path / ".other.edgec-stage-999999999-abcd1234"
    for d in (live, dead, other):
        d.mkdir()
    assert bundle.clean_leftovers(out) == [dead]
    assert live.exists() and other.exists() and not dead.exists()


def test_a_real_build_killed_after_the_exchange_leaves_the_new_bundle(tmp_path):
    out = tmp_path / "b"
    assert _build(out) == 0
    old = json.loads((out / "manifest.json").read_text())
    env = {**os.environ, bundle.CRASH_HOOK: "exchanged"}
    argv = [
        sys.executable,
        "-m",
        "edgec",
        str(LENET5),
        "-t",
        "x86-64",
        "--backend",
        "onnx",
        "-O1",
        "-q",
        "-o",
        str(out),
    ]
    assert subprocess.run(argv, env=env, cwd=REPO, timeout=300).returncode == -signal.SIGKILL
    new = verified_manifest(out)  # whole and verified
    assert new["pipeline"] != old["pipeline"] and new["pipeline"].startswith("remove-identity")
    assert _leftovers(tmp_path)
    assert _build(out) == 0 and _leftovers(tmp_path) == []


def test_output_under_a_file_or_unwritable_dir_is_exit_2(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert _build(tmp_path / "file" / "out") == 2
    assert "is a file, not a directory" in _one_error_line(capsys)
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert _build(locked / "out") == 2
        assert "Permission denied" in _one_error_line(capsys)


def test_data_and_plugin_inputs_inside_the_output_are_refused_too(tmp_path, capsys):
    out = tmp_path / "b"
    assert _build(out) == 0
    np = pytest.importorskip("numpy")
    np.savez(out / "calib.npz", input=np.zeros((16, 1, 28, 28), np.float32))  # the user's data, put there
    (out / "my:plugin.py").write_text(
        "import numpy as np\n\ndef calibration_samples(inputs):\n"
        "    for _ in range(16):\n        yield {'input': np.zeros((1, 1, 28, 28), np.float32)}\n"
    )
    for extra in (
        ["-O", "int8", "--calib", str(out / "calib.npz")],
        ["--inputs", str(out / "calib.npz")],
        ["-O", "int8", "--calib", f"plugin:{out / 'my:plugin.py'}"],
    ):
        assert _build(out, *extra) == 2
        assert "holds the build's input" in _one_error_line(capsys)
    assert (out / "calib.npz").is_file() and (out / "my:plugin.py").is_file()


def _swap_with_a_signal_mid_commit(tmp: str) -> tuple[list, str, list]:
    """The alarm fires while the swap runs (held, then delivered). A second thread is running, as
    onnxruntime's are in a build: the kernel may hand it the signal."""
    import threading

    tmp_path = Path(tmp)
    threading.Thread(target=time.sleep, args=(2,), daemon=True).start()
    out = tmp_path / "bundle"
    assert _write(out, "old") == 0
    fired = []
    previous = signal.signal(signal.SIGALRM, lambda *_: fired.append(_generation(out)))
    real_exchange = bundle.exchange

    def slow_exchange(a, b):
        os.kill(os.getpid(), signal.SIGALRM)  # arrives mid-commit
        return real_exchange(a, b)

    try:
        bundle.exchange = slow_exchange
        with bundle.Staging(out) as stage:
            for i in range(5):
                (stage.path / f"part{i}.bin").write_bytes(b"n" * 1000)
            bundle.write_json(stage.path / "manifest.json", {"format": "edgec-bundle", "generation": "n"})
            stage.commit()
    finally:
        bundle.exchange = real_exchange
        signal.signal(signal.SIGALRM, previous)
    return fired, _generation(out), _leftovers(tmp_path)


def test_a_timeout_or_ctrl_c_during_the_swap_is_delivered_after_it(tmp_path):
    """The new bundle is whole and the handler ran only once it was in place. In a fresh
    interpreter: sending this process a real SIGALRM after other tests loaded OpenVINO's and
    TVM's native threads crashed the whole test run (SIGSEGV) on CI."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        fired, generation, leftovers = pool.apply(_swap_with_a_signal_mid_commit, (str(tmp_path),))
    assert fired == ["n"]
    assert generation == "n" and leftovers == []
