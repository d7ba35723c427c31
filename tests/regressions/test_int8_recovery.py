"""-O int8 that misses its budget keeps the most sensitive layers in float instead of failing
(issue 12, class 10)."""

import numpy as np
import onnx
import pytest

import edgec
from edgec.errors import CheckFailed
from tests.helpers import GraphBuilder, last_pipeline_pass


def _outlier_channel_model(path, extra_layers=0):
    """conv1 writes one channel 400x larger than the seven others, and conv2 reads the small ones:
    one int8 scale for conv1's output rounds the small channels to a few levels. `extra_layers`
    ordinary 1x1 Conv+Relu layers follow."""
    b = GraphBuilder(seed=2)
    h = b.op("Relu", [b.op("Conv", [b.input("x", [1, 3, 16, 16]), b.weight(8, 3, 3, 3)], pads=[1, 1, 1, 1])])
    w1 = b.rng.standard_normal((8, 8, 1, 1)).astype(np.float32) * 0.3
    w1[0] *= 400.0
    h = b.op("Relu", [b.op("Conv", [h, b.const(w1)])])
    w2 = b.rng.standard_normal((8, 8, 1, 1)).astype(np.float32) * 0.3
    w2[:, 0] *= 1e-4
    h = b.op("Relu", [b.op("Conv", [h, b.const(w2)])])
    for _ in range(extra_layers):
        h = b.op("Relu", [b.op("Conv", [h, b.weight(8, 8, 1, 1, scale=0.4)])])
    b.output(b.op("Conv", [h, b.weight(4, 8, 1, 1)]))
    onnx.save(b.proto(), path)
    return path


def test_the_sensitive_pair_falls_back_and_the_rest_stays_int8(tmp_path):
    model = _outlier_channel_model(tmp_path / "m.onnx")
    result = edgec.compile(
        model,
        target="x86-64",
        backend="onnx",
        passes="quantize{calib=minmax}",
        calib="random:32",
        output_dir=tmp_path / "o",
    )
    quantize = last_pipeline_pass(result.report)
    recovery = quantize["stats"]["recovery"]
    convs = [n.name for n in result.model.graph.nodes if n.op == "Conv"]
    assert result.ok and recovery["ok"] and recovery["before"]["cosine"] < 0.98 <= recovery["after"]["cosine"]
    assert sorted(recovery["fallback"]) == sorted(convs[1:3])  # the writer and the reader of the outlier tensor
    assert quantize["stats"]["quantized_ops"]["Conv"] == 2 and quantize["check"]["ok"]
    assert any("kept 2 most sensitive layers in float" in w for w in result.report["warnings"])
    # The choice is in the pipeline text: replaying it quantizes the same way without a search.
    assert f"fallback=[{','.join(recovery['fallback'])}]" in result.report["pipeline"]


def test_recover_false_fails_with_the_next_step(tmp_path):
    model = _outlier_channel_model(tmp_path / "m.onnx")
    with pytest.raises(CheckFailed, match="failed its equivalence check.*next: --max-drop"):
        edgec.compile(
            model,
            target="x86-64",
            backend="onnx",
            passes="quantize{calib=minmax,recover=false}",
            calib="random:32",
            output_dir=tmp_path / "o",
        )


def test_layers_the_budget_does_not_need_go_back_to_int8(tmp_path, monkeypatch):
    """The ranking is by each layer's error on its own output, but the check can fail on one slice of
    one output that a low-ranked layer alone rounds away (MediaPipe's iris model on real crops: the
    last Conv, ranked 160th of 160, so every layer fell back and "-O int8" quantized nothing).
    With the culprits ranked last, the fallback still shrinks to them."""
    from edgec.quant import recovery

    ranked = recovery.ranked_layers
    monkeypatch.setattr(recovery, "ranked_layers", lambda *a: list(reversed(ranked(*a))))
    model = _outlier_channel_model(tmp_path / "m.onnx", extra_layers=8)
    result = edgec.compile(
        model, target="x86-64", backend="onnx", passes="quantize{calib=minmax}", calib="random:32",
        output_dir=tmp_path / "o",
    )
    recovery_stats = last_pipeline_pass(result.report)["stats"]["recovery"]
    convs = [n.name for n in result.model.graph.nodes if n.op == "Conv"]
    assert result.ok and recovery_stats["ok"]
    assert set(convs[1:3]) <= set(recovery_stats["fallback"]) and len(recovery_stats["fallback"]) <= 4
    assert last_pipeline_pass(result.report)["stats"]["quantized_ops"]["Conv"] >= len(convs) - 4


def test_a_budget_only_float_meets_fails_instead_of_an_int8_build_that_quantized_nothing(tmp_path):
    """The only layer writes one channel 1000x smaller than the others into a quantized model output
    (tflite): no int8 layout meets the budget, and recovery with every layer in float is no -O int8."""
    b = GraphBuilder(seed=3)
    w = b.rng.standard_normal((16, 3, 1, 1)).astype(np.float32)
    w[5] *= 1e-3
    b.output(b.op("Conv", [b.input("x", [1, 3, 8, 8]), b.const(w)]))
    onnx.save(b.proto(), tmp_path / "m.onnx")
    with pytest.raises(CheckFailed, match=r"slices 5:6 of axis 1 .* sqnr [-0-9.]+ dB < 12 dB"):
        edgec.compile(
            tmp_path / "m.onnx", target="raspberry-pi-4", backend="tflite", opt="int8", calib="random:32",
            output_dir=tmp_path / "o",
        )
    assert not (tmp_path / "o").exists()


