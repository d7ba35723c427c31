"""The int8 latency search times the model on inputs of each input's own dtype (magika takes
int32 byte tokens; float32 feeds were an onnxruntime INVALID_ARGUMENT, exit 2 for edgec's bug)."""

import numpy as np
import onnx
from onnx import TensorProto

from edgec import ir
from edgec.quant import speed
from tests.helpers import GraphBuilder


def test_latency_of_a_token_model_with_a_table_lookup(tmp_path):
    b = GraphBuilder()
    tokens = b.input("tokens", [1, 64], TensorProto.INT32)
    table = b.const(np.random.default_rng(0).standard_normal((257, 8)).astype(np.float32))
    embedded = b.op("Gather", [table, tokens])
    b.output(b.op("MatMul", [embedded, b.weight(8, 4)]))
    onnx.save(b.proto(), tmp_path / "m.onnx")
    assert speed.latency_us(ir.load(tmp_path / "m.onnx"), runs=3) > 0
