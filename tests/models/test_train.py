"""Training is deterministic: the same recipe gives the same weights (slow: trains twice)."""

import hashlib

import pytest

from edgec.models import fashion_mnist

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not fashion_mnist.available(), reason="apt-get install dataset-fashion-mnist"),
]


def test_lenet300_training_is_reproducible(tmp_path):
    pytest.importorskip("torch")
    from edgec.models import train

    digests = []
    for run in ("a", "b"):
        out = tmp_path / run
        assert train.main(["lenet300", "--epochs", "1", "--out", str(out)]) == 0
        digests.append(hashlib.sha256((out / "lenet300.onnx").read_bytes()).hexdigest())
        assert train.test_accuracy_onnx(out / "lenet300.onnx") > 0.8
    assert digests[0] == digests[1]
