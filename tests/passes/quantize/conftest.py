import pytest

from edgec.models import fashion_mnist


@pytest.fixture(scope="session")
def fmnist_test():
    if not fashion_mnist.available():
        pytest.skip("apt-get install dataset-fashion-mnist")
    images, labels = fashion_mnist.load("test")
    return fashion_mnist.normalize(images[:2000]), labels[:2000]
