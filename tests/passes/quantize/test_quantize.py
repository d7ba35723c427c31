import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import edgec
from edgec import calib, ir
from edgec.cli import main
from edgec.models import registry
from edgec.passes.quantize.quantize import QuantizePass
from edgec.pass_infra import PassContext, apply_pass
from tests.helpers import GraphBuilder, last_pipeline_pass, run


def _accuracy(model_path, images, labels):
    logits = run(onnx.load(model_path), {"input": images})[0]
    return float(np.mean(logits.argmax(1) == labels))


def _initializers(proto):
    return {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}


def test_int8_lenet5_is_a_quarter_the_size_and_keeps_its_accuracy(tmp_path, fmnist_calib, fmnist_test):
    result = edgec.compile(
        "zoo:lenet5", target="raspberry-pi-4", backend="onnx", opt="int8", calib=fmnist_calib, output_dir=tmp_path / "o"
    )
    assert result.ok
    step = last_pipeline_pass(result.report)
    assert step["name"] == "quantize" and step["check"]["against"] == "original" and step["check"]["ok"]
    assert step["stats"]["quantized_ops"]["Conv"] == 2 and step["stats"]["quantized_ops"]["Gemm"] == 2
    size = result.report["size_bytes"]
    assert size["after"] <= 0.27 * size["before"]
    images, labels = fmnist_test
    fp32 = _accuracy(registry.get("lenet5").path(), images, labels)
    int8 = _accuracy(tmp_path / "o" / "model.onnx", images, labels)
    assert int8 >= fp32 - 0.005
    (entry,) = result.manifest["quantization"]
    assert entry["scheme"] == "onnx" and entry["activations"] == "uint8"
    scores = step["stats"]["calib_scores_db"]  # calib=auto measured every method and kept the best
    assert entry["calib"] == max(scores, key=scores.get) and len(scores) == 4


def _qdq_structure(path):
    proto = onnx.load(path)
    inits = _initializers(proto)
    producers = {o: n for n in proto.graph.node for o in n.output}
    return proto, inits, producers


def test_onnx_scheme_layout_weights_bias_and_fusable_placement(tmp_path, fmnist_calib):
    # A remote target: on this host's x86-64 the latency search may keep a layer in float by timing.
    edgec.compile(
        "zoo:lenet5", target="raspberry-pi-4", backend="onnx", opt="int8", calib=fmnist_calib, output_dir=tmp_path / "o"
    )
    proto, inits, producers = _qdq_structure(tmp_path / "o" / "model.onnx")
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    for conv in convs:
        x_dq, w_dq, b_dq = (producers[name] for name in conv.input)
        assert {x_dq.op_type, w_dq.op_type, b_dq.op_type} == {"DequantizeLinear"}
        w, w_scale = inits[w_dq.input[0]], inits[w_dq.input[1]]
        assert w.dtype == np.int8 and w_scale.shape == (w.shape[0],)  # per output channel
        assert next(a.i for a in w_dq.attribute if a.name == "axis") == 0
        x_scale = inits[x_dq.input[1]]
        b, b_scale = inits[b_dq.input[0]], inits[b_dq.input[1]]
        assert b.dtype == np.int32
        np.testing.assert_array_equal(b_scale, (x_scale * w_scale).astype(np.float32))  # s_in * s_w
        assert inits[x_dq.input[2]].dtype == np.uint8  # onnx scheme: uint8 activations
    # The Relu after the first Gemm is absorbed: Gemm -> Relu -> Q, no Q between them.
    relu = next(n for n in proto.graph.node if n.op_type == "Relu")
    assert producers[relu.input[0]].op_type == "Gemm"
    # Outputs stay float.
    assert producers[proto.graph.output[0].name].op_type == "Gemm"


def test_onnxruntime_fuses_every_quantized_layer_into_an_int8_kernel(tmp_path):
    """The Q/DQ layout is only worth its size if onnxruntime runs it as int8: every Conv, residual Add,
    pooling and Gemm of the MobileNetV2-style CNN must become a QLinear*/QGemm kernel."""
    import onnxruntime as ort

    out = tmp_path / "o"
    edgec.compile(
        "zoo:mobilenetv2-fmnist", target="raspberry-pi-4", backend="onnx", opt="int8", calib="random:16", output_dir=out
    )
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "fused.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(str(out / "model.onnx"), options, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(tmp_path / "fused.onnx").graph.node]
    assert ops.count("QLinearConv") == 22 and ops.count("QLinearAdd") == 4 and ops.count("QGemm") == 1
    assert "QLinearGlobalAveragePool" in ops
    assert not {"Conv", "Gemm", "Add", "DequantizeLinear"} & set(ops), ops
    quantized = onnx.load(out / "model.onnx")
    initializers = {t.name: t for t in quantized.graph.initializer}
    dqs = [n for n in quantized.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in initializers]
    # Symmetric per-channel int8 weights carry an explicit zero point of zeros (onnxruntime's u8 x u8
    # mode on x86 without VNNI refuses them without: edgec.unsaturated_int8).
    int8 = [n for n in dqs if initializers[n.input[0]].data_type == onnx.TensorProto.INT8]
    int32 = [n for n in dqs if initializers[n.input[0]].data_type == onnx.TensorProto.INT32]
    assert len(int8) == len(int32) == 23 and all(len(n.input) == 3 for n in int8)
    assert not any(onnx.numpy_helper.to_array(initializers[n.input[2]]).any() for n in int8)


