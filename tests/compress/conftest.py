import pytest

from edgec.models import fashion_mnist


def _labelled(split: str, count: int, path):
    if not fashion_mnist.available():
        pytest.skip("apt-get install dataset-fashion-mnist")
    return fashion_mnist.export_npz(split, path, count)


@pytest.fixture(scope="session")
def fmnist_train(tmp_path_factory):
    """20,000 labelled training images (.npz with `input` and `labels`): enough to see recovery."""
    return _labelled("train", 20000, tmp_path_factory.mktemp("train") / "train.npz")


@pytest.fixture(scope="session")
def fmnist_eval(tmp_path_factory):
    return _labelled("test", 2000, tmp_path_factory.mktemp("eval") / "test.npz")
