import numpy as np
import pytest

from edgec.models import fashion_mnist


def _labelled(split: str, count: int, path):
    if not fashion_mnist.available():
        pytest.skip("apt-get install dataset-fashion-mnist")
    images, labels = fashion_mnist.load(split)
    np.savez(path, input=fashion_mnist.normalize(images[:count])[:, None], labels=labels[:count])
    return path


@pytest.fixture(scope="session")
def fmnist_train(tmp_path_factory):
    """20,000 labelled training images (.npz with `input` and `labels`): enough to see recovery."""
    return _labelled("train", 20000, tmp_path_factory.mktemp("train") / "train.npz")


@pytest.fixture(scope="session")
def fmnist_eval(tmp_path_factory):
    return _labelled("test", 2000, tmp_path_factory.mktemp("eval") / "test.npz")
