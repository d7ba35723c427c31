"""Packaging (issue 12, class 17): every subpackage and data file is in the wheel, and a wheel
installed into a fresh venv builds a TFLite bundle (the Raspberry Pi's default backend).

The fresh venv has no pip and no copy of the third-party dependencies: a .pth line puts the
project venv's site-packages after its own. That directory holds edgec only as an editable-install
finder, which a .pth-added directory never activates (only site directories process .pth files);
the test asserts edgec is imported from the new venv, never from the checkout."""

import ast
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"edgec": "edgec", "edgec.passes": "passes", "edgec.backends": "backends", "edgec.models": "models"}


def _packages_on_disk() -> set[str]:
    found = set()
    for name, directory in ROOTS.items():
        for init in (REPO / directory).rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            rel = init.parent.relative_to(REPO / directory)
            found.add(".".join([name, *rel.parts]))
    return found


def test_setup_discovers_every_package_and_pyproject_lists_none_by_hand():
    """Fast: the discovery setup.py runs equals every package directory on disk."""
    source = (REPO / "setup.py").read_text()
    namespace: dict = {}
    tree = ast.parse(source)
    tree.body = [n for n in tree.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Call))]  # no setup()
    exec(compile(tree, "setup.py", "exec"), namespace)
    assert namespace["ROOTS"] == ROOTS
    discovered = set(namespace["discover"]())
    assert discovered == _packages_on_disk()
    assert "edgec.backends.tflite.ops" in discovered and "edgec.passes.cleanup" in discovered
    pyproject = (REPO / "pyproject.toml").read_text()
    assert "\npackages = [" not in pyproject and '"edgec.backends" = "backends"' in pyproject


def _run(argv, **kwargs):
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, f"{argv}: {result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built from a copy of the source files (tracked, or new and not ignored), so stale build/
    or egg-info leftovers of the checkout cannot slip into it."""
    source = tmp_path_factory.mktemp("source")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if listed.returncode == 0:
        for name in filter(None, listed.stdout.split("\0")):
            if (REPO / name).is_file():
                (source / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / name, source / name)
    else:  # not a git checkout (an unpacked archive): everything but build outputs and environments
        junk = shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__", ".pytest_cache")
        shutil.copytree(REPO, source, ignore=junk, dirs_exist_ok=True)
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(source), "-w", str(out)])
    (found,) = out.glob("edgec-*.whl")
    return found


def test_wheel_holds_every_package_and_its_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    packages = {".".join(Path(n).parent.parts) for n in names if n.endswith("__init__.py")}
    assert packages == _packages_on_disk()
    for data in ("edgec/targets/profiles.toml", "edgec/models/lenet5.onnx", "edgec/models/models.json"):
        assert data in names


def test_wheel_in_a_fresh_venv_builds_tflite(wheel, tmp_path):
    pytest.importorskip("ai_edge_litert")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)])
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (site / "project_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    work = tmp_path / "work"  # a cwd outside the checkout, so `import edgec` cannot find it there
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    where = _run(
        [str(python), "-c", "import edgec, edgec.backends.tflite.ops; print(edgec.__file__)"], cwd=work, env=env
    )
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout
    build = _run(
        [str(venv / "bin" / "edgec"), "zoo:lenet5", "--target", "raspberry-pi-4", "-O2", "-o", "out", "-q"],
        cwd=work,
        env=env,
    )
    assert "all checks ok" in build.stdout
    assert (work / "out" / "model.tflite").stat().st_size > 100_000
    assert (work / "out" / "manifest.json").is_file()
