"""A backend that cannot take a model refuses it before the lossy passes run, not after: SLANet's
Loop was refused by OpenVINO only after -O int8 had quantized for 5 minutes."""

import numpy as np
import onnx
import pytest

import edgec
from edgec.errors import EdgecError
from passes.quantize.quantize import QuantizePass
from tests.helpers import GraphBuilder


def _conv_then_cumsum(path):
    b = GraphBuilder(seed=0)
    h = b.op("Relu", [b.op("Conv", [b.input("x", [1, 3, 8, 8]), b.weight(4, 3, 3, 3)], pads=[1, 1, 1, 1])])
    b.output(b.op("CumSum", [h, b.const(np.array(1, np.int64))]))
    onnx.save(b.proto(), path)


def test_tflite_refuses_an_op_it_cannot_lower_before_quantizing(tmp_path, monkeypatch):
    _conv_then_cumsum(tmp_path / "m.onnx")

    def never(self, graph, ctx):
        raise AssertionError("quantize ran on a model the backend refuses")

    monkeypatch.setattr(QuantizePass, "run", never)
    with pytest.raises(EdgecError, match=r"tflite: no lowering for 1 nodes: .*\(CumSum\)"):
        edgec.compile(tmp_path / "m.onnx", target="raspberry-pi-4", opt="int8", calib="random:16", output_dir=tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_a_model_the_backend_takes_still_builds(tmp_path):
    _conv_then_cumsum(tmp_path / "m.onnx")
    result = edgec.compile(tmp_path / "m.onnx", target="x86-64", backend="openvino", opt="int8", calib="random:16",
                           output_dir=tmp_path / "o")
    assert result.ok and result.report["backend_check"]["ok"]


def test_tvm_refuses_an_op_relax_cannot_import_before_the_lossy_passes(tmp_path, monkeypatch):
    """SLANet's Loop reached TVM's importer only after 8 minutes of -O fp16."""
    pytest.importorskip("tvm", reason="pip install 'edgec[tvm]' (apache-tvm)")
    from passes.quantize.convert_fp16 import ConvertFp16Pass

    b = GraphBuilder(seed=0)
    h = b.op("Relu", [b.op("Conv", [b.input("x", [1, 3, 8, 8]), b.weight(4, 3, 3, 3)], pads=[1, 1, 1, 1])])
    b.output(b.op("ReverseSequence", [h, b.const(np.array([1, 1, 1, 1], np.int64))], batch_axis=1, time_axis=0))
    onnx.save(b.proto(), tmp_path / "m.onnx")

    def never(self, graph, ctx):
        raise AssertionError("convert-fp16 ran on a model the backend refuses")

    monkeypatch.setattr(ConvertFp16Pass, "run", never)
    with pytest.raises(EdgecError, match=r"TVM's ONNX importer \(Relax\) has no converter for: ReverseSequence"):
        edgec.compile(tmp_path / "m.onnx", target="x86-64", backend="tvm", opt="fp16", output_dir=tmp_path / "o")
    assert not (tmp_path / "o").exists()
