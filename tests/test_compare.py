import math

import numpy as np
import pytest

from edgec.compare import EXACT, LOSSLESS, Tolerance, compare


def _runs(*arrays):
    return [{"y": a} for a in arrays]


def test_metrics_have_their_textbook_values():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(10_000).astype(np.float32)
    noise = rng.standard_normal(10_000).astype(np.float32) * 0.01
    result = compare(_runs(ref), _runs(ref + noise), Tolerance())
    expected_sqnr = 10 * math.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum(noise.astype(np.float64) ** 2))
    assert result.sqnr_db == pytest.approx(expected_sqnr, abs=1e-6)
    assert result.sqnr_db == pytest.approx(40.0, abs=0.3)  # 1% noise on unit variance
    assert result.max_abs_err == pytest.approx(float(np.abs(noise).max()), rel=1e-6)
    assert result.max_rel_err == pytest.approx(float(np.abs(noise).max() / np.abs(ref).max()), rel=1e-6)
    assert result.cosine == pytest.approx(1 - 0.5 * 1e-4, abs=2e-5)


def test_identical_outputs_are_exact_and_truthy():
    y = np.arange(6, dtype=np.float32).reshape(2, 3)
    result = compare(_runs(y), _runs(y.copy()), LOSSLESS)
    assert result and result.max_abs_err == 0 and math.isinf(result.sqnr_db)
    assert result.to_json()["sqnr_db"] is None
    assert "ok vs previous" in str(result)


def test_failures_name_the_output_and_the_budget():
    result = compare(_runs(np.ones(4, np.float32)), _runs(np.array([1, 1, 1, 1.001], np.float32)), EXACT)
    assert not result
    assert result.failures == ["output 'y' max_rel_err 0.001 > 1e-05"]
    assert str(result).startswith("FAILED vs previous")


def test_nan_in_both_runs_agrees_but_nan_on_one_side_fails():
    ref = np.array([1.0, np.nan], np.float32)
    assert compare(_runs(ref), _runs(ref.copy()), EXACT)
    assert not compare(_runs(ref), _runs(np.array([1.0, 2.0], np.float32)), EXACT)


def test_top1_agreement_for_class_scores():
    ref = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]], np.float32)
    got = ref.copy()
    got[0] = [0.9, 0.1]
    result = compare(_runs(ref), _runs(got), Tolerance(min_top1_agreement=0.9))
    assert result.top1_agreement == 0.75 and not result


def test_tolerances_combine_to_the_loosest():
    a = Tolerance(min_cosine=0.99, min_sqnr_db=30)
    b = Tolerance(min_cosine=0.95, max_rel_err=0.1)
    assert a.loosest(b) == Tolerance(min_cosine=0.95, min_sqnr_db=30, max_rel_err=0.1)


def test_an_infinite_output_is_reported_as_minus_inf_db_against_float():
    """TVM's float16 pooling overflowed to inf; the failure read 'sqnr vs float inf dB'."""
    floating = [{"y": np.array([1.0, 2.0, 3.0])}]
    ir_run = [{"y": np.array([1.0, 2.0, 3.01])}]
    overflowed = [{"y": np.array([1.0, np.inf, 3.0])}]
    budget = Tolerance(min_sqnr_db=40.0, max_sqnr_loss_vs_float_db=1.0, sqnr_vs_float_enough_db=30.0)
    result = compare(ir_run, overflowed, budget, against="IR", float_reference=floating)
    assert not result.ok
    assert "sqnr vs float -inf dB < 30.0 dB" in result.failures[0]


def test_metrics_in_blocks_equal_the_whole_output(monkeypatch):
    """_metrics works in blocks (bounded memory on a 640x640 detector's outputs): NaNs on both
    sides, on one side and infinities in different blocks give what one block gives."""
    import math

    import numpy as np

    from edgec import compare as compare_module

    rng = np.random.default_rng(3)
    ref = rng.standard_normal(10_000)
    got = ref + rng.standard_normal(10_000) * 1e-3
    results = []
    for nan_case in ("none", "both", "one", "inf"):
        r, g = ref.copy(), got.copy()
        if nan_case == "both":
            r[[5, 7_777]] = g[[5, 7_777]] = np.nan
        elif nan_case == "one":
            g[8_000] = np.nan
        elif nan_case == "inf":
            r[9_999] = np.inf
        whole = compare_module._metrics(r, g)
        monkeypatch.setattr(compare_module, "METRIC_BLOCK", 1_000)
        blocked = compare_module._metrics(r, g)
        monkeypatch.setattr(compare_module, "METRIC_BLOCK", 1 << 20)
        for key in whole:
            if math.isfinite(whole[key]):
                assert math.isclose(blocked[key], whole[key], rel_tol=1e-12), (nan_case, key)
            else:
                assert blocked[key] == whole[key], (nan_case, key)
        results.append(whole)
    assert math.isclose(results[0]["sqnr_db"], 60.0, abs_tol=0.2)  # noise 1e-3 of a unit signal
    assert results[1]["sqnr_db"] == results[0]["sqnr_db"] or abs(results[1]["sqnr_db"] - 60.0) < 0.2
    assert results[2]["max_abs_err"] == math.inf and results[2]["sqnr_db"] == -math.inf
