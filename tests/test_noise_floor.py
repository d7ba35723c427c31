"""Exact passes are judged against the model's float32 noise floor where the relative rule misreads
tiny outputs (issue 12, class 5), and real numeric errors still fail."""

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest

import edgec
from edgec import noise_floor, runner
from edgec.compare import EXACT, compare
from tests.helpers import GraphBuilder


@pytest.fixture(scope="module")
def ppocr_det(tmp_path_factory):
    """PP-OCRv4's text detector after -O2: its saturated sigmoid scores (max ~2e-3) are where the
    relative rule failed fold-batchnorm at 1.07e-4 with 56 dB SQNR."""
    from bench.realmodels.corpus import BY_NAME

    path = BY_NAME["ppocrv4-det"].path
    if not path.exists():
        pytest.skip(f"{path} missing: run scripts/fetch-realmodels (make test-data)")
    out = tmp_path_factory.mktemp("det") / "o"
    return edgec.compile(
        path, target="x86-64", backend="onnx", opt="2", input_shapes={"x": [1, 3, 640, 640]}, output_dir=out
    )


def test_fold_batchnorm_on_a_real_detector_passes_on_its_noise_floor(ppocr_det):
    fold = next(p for p in ppocr_det.report["passes"] if p["name"] == "fold-batchnorm")["check"]
    assert ppocr_det.ok and fold["ok"] and fold["max_rel_err"] > 1e-5  # the relative rule alone fails it
    (floor,) = fold["noise_floor"].values()
    assert fold["max_abs_err"] <= 2 * floor and fold["noise_factor"] == noise_floor.NOISE_FACTOR  # measured 1.15x


# Every Conv weight scaled by (1 + e * random sign): 1 ulp is what an exact rewrite's rounding does
# (1x the floor); 80 and 800 ulps are errors (9-32x and 320x).
@pytest.mark.parametrize("relative, accepted", [(2**-23, True), (1e-5, False), (1e-4, False)])
def test_the_floor_accepts_roundings_and_rejects_errors(ppocr_det, relative, accepted):
    model = ppocr_det.model
    samples = [{"x": np.random.default_rng(i).standard_normal((1, 3, 640, 640)).astype(np.float32)} for i in range(2)]
    reference = runner.run_model(model, samples)
    changed = model.copy()
    rng = np.random.default_rng(0)
    for node in changed.graph.nodes:
        if node.op == "Conv" and isinstance(node.inputs[1], gs.Constant):
            w = node.inputs[1].values
            node.inputs[1].values = (w * (1 + relative * rng.choice([-1.0, 1.0], w.shape))).astype(np.float32)
    outputs = runner.run_model(changed, samples)
    plain = compare(reference, outputs, EXACT)
    judged = noise_floor.rejudge(plain, changed, samples, reference, outputs)
    assert not plain.ok and judged.ok is accepted
    if not accepted:
        assert judged.failures == plain.failures and "noise floor" in str(judged)


def test_integer_only_inputs_keep_the_relative_rule():
    b = GraphBuilder()
    b.output(b.op("Cast", [b.input("ids", [1, 4], onnx.TensorProto.INT64)], to=onnx.TensorProto.FLOAT))
    assert noise_floor.measure(b.model(), [{"ids": np.arange(4, dtype=np.int64)[None]}]) is None


def test_nudged_moves_every_float_element_by_exactly_one_ulp():
    x = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    moved = noise_floor.nudged({"x": x, "n": np.arange(3)}, seed=1)
    ups = np.nextafter(x, np.inf) == moved["x"]
    downs = np.nextafter(x, -np.inf) == moved["x"]
    assert np.all(ups ^ downs) and 400 < ups.sum() < 600 and np.array_equal(moved["n"], np.arange(3))


def test_a_float16_model_is_judged_on_its_float16_noise_floor(tmp_path):
    """The checks run a float16 graph rounding every op's output (edgec.fp16_emulation), so a
    float32 ulp at its inputs vanishes in their own rounding: MobileNetV2 in float16 had a floor of
    0 and fold-batchnorm's roundings (5e-4 relative) failed -O2. One float16 ulp is its floor."""
    half = edgec.compile("zoo:mobilenetv2-fmnist", target="x86-64", backend="onnx", passes="convert-fp16", output_dir=tmp_path / "h")
    result = edgec.compile(half.output_dir / "model.onnx", target="x86-64", backend="onnx", opt="2", output_dir=tmp_path / "o")
    fold = next(p for p in result.report["passes"] if p["name"] == "fold-batchnorm")["check"]
    assert result.ok and fold["ok"] and fold["max_rel_err"] > 1e-4 and fold["noise_precision"] == "float16"
    (floor,) = fold["noise_floor"].values()
    assert 0 < fold["max_abs_err"] <= noise_floor.NOISE_FACTOR * floor
    moved = noise_floor.nudged({"x": np.array([1.0], np.float32)}, seed=0, ulp_of=np.float16)["x"]
    assert abs(float(moved[0]) - 1.0) in (2.0**-10, 2.0**-11)  # one float16 step, as float32


def _qdq_matmuls() -> "ir.Model":
    """x -> int8 -> MatMul -> int8 -> MatMul with large weights: one flipped code in the middle moves
    the output by ~5 x 0.02, as an unrolled LSTM's reassociation did on ddddocr's CRNN."""
    b = GraphBuilder()
    zero = b.const(np.int8(0))
    h = b.input("x", [1, 256, 256])
    for scale, weight in ((0.03, b.weight(256, 256, scale=0.1)), (0.02, b.weight(256, 8, scale=5.0))):
        s = b.const(np.float32(scale))
        h = b.op("MatMul", [b.op("DequantizeLinear", [b.op("QuantizeLinear", [h, s, zero]), s, zero]), weight])
    b.output(h)
    return b.model()


# The first MatMul's weights moved by one float32 ulp (what a reassociation does) or by 1% (an error).
@pytest.mark.parametrize("relative, accepted", [(2**-23, True), (1e-2, False)])
def test_a_qdq_graph_is_judged_on_its_int8_roundings(relative, accepted):
    """An input ulp vanishes at the first QuantizeLinear (a floor of 0 failed unroll-recurrent on
    ddddocr's int8 CRNN for TVM); the floor of a Q/DQ graph is its near-ties rounding the other way."""
    model = _qdq_matmuls()
    samples = [{"x": np.random.default_rng(i).standard_normal((1, 256, 256)).astype(np.float32)} for i in range(4)]
    reference = runner.run_model(model, samples)
    changed = model.copy()
    first = next(n for n in changed.graph.nodes if n.op == "MatMul").inputs[1]
    signs = np.random.default_rng(0).choice([-1.0, 1.0], first.values.shape)
    first.values = (first.values * (1 + relative * signs)).astype(np.float32)
    outputs = runner.run_model(changed, samples)
    plain = compare(reference, outputs, EXACT)
    judged = noise_floor.rejudge(plain, changed, samples, reference, outputs)
    assert not plain.ok and plain.max_abs_err > 0.05  # flipped codes, amplified (measured 0.28 and 6.5)
    assert judged.ok is accepted and judged.precision == "float32 + int8 roundings"
    (floor,) = judged.noise_floor.values()
    assert floor > 0  # the input ulps alone measure 0 here
