"""Shared test settings: hypothesis without per-example deadlines (CI machines have 2 slow cores)."""

import numpy as np
import pytest
from hypothesis import settings

from edgec.models import fashion_mnist

settings.register_profile("edgec", deadline=None, print_blob=True)
settings.load_profile("edgec")


@pytest.fixture(scope="session")
def fmnist_calib(tmp_path_factory):
    """512 training images as an .npz stack, normalized like the models' training data: the
    calibration set of every int8 test on the Fashion-MNIST models."""
    if not fashion_mnist.available():
        pytest.skip("apt-get install dataset-fashion-mnist")
    images, _ = fashion_mnist.load("train")
    path = tmp_path_factory.mktemp("calib") / "fmnist.npz"
    np.savez(path, input=fashion_mnist.normalize(images[:512])[:, None])
    return path
