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
