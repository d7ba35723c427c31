import numpy as np
import onnx
import pytest

from edgec.passes.quantize.convert_fp16 import ConvertFp16Pass
from tests.helpers import GraphBuilder, apply, feeds_for, linf_rel, run


def _model(big=1.0):
    b = GraphBuilder(seed=2)
    x = b.input("x", [1, 3, 8, 8])
    y = b.op("Relu", [b.op("Conv", [x, b.weight(4, 3, 3, 3), b.const(np.full(4, big, np.float32))])])
    y = b.op("Einsum", [y], equation="nchw->nhwc")  # no fp16 kernel listed: stays float32
    b.output(b.op("Sigmoid", [y]))
    return b.model()


def test_converts_what_has_fp16_kernels_and_keeps_io_float32():
    model = _model()
    before = model.copy()
    result = apply(model, ConvertFp16Pass())
    assert result.stats["fp16_nodes"] == 3 and result.stats["fp32_nodes"] == 1
    proto = model.to_onnx()
    types = {i.name: i.type.tensor_type.elem_type for i in list(proto.graph.input) + list(proto.graph.output)}
    assert set(types.values()) == {onnx.TensorProto.FLOAT}
    einsum = next(n for n in proto.graph.node if n.op_type == "Einsum")
    producers = {o: n for n in proto.graph.node for o in n.output}
    assert producers[einsum.input[0]].op_type == "Cast"  # fp16 -> fp32 before the fp32-only op
    weights = [t for t in proto.graph.initializer if t.dims == [4, 3, 3, 3]]
    assert weights and weights[0].data_type == onnx.TensorProto.FLOAT16
    feeds = feeds_for(before)
    assert linf_rel(run(before, feeds)[0], run(model, feeds)[0]) < 1e-3


def test_io_can_become_fp16():
    model = _model()
    apply(model, ConvertFp16Pass(io="fp16"))
    proto = model.to_onnx()
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16


def test_out_of_range_constants_are_clamped_not_inf():
    model = _model(big=1e6)
    result = apply(model, ConvertFp16Pass())
    assert result.stats["constants_clamped"] == 4
    bias = next(t for t in model.to_onnx().graph.initializer if t.dims == [4])
    values = onnx.numpy_helper.to_array(bias)
    assert values.dtype == np.float16 and np.all(np.isfinite(values)) and values.max() == np.finfo(np.float16).max


@pytest.mark.parametrize("keep", [("Conv",), ()])
def test_keep_ops_option(keep):
    model = _model()
    result = apply(model, ConvertFp16Pass(keep_ops=keep))
    assert result.stats["fp16_nodes"] == (2 if keep else 3)


def _cancelling_model(path):
    """conv2's bias is 2000.3 and an Add takes 2000 back (a Relu between keeps fuse-bias-add from
    folding the two): float16 stores the bias, and rounds conv2's, the Relu's and the Add's
    outputs, near 2000 (its spacing there is 1), an error as large as the signal. conv1 and conv3
    are ordinary."""
    b = GraphBuilder(seed=4)
    h = b.op("Relu", [b.op("Conv", [b.input("x", [1, 3, 8, 8]), b.weight(4, 3, 1, 1)])])
    bias = np.full(4, 2000.3, np.float32)
    h = b.op("Relu", [b.op("Conv", [h, b.weight(4, 4, 1, 1, scale=0.2), b.const(bias)])])
    h = b.op("Add", [h, b.const(np.full((1, 4, 1, 1), -2000.0, np.float32))])
    b.output(b.op("Conv", [h, b.weight(4, 4, 1, 1)]))
    onnx.save(b.proto(), path)
    return path


def test_layers_that_float16_ruins_stay_float32_and_the_rest_converts(tmp_path):
    import edgec

    result = edgec.compile(
        _cancelling_model(tmp_path / "m.onnx"), target="x86-64", backend="onnx", opt="fp16", output_dir=tmp_path / "o"
    )
    step = next(p for p in result.report["passes"] if p["name"] == "convert-fp16")
    recovery = step["stats"]["recovery"]
    nodes = {n.name: n.op for n in result.model.graph.nodes}
    assert result.ok and step["check"]["ok"] and recovery["before"]["sqnr_db"] < 30 <= recovery["after"]["sqnr_db"]
    # conv2 with its float32 bias, and the Relu and Add that carry 2000.3 until it cancels: the
    # checks round every float16 op's output as float16 hardware does (edgec.fp16_emulation).
    conv1, conv2 = [n.name for n in result.model.graph.nodes if n.op == "Conv"][:2]
    kept = {nodes[name] for name in recovery["fallback"]}
    assert conv2 in recovery["fallback"] and {"Relu", "Add"} <= kept and conv1 not in recovery["fallback"]
    assert step["stats"]["fp16_nodes"] >= 2  # conv1 and its Relu at least
    assert any("nearest the outputs in float32" in w for w in result.report["warnings"])
    assert f"keep_nodes=[{','.join(recovery['fallback'])}]" in result.report["pipeline"]


def test_fp16_recover_false_fails_and_an_all_float32_result_is_no_fp16_build(tmp_path):
    import edgec
    from edgec.errors import CheckFailed

    model = _cancelling_model(tmp_path / "m.onnx")
    with pytest.raises(CheckFailed, match="convert-fp16.*sqnr"):
        edgec.compile(model, target="x86-64", backend="onnx", passes="convert-fp16{recover=false}", output_dir=tmp_path / "a")
    b = GraphBuilder(seed=4)  # conv2 alone among the layers float16 runs: float32 everywhere is the only fix
    h = b.op("Conv", [b.input("x", [1, 3, 8, 8]), b.weight(4, 3, 1, 1, scale=0.2), b.const(np.full(4, 2000.3, np.float32))])
    b.output(b.op("Sum", [h, b.const(np.full((1, 4, 1, 1), -2000.0, np.float32))]))  # Sum: no float16 kernel
    onnx.save(b.proto(), tmp_path / "alone.onnx")
    with pytest.raises(CheckFailed, match="convert-fp16.*sqnr"):
        edgec.compile(tmp_path / "alone.onnx", target="x86-64", backend="onnx", opt="fp16", output_dir=tmp_path / "b")
    assert not (tmp_path / "b").exists()