def _softmax_concat_model():
    b = GraphBuilder(seed=3)
    x = b.input("x", [1, 4, 6, 6])
    a = b.op("Relu", [b.op("Conv", [x, b.weight(4, 4, 3, 3), b.weight(4)], pads=[1, 1, 1, 1])])
    c = b.op("Conv", [x, b.weight(4, 4, 1, 1), b.weight(4)])
    cat = b.op("Concat", [a, c], axis=1)
    pooled = b.op("MaxPool", [cat], kernel_shape=[2, 2], strides=[2, 2])
    flat = b.op("Reshape", [pooled, b.const(np.array([1, -1], np.int64))])
    b.output(b.op("Softmax", [b.op("Gemm", [flat, b.weight(72, 5, scale=0.1)])]))
    return b.model()


def _quantize(model, scheme, tmp_path):
    np.save(tmp_path / "c.npy", np.random.default_rng(0).standard_normal((32, 1, 4, 6, 6)).astype(np.float32))
    data = calib.load(str(tmp_path / "c.npy"), model)
    result = apply_pass(QuantizePass(scheme=scheme), model.graph, PassContext(calibration=data))
    return result, model.to_onnx()


def test_tflite_scheme_shares_scales_and_fixes_softmax(tmp_path):
    model = _softmax_concat_model()
    original = model.copy()
    result, proto = _quantize(model, "tflite", tmp_path)
    inits = _initializers(proto)
    params = {}
    for node in proto.graph.node:
        if node.op_type == "QuantizeLinear":
            params[node.input[0]] = (float(inits[node.input[1]]), int(inits[node.input[2]]))
            assert inits[node.input[2]].dtype == np.int8  # tflite: int8 activations
    for node in proto.graph.node:
        if node.op_type in ("Concat", "MaxPool", "Reshape"):
            ins = [params[_source(proto, i)] for i in node.input if _source(proto, i) in params]
            assert all(p == params[node.output[0]] for p in ins), node.op_type
    weights = [
        inits[n.input[0]]
        for n in proto.graph.node
        if n.op_type == "DequantizeLinear" and inits.get(n.input[0], np.zeros(0)).dtype == np.int8
    ]
    assert weights and all(w.min() >= -127 and w.max() <= 127 for w in weights)
    feeds = {"x": np.random.default_rng(5).standard_normal((1, 4, 6, 6)).astype(np.float32)}
    np.testing.assert_allclose(run(model, feeds)[0], run(original, feeds)[0], atol=0.05)
    assert result.stats["scheme"] == "tflite"


def test_tflite_softmax_output_has_the_fixed_parameters(tmp_path):
    b = GraphBuilder(seed=4)
    x = b.input("x", [1, 4, 6, 6])
    sm = b.op("Softmax", [b.op("Conv", [x, b.weight(4, 4, 1, 1)])], axis=1)
    b.output(b.op("Conv", [sm, b.weight(2, 4, 1, 1)]))
    model = b.model()
    _, proto = _quantize(model, "tflite", tmp_path)
    inits = _initializers(proto)
    q = next(n for n in proto.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == sm)
    assert float(inits[q.input[1]]) == pytest.approx(1 / 256) and int(inits[q.input[2]]) == -128


def test_tensorrt_scheme_is_symmetric_with_qdq_only_on_compute_inputs(tmp_path):
    model = _softmax_concat_model()
    _, proto = _quantize(model, "tensorrt", tmp_path)
    inits = _initializers(proto)
    consumers = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for node in proto.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            # zero point 0, or left out (read as 0) on Conv weights and biases
            assert len(node.input) == 2 or int(np.max(np.abs(inits[node.input[2]]))) == 0
        if node.op_type == "QuantizeLinear":
            dq = consumers[node.output[0]]
            readers = {r.op_type for d in dq for r in consumers.get(d.output[0], [])}
            assert readers <= {"Conv", "Gemm", "MatMul", "ConvTranspose", "Add"}, readers


