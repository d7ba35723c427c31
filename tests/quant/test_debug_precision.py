"""The per-layer precision table: tflite-scheme outputs (renamed by their Q/DQ) and bounded memory
(issue 12, classes 6 and 16)."""

import resource


from edgec import calib
from edgec.cli import main
from edgec.pass_infra import PassContext, apply_pass
from edgec.passes.quantize.quantize import QuantizePass
from edgec.quant import debug
from tests.helpers import GraphBuilder


def test_tflite_scheme_tables_include_the_quantized_graph_outputs(tmp_path, fmnist_calib, capsys):
    for target in ("raspberry-pi-4", "esp32-s3"):  # KeyError 'logits_f__float32' before
        assert (
            main(
                [
                    "debug-precision",
                    "zoo:lenet5",
                    "-t",
                    target,
                    "--calib",
                    str(fmnist_calib),
                    "-o",
                    str(tmp_path / target),
                    "-q",
                ]
            )
            == 0
        )
        assert "| `logits_f` |" in capsys.readouterr().out


def test_the_table_streams_samples_in_bounded_memory():
    """Three 8 MB activations x 16 samples x 3 runs is 1.2 GB when kept; one sample at a time is ~75 MB."""
    b = GraphBuilder()
    h = b.input("x", [1, 32, 256, 256])
    for _ in range(3):
        h = b.op("Relu", [b.op("Conv", [h, b.weight(32, 32, 1, 1, scale=0.18)])])
    b.output(h)
    float_model = b.model()
    quantized = float_model.copy()
    data = calib.load("random:16", float_model)
    apply_pass(QuantizePass(calib="minmax", extremes="sampled"), quantized.graph, PassContext(calibration=data))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rows = debug.analyze(float_model, quantized, data.take(16))
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert len(rows) == 3 and all(r["accumulated_sqnr_db"] > 10 for r in rows)
    assert grown_mb < 500, f"analyze grew the process by {grown_mb:.0f} MB"


def test_chunked_exposure_measures_the_same_as_one_session(fmnist_calib, monkeypatch):
    """A model too large to expose at once is measured a few tensors at a time: same numbers."""
    from edgec import ir
    from edgec.models import registry

    float_model = ir.load(registry.get("mobilenetv2-fmnist").path())
    quantized = float_model.copy()
    data = calib.load(str(fmnist_calib), float_model)
    apply_pass(QuantizePass(calib="minmax"), quantized.graph, PassContext(calibration=data))
    samples = data.take(4)
    whole = debug.analyze(float_model, quantized, samples)
    monkeypatch.setattr(debug, "EXPOSED_BYTES", 1)  # one tensor per chunk
    assert len(debug._chunks(debug._quantizers(quantized.graph), debug.EXPOSED_BYTES)) == len(whole) > 10
    chunked = debug.analyze(float_model, quantized, samples)
    key = lambda r: (r["tensor"], round(r["introduced_sqnr_db"], 6), round(r["accumulated_sqnr_db"], 6))  # noqa: E731
    assert sorted(map(key, chunked)) == sorted(map(key, whole))
