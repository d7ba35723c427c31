import numpy as np
import pytest

import edgec
from edgec.errors import ModelLoadError
from tests.helpers import linf_rel, op_counts, run

torch = pytest.importorskip("torch", reason="the torch extra is not installed: pip install 'edgec[torch]'")

from edgec.frontends import torch as torch_frontend  # noqa: E402


class TwoInputs(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, image, scale):
        y = torch.nn.functional.relu6(self.bn(self.conv(image)))
        return self.fc(y.mean(dim=(2, 3))) * scale


def _module():
    torch.manual_seed(0)
    module = TwoInputs().eval()
    with torch.no_grad():  # non-trivial running statistics, so folding BN is visible
        module.bn.running_mean.uniform_(-1, 1)
        module.bn.running_var.uniform_(0.5, 2)
    return module


def test_module_with_example_inputs_matches_torch():
    module = _module()
    image, scale = torch.randn(2, 3, 16, 16), torch.tensor([2.0])
    model = torch_frontend.from_module(module, {"image": image, "scale": scale}, output_names=["logits"])
    assert [t.name for t in model.graph.inputs] == ["image", "scale"]
    with torch.no_grad():
        expected = module(image, scale).numpy()
    got = run(model, {"image": image.numpy(), "scale": scale.numpy()})[0]
    assert linf_rel(expected, got) <= 1e-5
    assert op_counts(model)["BatchNormalization"] == 1  # export keeps it; edgec's passes fold it


def test_compile_api_takes_a_module(tmp_path):
    module = _module()
    image, scale = torch.randn(1, 3, 16, 16), torch.tensor([1.0])
    result = edgec.compile(
        module,
        target="raspberry-pi-5",
        backend="onnx",
        opt="2",
        output_dir=tmp_path / "o",
        example_inputs={"image": image, "scale": scale},
    )
    assert result.ok and result.report["final_check"]["max_rel_err"] <= 1e-5
    assert "BatchNormalization" not in op_counts(result.model)
    with torch.no_grad():
        expected = module(image, scale).numpy()
    import onnx

    got = run(onnx.load(tmp_path / "o" / "model.onnx"), {"image": image.numpy(), "scale": scale.numpy()})[0]
    assert linf_rel(expected, got) <= 1e-5


def test_torchscript_file_needs_one_shape_per_argument(tmp_path):
    path = tmp_path / "m.pt"
    torch.jit.script(_module()).save(str(path))
    model = torch_frontend.load_torchscript(path, {"image": [1, 3, 8, 8], "scale": [1]})
    assert [t.shape for t in model.graph.inputs] == [[1, 3, 8, 8], [1]]
    with pytest.raises(Exception, match="give --input-shape for each forward"):
        torch_frontend.load_torchscript(path, {"image": [1, 3, 8, 8]})


def test_not_a_torchscript_archive(tmp_path):
    path = tmp_path / "weights.pt"
    path.write_bytes(b"PK\x03\x04 definitely not torchscript")
    with pytest.raises(ModelLoadError, match="not a TorchScript archive"):
        torch_frontend.load_torchscript(path, {"x": [1]})


def test_dynamo_exporter_gives_the_same_function():
    module = _module()
    image, scale = torch.randn(1, 3, 16, 16), torch.tensor([3.0])
    model = torch_frontend.from_module(module, {"image": image, "scale": scale}, exporter="dynamo")
    with torch.no_grad():
        expected = module(image, scale).numpy()
    feeds = {t.name: v for t, v in zip(model.graph.inputs, (image.numpy(), scale.numpy()))}
    assert linf_rel(expected, run(model, feeds)[0]) <= 1e-5
    assert np.isfinite(run(model, feeds)[0]).all()
