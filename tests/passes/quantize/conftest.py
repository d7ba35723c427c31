import numpy as np
import pytest

from edgec.models import fashion_mnist


@pytest.fixture(scope="session")
def fmnist_calib(tmp_path_factory):
    """512 training images as an .npz stack, normalized like the models' training data."""
    if not fashion_mnist.available():
        pytest.skip("apt-get install dataset-fashion-mnist")
    images, _ = fashion_mnist.load("train")
    path = tmp_path_factory.mktemp("calib") / "fmnist.npz"
    np.savez(path, input=fashion_mnist.normalize(images[:512])[:, None])
    return path


@pytest.fixture(scope="session")
def fmnist_test():
    if not fashion_mnist.available():
        pytest.skip("apt-get install dataset-fashion-mnist")
    images, labels = fashion_mnist.load("test")
    return fashion_mnist.normalize(images[:2000]), labels[:2000]
