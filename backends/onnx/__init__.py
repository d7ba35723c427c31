"""The ONNX backend: writes the optimized IR as model.onnx and validates it in onnxruntime."""

from __future__ import annotations

from pathlib import Path

from edgec import ir, runner
from edgec.backend import Artifact, Backend, Runner


class OnnxBackend(Backend):
    name = "onnx"
    summary = "ONNX model for onnxruntime (any device with an onnxruntime build)"
    requires = ("onnxruntime",)
    install_hint = "pip install onnxruntime"

    def lower(self, model: ir.Model, target, out_dir: Path) -> Artifact:
        files = ir.save(model, out_dir / "model.onnx")
        return Artifact(
            self.name, Path("model.onnx"), [f.relative_to(out_dir) for f in files], info={"opset": model.opset}
        )

    def runner(self, artifact: Artifact, out_dir: Path) -> Runner:
        # Full graph optimizations, as a deployed onnxruntime session would run the file.
        session = runner.make_session(out_dir / artifact.main, optimize=True)
        return lambda feeds: runner.run(session, [feeds])[0]