def test_a_last_layer_whose_output_is_never_quantized_can_fall_back(tmp_path):
    """TensorRT's scheme rounds only the inputs of Conv/Gemm/MatMul/Add, so the model's last Conv
    writes no quantized tensor and had no row of its own in the ranking: with its outlier input it
    kept the budget missed with every ranked layer in float (PP-OCRv4's detector, cosine 0.17).
    It now falls back with the layer writing its input."""
    b = GraphBuilder(seed=2)
    w1 = b.rng.standard_normal((8, 3, 1, 1)).astype(np.float32) * 0.3
    w1[0] *= 400.0
    h = b.op("Relu", [b.op("Conv", [b.input("x", [1, 3, 16, 16]), b.const(w1)])])
    w2 = b.rng.standard_normal((4, 8, 1, 1)).astype(np.float32) * 0.3
    w2[:, 0] *= 1e-4
    b.output(b.op("Conv", [h, b.const(w2)]))
    onnx.save(b.proto(), tmp_path / "m.onnx")
    result = edgec.compile(
        tmp_path / "m.onnx", target="jetson-orin-nano", backend="tensorrt", passes="quantize{scheme=tensorrt,calib=minmax}",
        calib="random:32", output_dir=tmp_path / "o",
    )
    recovery = last_pipeline_pass(result.report)["stats"]["recovery"]
    convs = [n.name for n in result.model.graph.nodes if n.op == "Conv"]
    assert result.ok and recovery["before"]["cosine"] < 0.98 and recovery["ok"] and recovery["after"]["cosine"] >= 0.98
    assert convs[1] in recovery["fallback"]


def test_a_float_output_activation_reading_a_rounded_tensor_can_fall_back(tmp_path):
    """The model's last Sigmoid writes a float output, so it had no row in the ranking, and it is no
    Conv/Gemm/MatMul/Add/Mul for the readers rule: with every ranked layer in float its input was
    still rounded. Here one logit channel spans hundreds and the other sits near -12, where sigmoid
    is ~7e-6 and one uint8 step of the shared scale is several logits (PP-OCRv4's detector on OpenVINO
    from random inputs: cosine 0.97 with the whole ranking float, which validated before)."""
    b = GraphBuilder(seed=4)
    h = b.op("Relu", [b.op("Conv", [b.input("x", [1, 3, 16, 16]), b.weight(8, 3, 1, 1)])])
    h = b.op("Relu", [b.op("Conv", [h, b.weight(8, 8, 1, 1)])])
    w2 = b.rng.standard_normal((2, 8, 1, 1)).astype(np.float32)
    w2[0] *= 0.05
    w2[1] *= 400.0
    logits = b.op("Conv", [h, b.const(w2), b.const(np.array([-12.0, 0.0], np.float32))])
    b.output(b.op("Sigmoid", [logits]))
    onnx.save(b.proto(), tmp_path / "m.onnx")
    # The onnx scheme quantizes each layer's output (the openvino scheme, only layer inputs, now
    # leaves these logits unrounded).
    result = edgec.compile(
        tmp_path / "m.onnx", target="x86-64", backend="onnx", passes="quantize{scheme=onnx,calib=minmax}",
        calib="random:32", output_dir=tmp_path / "o",
    )
    recovery = last_pipeline_pass(result.report)["stats"]["recovery"]
    assert result.ok and recovery["ok"] and recovery["after"]["ok"]
    assert "slices 0:1 of axis 1" in recovery["before"]["failures"][0]  # the near-zero channel
    fallback_ops = sorted(n.op for n in result.model.graph.nodes if n.name in recovery["fallback"])
    # The Sigmoid and the last Conv (with ranges fitted on all 32 samples, the one before too);
    # the first stays int8.
    assert fallback_ops[-2:] == ["Conv", "Sigmoid"] and len(fallback_ops) <= 3
    assert last_pipeline_pass(result.report)["stats"]["quantized_ops"]["Conv"] == 3 - fallback_ops.count("Conv")


def test_full_range_weights_after_recovery_hold_in_the_backend_check_on_a_target_without_vnni(tmp_path, monkeypatch):
    """An x86 target without VNNI, one outlier channel: recovery keeps layers in float, and the
    full-range int8 weights of the rest ran in onnxruntime's default u8 x s8 kernels 9.4 dB below
    the IR on such a host (the backend check failed and the build ran again). edgec's sessions
    use the u8 x u8 kernels there; on a VNNI host this checks the same build."""
    from edgec import targets

    monkeypatch.setattr(targets.Target, "int8_pair_sums_saturate", property(lambda self: True))
    model = _outlier_channel_model(tmp_path / "m.onnx", extra_layers=8)
    result = edgec.compile(
        model, target="x86-64", backend="onnx", passes="quantize{calib=minmax}", calib="random:32",
        output_dir=tmp_path / "o",
    )
    stats = last_pipeline_pass(result.report)["stats"]
    assert stats["weight_range"] == "full"
    assert result.ok and stats["recovery"]["ok"] and not any("built again" in w for w in result.report["warnings"])
    check = result.report["backend_check"]
    assert check["ok"] and (check["sqnr_db"] is None or check["sqnr_db"] > 40)  # None: identical outputs
