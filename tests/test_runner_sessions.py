"""Build-time onnxruntime sessions do not spin idle threads (CPU seconds of the build); the
device runtime's sessions keep onnxruntime's default."""

import onnx

from edgec import runner, runtime
from tests.helpers import GraphBuilder


def _spinning(session) -> str | None:
    entries = session.get_session_options().get_session_config_entry
    try:
        return entries("session.intra_op.allow_spinning")
    except Exception:  # noqa: BLE001 - not set: onnxruntime's default (spinning)
        return None


def _model():
    b = GraphBuilder()
    b.output(b.op("Relu", [b.input("x", [1, 4])]))
    return b.model()


def test_build_sessions_do_not_spin():
    assert _spinning(runner.make_session(_model())) == "0"
    assert _spinning(runner.make_session(_model(), optimize=True)) == "0"


def test_device_runtime_sessions_keep_the_default():
    proto: onnx.ModelProto = _model().to_onnx()
    session, why = runtime.optimized_session(proto)
    assert why is None and _spinning(session) in (None, "1")