def _source(proto, name):
    """The tensor a DequantizeLinear output was quantized from."""
    producers = {o: n for n in proto.graph.node for o in n.output}
    node = producers.get(name)
    if node is not None and node.op_type == "DequantizeLinear":
        q = producers.get(node.input[0])
        if q is not None and q.op_type == "QuantizeLinear":
            return q.input[0]
    return name


def test_fallback_layers_stay_float(tmp_path, fmnist_calib):
    model = ir.load(registry.get("lenet5").path())
    first = next(n.name for n in model.graph.nodes if n.op == "Conv")
    data = calib.load(str(fmnist_calib), model)
    result = apply_pass(QuantizePass(fallback=(first,)), model.graph, PassContext(calibration=data))
    assert result.stats["quantized_ops"]["Conv"] == 1
    conv = next(n for n in model.graph.nodes if n.name == first)
    assert conv.inputs[0].inputs == [] or conv.inputs[0].inputs[0].op != "DequantizeLinear"


def test_int8_without_calibration_is_refused(tmp_path, capsys):
    assert main(["zoo:lenet5", "-t", "x86-64", "-O", "int8", "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "quantize needs calibration data: --calib DATA" in err and "random:N" in err
    assert not (tmp_path / "o").exists()


def test_random_calibration_warns(tmp_path, capsys):
    assert (
        main(["zoo:lenet5", "-t", "x86-64", "-O", "int8", "--calib", "random:16", "-o", str(tmp_path / "o"), "-q"]) == 0
    )
    assert "accuracy will not be representative" in capsys.readouterr().err
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert any("random" in w for w in report["warnings"])


def test_images_directory_calibrates_a_zoo_model_with_its_stored_preprocessing(tmp_path, capsys):
    from PIL import Image

    from edgec.models import fashion_mnist

    if not fashion_mnist.available():
        pytest.skip("apt-get install dataset-fashion-mnist")
    images, _ = fashion_mnist.load("train")
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(20):
        Image.fromarray(images[i]).save(folder / f"{i:03d}.png")
    assert (
        main(["zoo:lenet5", "-t", "x86-64", "-O", "int8", "--calib", str(folder), "-o", str(tmp_path / "o"), "-q"]) == 0
    )
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["inputs"][0]["preprocess"].startswith("color=gray,scale=0.003921568627")


def test_a_large_bias_widens_the_weight_scale_instead_of_saturating_int32(tmp_path):
    b = GraphBuilder(seed=9)
    x = b.input("x", [1, 2, 4, 4])
    weight = (b.rng.standard_normal((3, 2, 1, 1)) * 1e-4).astype(np.float32)  # tiny weights...
    bias = np.array([5000.0, -3000.0, 1.0], np.float32)  # ...and a huge bias
    b.output(b.op("Relu", [b.op("Conv", [x, b.const(weight), b.const(bias)])]))
    model = b.model()
    original = model.copy()
    np.save(tmp_path / "c.npy", np.random.default_rng(0).uniform(0, 1e-3, (32, 1, 2, 4, 4)).astype(np.float32))
    apply_pass(QuantizePass(), model.graph, PassContext(calibration=calib.load(str(tmp_path / "c.npy"), model)))
    inits = _initializers(model.to_onnx())
    int32 = [v for v in inits.values() if v.dtype == np.int32]
    assert int32 and np.all(np.abs(int32[0].astype(np.int64)) < 2**31 - 1)
    feeds = {"x": np.random.default_rng(1).uniform(0, 1e-3, (1, 2, 4, 4)).astype(np.float32)}
    np.testing.assert_allclose(run(model, feeds)[0], run(original, feeds)[0], rtol=1e-3, atol=30)


def replay(result, model: str, target: str, calib, out):
    """Build again from the printed pipeline; the model file must come out byte for byte the same."""
    pipeline, backend = result.report["pipeline"], result.report["backend"]
    again = edgec.compile(model, target=target, passes=pipeline, backend=backend, calib=calib, output_dir=out)
    main = result.artifact.main
    assert (result.output_dir / main).read_bytes() == (out / main).read_bytes()
    return again


def test_latency_search_settles_into_a_replayable_pipeline(tmp_path, fmnist_calib):
    result = edgec.compile(
        "zoo:mobilenetv2-fmnist",
        target="x86-64",
        backend="onnx",
        opt="int8",
        calib=fmnist_calib,
        output_dir=tmp_path / "o",
        measure_latency=True,
    )
    step = last_pipeline_pass(result.report)
    search = step["stats"]["latency_search"]
    assert search["method"] == "timed on this machine"
    assert search["trials"] >= 2 and search["chosen_us"] <= search["all_int8_us"]
    # The decision is in the options, so the printed pipeline rebuilds the same model without timing.
    assert "select=all" in step["text"] and "select=latency" not in result.report["pipeline"]
    for layer in step["stats"]["fallback"]:
        assert layer in step["text"]
    again = replay(result, "zoo:mobilenetv2-fmnist", "x86-64", fmnist_calib, tmp_path / "again")
    assert "latency_search" not in last_pipeline_pass(again.report)["stats"]


def test_calib_auto_settles_into_a_replayable_pipeline(tmp_path, fmnist_calib):
    """calib=auto keeps the model it scored best; replaying the printed choice must rebuild it byte for byte."""
    result = edgec.compile(
        "zoo:lenet5", target="raspberry-pi-4", backend="onnx", opt="int8", calib=fmnist_calib, output_dir=tmp_path / "o"
    )
    step = last_pipeline_pass(result.report)
    assert "calib=auto" not in result.report["pipeline"] and f"calib={step['stats']['calib']}" in step["text"]
    # The runner-up method (within JOINT_MARGIN_DB) was bias-corrected too; the text names the
    # method whose corrected graph won, so the replay needs neither choice.
    runner_up = step["stats"]["bias_correction"]["runner_up"]
    assert runner_up["calib"] != step["stats"]["calib"] and runner_up["calib"] in step["stats"]["calib_scores_db"]
    again = replay(result, "zoo:lenet5", "raspberry-pi-4", fmnist_calib, tmp_path / "a")
    assert "calib_scores_db" not in last_pipeline_pass(again.report)["stats"]


def test_calib_auto_reads_minmax_off_exact_extremes():
    """A strided sample of a large activation misses its rare peaks. calib=auto used to score minmax
    on the sampled extremes, which clip them: on MediaPipe's palm detector that candidate lost
    (14.2 dB held-out vs 15.0 from exact extremes) and entropy won, below onnxruntime's MinMax.
    The observers calib=auto scores on hold the exact extremes, and the printed pipeline keeps them."""
    from edgec.quant import scheme as schemes

    b = GraphBuilder()
    x = b.input("x", [1, 1, 256, 256])  # 65536 values: sampled every 2nd, starting at index 1
    b.output(b.op("Conv", [x, b.weight(4, 1, 1, 1)]))
    model = b.model()
    stack = np.random.default_rng(0).uniform(0, 1, (32, 1, 1, 256, 256)).astype(np.float32)
    stack[5, 0, 0, 0, 0] = 40.0  # flat index 0: outside every strided sample
    data = calib.load(stack, model)
    quantize = QuantizePass(calib="auto")
    ctx = PassContext(calibration=data)
    observer = quantize.observers(model.graph, schemes.get("onnx"), ctx)["x"]
    assert observer.max == 40.0 and observer.range("minmax")[1] == 40.0
    apply_pass(quantize, model.graph, ctx)
    assert quantize.calib in ("percentile", "entropy", "mse", "minmax") and quantize.extremes == "exact"
    assert "extremes=exact" in str(quantize.spec())


def test_remote_targets_quantize_every_layer(tmp_path, fmnist_calib):
    result = edgec.compile(
        "zoo:mobilenetv2-fmnist",
        target="raspberry-pi-4",
        backend="onnx",
        opt="int8",
        calib=fmnist_calib,
        output_dir=tmp_path / "o",
    )
    assert "select=latency" not in result.report["pipeline"]  # this machine cannot time a Pi
    assert last_pipeline_pass(result.report)["stats"]["fallback"] == []


def test_calib_auto_scores_methods_on_samples_it_did_not_calibrate_on():
    """In-sample, percentile fitted oww-hey-jarvis's calibration outliers (61 dB) and clipped on
    new inputs; with 16 or more samples AUTO_SAMPLES are held out of the fitting. They are spread
    over the set: a set ordered by source (crops of one photo after another) scored on its first
    or last 8 is scored on one or two photos (PP-LCNet: minmax won there, worst everywhere else)."""
    from edgec.calib import CalibrationSet
    from edgec.passes.quantize.quantize import AUTO_SAMPLES, _fit_and_score_split

    def calibration(count):
        items = [{"x": np.full((1,), i, np.float32)} for i in range(count)]
        return CalibrationSet("test", count, lambda: ((f"s{i}", s) for i, s in enumerate(items)))

    fitting, scoring = _fit_and_score_split(calibration(32))
    fitted = [float(s["x"][0]) for s in fitting]
    scored = [float(s["x"][0]) for s in scoring]
    assert AUTO_SAMPLES == 8 and scored == [2, 6, 10, 14, 18, 22, 26, 30]  # one in every 4
    assert len(fitted) == 32 - AUTO_SAMPLES and not set(fitted) & set(scored)
    # 100 samples of 10 sources, 10 crops each in source order: from 64 samples up 16 are held
    # out (8 made a method's score swing from best to worst), every source scored.
    fitting, scoring = _fit_and_score_split(calibration(100))
    sources = [int(s["x"][0]) // 10 for s in scoring]
    assert len(fitting) == 84 and sources == [0, 0, 1, 2, 2, 3, 4, 4, 5, 5, 6, 7, 7, 8, 9, 9]
    assert len(_fit_and_score_split(calibration(63))[1]) == 8 and len(_fit_and_score_split(calibration(64))[1]) == 16
    small = calibration(2 * AUTO_SAMPLES - 1)
    fitting, scoring = _fit_and_score_split(small)
    assert fitting is small and [float(s["x"][0]) for s in scoring] == [0, 2, 4, 6, 8, 10, 12, 14]


def test_calib_auto_scores_on_the_check_samples_when_they_are_the_same(tmp_path):
    """The checks take 16 samples spread over the calibration set, the very samples calib=auto
    holds out from 64 up: it scores on the check's sample objects, so the float outputs are
    computed once for the scoring, the bias correction's choice and the budget check."""
    from edgec import runner
    from edgec.passes.quantize.quantize import _fit_and_score_split, _scoring_samples

    stack = np.random.default_rng(0).standard_normal((80, 1, 1, 28, 28)).astype(np.float32)
    model = ir.load(registry.get("lenet5").path())
    data = calib.load(stack, model)
    checks = data.take_spread(16)
    samples, shared = _scoring_samples(_fit_and_score_split(data)[1], PassContext(samples=checks, calibration=data))
    assert shared and all(a is b for a, b in zip(samples, checks))
    samples, shared = _scoring_samples(_fit_and_score_split(data)[1], PassContext(samples=checks[:8], calibration=data))
    assert not shared and len(samples) == 16

    runs = []
    original = runner.run_model

    def counted(model, samples, optimize=False):
        runs.append(len(samples))
        return original(model, samples, optimize)

    runner.run_model = counted
    try:
        result = edgec.compile(
            "zoo:lenet5", target="raspberry-pi-4", backend="onnx", opt="int8", calib=stack, output_dir=tmp_path / "o"
        )
    finally:
        runner.run_model = original
    step = last_pipeline_pass(result.report)
    assert result.ok and step["stats"]["calib_scored_on"] == 16
    # The float reference once (the check's), 4 methods and 3 bias-correction candidates at most
    # (in fused kernels), 3 more for calib=auto's runner-up when it is close; per corrected graph
    # one exact budget check (the adopted one's is reused by the check after the pass); each
    # bias probe runs 32 fitting samples. Measured: 13 runs on 16, two on 32.
    assert runs.count(16) <= 1 + 4 + 3 + 3 + 2 and runs.count(32) <= 2 and set(runs) <= {16, 32}, runs


def test_calib_auto_breaks_a_tie_by_clipping_least():
    """oww-hey-jarvis's wake-word score is a saturated sigmoid on most inputs: three methods scored
    51.7 dB on the 8 held-out scoring samples and the first in the loop (percentile) won, which
    clips; on 1024 new inputs minmax held 26.0 dB, percentile 24.9. Scores the samples cannot tell
    apart go to the method that keeps most of each tensor's observed span."""
    b = GraphBuilder(seed=2)
    x = b.input("x", [1, 1024])
    hidden = b.op("Gemm", [x, b.weight(64, 1024), b.weight(64)], transB=1)
    # Every score lands far from 0.5, so int8 rounding of any range leaves it where float has it.
    b.output(b.op("Sigmoid", [b.op("Mul", [b.op("Sign", [b.op("ReduceSum", [hidden], keepdims=1)]),
                                            b.const(np.float32(60.0))])]))
    model = b.model()
    stack = np.random.default_rng(3).standard_normal((32, 1, 1024)).astype(np.float32)
    stack[7, 0, :3] = 25.0  # rare peaks: percentile and entropy clip them, minmax keeps them
    quantize = QuantizePass(calib="auto")
    apply_pass(quantize, model.graph, PassContext(calibration=calib.load(stack, model)))
    scores = quantize._calib_scores
    assert len(set(scores.values())) == 1, scores  # the samples cannot tell the methods apart
    assert quantize.calib == "minmax"
