"""A fast slice of the real-model sweep (bench/realmodels): three real pretrained models through the
installed `edgec` CLI, asserting the exit-code contract of issue 12 on models edgec was not tuned on.

Every build exits 0, 1 or 2 (never 3, a traceback or a kill); a failure says why in exactly one
`edgec: error` line; a build that exits 0 left a bundle whose report says every check passed.
The models come from `scripts/fetch-realmodels --only ...` (run by `make test-data`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.realmodels.corpus import BY_NAME

EDGEC = Path(sys.executable).with_name("edgec")
SUBSET = ["ppocr-cls", "nudenet-320n", "mp-face-detection"]  # ONNX classifier, YOLO detector, TFLite
BUILDS = [
    ("ppocr-cls", "onnx", "x86-64", ["-O2"]),
    ("nudenet-320n", "onnx", "x86-64", ["-O2"]),
    ("mp-face-detection", "tflite", "raspberry-pi-4", ["-O2"]),
    ("mp-face-detection", "onnx", "x86-64", ["-O", "int8", "--calib", "random:16"]),
]


def _model(name: str) -> Path:
    path = BY_NAME[name].path
    if not path.exists():
        pytest.skip(f"{path} missing: run scripts/fetch-realmodels (make test-data)")
    return path


@pytest.mark.parametrize("name,backend,target,options", BUILDS, ids=[f"{b[0]}-{b[1]}-{'-'.join(b[3][:2])}" for b in BUILDS])
def test_real_model_build_keeps_the_exit_code_contract(tmp_path, name, backend, target, options):
    if backend == "tflite":
        pytest.importorskip("ai_edge_litert.interpreter", reason="pip install 'edgec[tflite]'")
    entry = BY_NAME[name]
    out = tmp_path / "bundle"
    command = [str(EDGEC), str(_model(name)), "--target", target, "--backend", backend, *options, "-o", str(out)]
    command += entry.shape_args()
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    errors = [line for line in done.stderr.splitlines() if line.startswith("edgec: error")]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.returncode in (0, 1, 2), f"exit {done.returncode}: {done.stderr[-1000:]}"
    if done.returncode == 0:
        assert not errors, errors
        report = json.loads((out / "report.json").read_text())
        assert report["ok"], report.get("final_check")
        for check in ("final_check", "backend_check"):
            if report.get(check) is not None:
                assert report[check]["ok"], (check, report[check])
        assert (out / "manifest.json").is_file()
    else:
        assert len(errors) == 1, done.stderr[-2000:]
        assert not (out / "manifest.json").exists() or done.returncode == 1
