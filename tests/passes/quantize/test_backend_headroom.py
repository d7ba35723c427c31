"""An int8 artifact whose backend kernels run further from float than the Q/DQ IR allows is built
once more with that much headroom in the quantize budget and judged by the budget
(compiler.headroom_pipeline). The kernels' extra error is a fault injected into the onnx
backend's runner: a fixed relative error on every output."""

import numpy as np
import pytest

import edgec
from edgec import compiler, pipeline_text
from edgec.compare import Comparison, Tolerance
from edgec.errors import CheckFailed
from edgec.passes.quantize.quantize import QuantizePass
from edgec.backends.onnx import OnnxBackend


def _lossy_kernels(monkeypatch, relative_error: float):
    """Every output of the artifact off by `relative_error` of its RMS, in a fixed pattern."""
    original = OnnxBackend.runner

    def runner(self, artifact, out_dir, threads=None):
        run = original(self, artifact, out_dir, threads)

        def lossy(feeds):
            outputs = run(feeds)
            moved = {}
            for name, value in outputs.items():
                value = np.asarray(value, np.float32)
                pattern = np.cos(np.arange(value.size, dtype=np.float32)).reshape(value.shape)
                rms = float(np.sqrt(np.mean(value.astype(np.float64) ** 2)))
                moved[name] = value + relative_error * rms * np.sqrt(2) * pattern
            return moved

        return lossy

    monkeypatch.setattr(OnnxBackend, "runner", runner)


def test_an_artifact_losing_to_its_ir_is_rebuilt_with_headroom_and_judged_by_the_budget(
    tmp_path, fmnist_calib, monkeypatch
):
    _lossy_kernels(monkeypatch, 0.1)  # 20 dB from float: far below the IR (~40 dB), inside 12 dB / cosine 0.98
    out = tmp_path / "o"
    result = edgec.compile("zoo:lenet5", target="x86-64", backend="onnx", opt="int8", calib=fmnist_calib, output_dir=out)
    report = result.report
    assert report["backend_check"]["ok"]
    assert report["backend_check"]["against"] == "float (the quantize budget, after the rebuild)"
    assert 17 < report["backend_check"]["sqnr_db"] < 23
    assert any("built again with quantize{headroom_db=" in w for w in report["warnings"])
    (quantize,) = [s for s in pipeline_text.parse(report["pipeline"]) if s.name == "quantize"]
    assert float(quantize.option_dict()["headroom_db"]) > 15
    assert (out / "model.onnx").exists()


def test_an_artifact_missing_the_budget_after_the_rebuild_fails_and_writes_nothing(
    tmp_path, fmnist_calib, monkeypatch
):
    _lossy_kernels(monkeypatch, 0.5)  # 6 dB from float: no float layer can fix the kernels
    out = tmp_path / "o"
    # The rebuild fails in its quantize pass (no set of float layers meets the raised budget) or at
    # the backend again; either way the message starts with what the backend lost.
    with pytest.raises(CheckFailed, match="output differs from the IR"):
        edgec.compile("zoo:lenet5", target="x86-64", backend="onnx", opt="int8", calib=fmnist_calib, output_dir=out)
    assert not (out / "model.onnx").exists()


def _failed_check(reference_db: float, got_db: float) -> Comparison:
    return Comparison(
        ok=False, max_abs_err=1.0, max_rel_err=1.0, cosine=0.9, sqnr_db=got_db, top1_agreement=None, against="IR",
        tolerance=Tolerance(), failures=["output 'y' sqnr vs float"],
        vs_float=[{"output": "y", "reference_sqnr_db": reference_db, "sqnr_db": got_db, "required_sqnr_db": reference_db - 1}],
    )


def test_headroom_pipeline_adds_what_the_kernels_lost_to_the_quantize_pass_only_once():
    text = "fold-constants,quantize{calib=mse,recover=true}"
    rebuilt, headroom = compiler.headroom_pipeline(text, _failed_check(13.8, 12.46))
    assert headroom == 1.4
    assert rebuilt == "fold-constants,quantize{calib=mse,recover=true,headroom_db=1.4}"
    assert compiler.headroom_pipeline(rebuilt, _failed_check(15.0, 12.0)) is None  # once
    assert compiler.headroom_pipeline("quantize{recover=false}", _failed_check(13.8, 12.4)) is None
    assert compiler.headroom_pipeline("fold-constants", _failed_check(13.8, 12.4)) is None
    passing = _failed_check(13.8, 13.5)
    assert compiler.headroom_pipeline(text, passing) is None  # nothing fell short against float


def test_headroom_tightens_both_sqnr_and_cosine_by_the_same_error_ratio():
    budget = QuantizePass(headroom_db=10.0).check_tolerance()
    assert budget.min_sqnr_db == pytest.approx(22.0)
    assert budget.min_cosine == pytest.approx(0.998)
    assert QuantizePass().check_tolerance() == QuantizePass.tolerance
