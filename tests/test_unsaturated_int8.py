"""edgec's sessions run int8 without saturation on x86 CPUs without VNNI (onnxruntime's u8 x u8
mode, session.x64quantprecision), and the graphs they load are made safe for that mode's
conversion (edgec.unsaturated_int8) without changing a value."""

import numpy as np
import onnx
import onnx_graphsurgeon
import onnxruntime as ort
import pytest

from edgec import ir as edgec_ir
from edgec import runner, unsaturated_int8
from edgec.targets import host_int8_pair_sums_saturate
from tests.helpers import GraphBuilder

X = {"x": np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)}


def _float_convs_on_int8_weights(channels: int = 4, shared_zero_point: bool = False) -> onnx.ModelProto:
    """Convs kept in float reading per-channel int8 weights through DequantizeLinear (how quantize
    writes layers recovery kept in float on int8-stored weights): without zero points, or with
    one zero-point initializer shared by both (as merge-duplicate-initializers leaves them)."""
    b = GraphBuilder(seed=3)
    scale = b.const(np.full(channels, 0.01, np.float32))
    zero_point = [b.const(np.zeros(channels, np.int8))] if shared_zero_point else []
    h = b.input("x", [1, 3, 8, 8])
    for inputs in (3, channels):
        weight = b.const(b.rng.integers(-127, 128, (channels, inputs, 3, 3)).astype(np.int8))
        h = b.op("Conv", [h, b.op("DequantizeLinear", [weight, scale, *zero_point], axis=0)], pads=[1, 1, 1, 1])
    b.output(h)
    return b.proto()


def _run(proto: onnx.ModelProto, options: ort.SessionOptions | None = None) -> np.ndarray:
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, X)[0]


def _u8_mode() -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.add_session_config_entry(unsaturated_int8.ENTRY, "1")
    return options


@pytest.mark.parametrize("shared_zero_point", [False, True])
def test_prepared_graphs_keep_their_values_and_load_in_the_u8_mode(shared_zero_point):
    proto = _float_convs_on_int8_weights(shared_zero_point=shared_zero_point)
    plain = _run(proto)
    prepared = runner.copy_of(proto)
    assert unsaturated_int8.prepare(prepared.graph, dry_run=True)
    copies = unsaturated_int8.prepare(prepared.graph)
    assert not unsaturated_int8.prepare(prepared.graph, dry_run=True)  # once is enough
    dqs = [n for n in prepared.graph.node if n.op_type == "DequantizeLinear"]
    assert all(len(n.input) == 3 for n in dqs) and len({n.input[2] for n in dqs}) == 2
    assert len(copies) == (1 if shared_zero_point else 0)
    np.testing.assert_allclose(_run(prepared, _u8_mode()), plain, rtol=1e-5, atol=1e-5)
    if host_int8_pair_sums_saturate():  # the conversion's faults, on a CPU where it runs
        with pytest.raises(Exception, match="per axis quantization|replace the existing tensor"):
            _run(proto, _u8_mode())


@pytest.mark.parametrize("saturates", [False, True])
@pytest.mark.parametrize("shared_zero_point", [False, True])
def test_edgec_sessions_run_them_on_any_host(monkeypatch, saturates, shared_zero_point):
    """Whatever this host is (onnxruntime raises when asked for an entry never set, as on VNNI
    hosts); 512 channels: scales large enough to reach onnxruntime as in-memory initializers."""
    monkeypatch.setattr(unsaturated_int8, "host_int8_pair_sums_saturate", lambda: saturates)
    proto = _float_convs_on_int8_weights(channels=512, shared_zero_point=shared_zero_point)
    plain = _run(proto)
    for model in (proto, edgec_ir.Model(onnx_graphsurgeon.import_onnx(proto))):
        for optimize in (False, True):
            session = runner.make_session(model, optimize=optimize)
            assert unsaturated_int8.enabled(session.get_session_options()) == saturates
            (got,) = runner.run(session, [X])[0].values()
            np.testing.assert_allclose(got, plain, rtol=1e-4, atol=1e-4)


def test_a_zero_point_two_integer_matmuls_share_is_copied_and_both_compute_exactly():
    """onnxruntime's dynamic quantizer shares int8 zero points between the nodes it writes (an
    LSTM's W and R; here two MatMulIntegers): the u8 mode converted the shared one twice and
    failed to load (ddddocr's recognizer, openvino -O int8 scoring on an AVX2 host: exit 3)."""
    b = GraphBuilder(seed=1)
    codes, _, zero_point = b.op("DynamicQuantizeLinear", [b.input("x", [4, 8])], n_out=3)
    weights = [b.rng.integers(-127, 128, (8, 6)).astype(np.int8) for _ in range(2)]
    shared = b.const(np.int8(0))
    products = [b.op("MatMulInteger", [codes, b.const(w), zero_point, shared]) for w in weights]
    b.output(b.op("Add", [b.op("Cast", [products[0]], to=1), b.op("Cast", [products[1]], to=1)]))
    proto = b.proto()
    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    prepared = runner.copy_of(proto)
    assert list(unsaturated_int8.prepare(prepared.graph).values()) == [shared]
    # DynamicQuantizeLinear's codes, then the exact integer products
    scale = (max(x.max(), 0) - min(x.min(), 0)) / 255
    offset = np.clip(np.round(-min(x.min(), 0) / scale), 0, 255)
    q = np.clip(np.round(x / scale) + offset, 0, 255).astype(np.int32)
    exact = sum((q - offset) @ w.astype(np.int32) for w in weights)
    session = ort.InferenceSession(prepared.SerializeToString(), _u8_mode(), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(session.run(None, {"x": x})[0], exact.astype(np.float32))
    if host_int8_pair_sums_saturate():
        with pytest.raises(Exception, match="replace the existing tensor"):
            ort.InferenceSession(proto.SerializeToString(), _u8_mode(), providers=["CPUExecutionProvider"])
