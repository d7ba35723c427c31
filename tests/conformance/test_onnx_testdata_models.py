"""-O2 on every model of the ONNX test suite (Debian libonnx-testdata): ~950 graphs from the ONNX
node tests and PyTorch's exporter, many at old opsets and IR versions, so this also exercises
the opset upgrade on load. Each optimized model must match the original in onnxruntime."""

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgec import ir, presets
from edgec.errors import ModelLoadError
from edgec.registry import Registry
from tests.helpers import apply, linf_rel, run

ROOT = Path("/usr/share/libonnx-testdata/data")
SUITES = ("node", "simple", "pytorch-converted", "pytorch-operator")

pytestmark = pytest.mark.skipif(not ROOT.is_dir(), reason="apt-get install libonnx-testdata")


def _cases():
    return sorted(p for suite in SUITES for p in (ROOT / suite).glob("*/model.onnx")) if ROOT.is_dir() else []


def _tensor_inputs(case: Path, model: ir.Model) -> dict | None:
    """The case's recorded inputs, or None when they are sequences/optionals (not tensors)."""
    files = sorted((case.parent / "test_data_set_0").glob("input_*.pb"))
    proto = onnx.load(case, load_external_data=False)
    if len(files) != len(model.graph.inputs) or any(not i.type.HasField("tensor_type") for i in proto.graph.input):
        return None
    return {t.name: numpy_helper.to_array(onnx.load_tensor(str(f))) for t, f in zip(model.graph.inputs, files)}


def _same(reference: np.ndarray, got: np.ndarray) -> bool:
    reference, got = np.asarray(reference), np.asarray(got)
    if reference.shape != got.shape:
        return False
    if not np.issubdtype(reference.dtype, np.number):
        return bool(np.array_equal(reference, got))
    ref64, got64 = reference.astype(np.float64), got.astype(np.float64)
    agree = (ref64 == got64) | (np.isnan(ref64) & np.isnan(got64))  # equal infinities and NaNs agree
    return linf_rel(np.where(agree, 0, ref64), np.where(agree, 0, got64)) <= 1e-5


def test_o2_keeps_every_runnable_model_equivalent():
    pipeline = presets.expand("2")
    registry = Registry(entry_points=False)
    checked, failures = 0, []
    for case in _cases():
        try:
            model = ir.load(case)
        except ModelLoadError:
            continue  # opsets the converter cannot move into range (checked elsewhere)
        feeds = _tensor_inputs(case, model)
        if feeds is None:
            continue
        try:
            reference = run(model, feeds)
        except Exception:
            continue  # onnxruntime cannot run the original either
        optimized = model.copy()
        try:
            for pass_ in registry.build_pipeline(pipeline):
                apply(optimized, pass_)
            if not all(_same(r, g) for r, g in zip(reference, run(optimized, feeds), strict=True)):
                failures.append(f"{case.parent.name}: outputs differ")
        except Exception as exc:  # a pass error is a failure too
            failures.append(f"{case.parent.name}: {exc}")
        checked += 1
    assert checked >= 900, checked
    assert not failures, failures
