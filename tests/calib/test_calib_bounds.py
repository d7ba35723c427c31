"""Calibration data as users have it (dynamic batch, arrays from Python) and bounded memory on
whatever a file declares (issue 12, classes 6 and 12)."""

import resource
import zipfile

import numpy as np
import pytest
from PIL import Image

from edgec import calib
from edgec.calib import preprocess
from edgec.errors import EdgecError
from tests.helpers import GraphBuilder


def _model(batch):
    g = GraphBuilder()
    g.output(g.op("Relu", [g.input("x", [batch, 1, 4, 4])]))
    return g.model()


@pytest.mark.parametrize("batch", ["N", 1])
def test_a_batch_array_for_a_dynamic_or_batch_1_model_is_that_many_samples(tmp_path, batch):
    np.savez(tmp_path / "d.npz", x=np.ones((40, 1, 4, 4), np.float32))
    loaded = calib.load(str(tmp_path / "d.npz"), _model(batch))
    assert len(loaded) == 40 and all(s["x"].shape == (1, 1, 4, 4) for s in loaded)


def test_the_api_takes_arrays_dicts_and_iterables_of_feeds():
    model = _model("N")
    stack = np.arange(40 * 16, dtype=np.float32).reshape(40, 1, 4, 4)
    for given in (stack, {"x": stack}, [{"x": row[None]} for row in stack], (row[None] for row in stack)):
        loaded = calib.load(given, model)
        assert len(loaded) == 40
        np.testing.assert_array_equal(loaded.take(2)[1]["x"], stack[1:2])
    with pytest.raises(EdgecError, match="not calibration data"):
        calib.load(3.5, model)


def test_random_n_is_bounded_and_made_one_sample_at_a_time():
    model = _model(1)
    with pytest.raises(EdgecError, match="between 1 and 100,000"):
        calib.load("random:100000000", model)
    loaded = calib.load("random:50000", model)  # instant: nothing is generated until read
    first, again = loaded.take(3), loaded.take(3)
    assert len(loaded) == 50000 and all(np.array_equal(a["x"], b["x"]) for a, b in zip(first, again))


def _npy_header_declaring(path, shape):
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": shape})
        f.write(b"\0" * 64)


def test_an_npy_header_declaring_80_gb_is_refused_before_anything_is_allocated(tmp_path):
    _npy_header_declaring(tmp_path / "bomb.npy", (20_000_000_000, 1, 1, 1))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(EdgecError, match=r"bomb.npy: its header declares 80,000,000,000 bytes, the file has"):
        calib.load(str(tmp_path / "bomb.npy"), _model(1))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB: under 100 MB


def test_an_npz_member_over_the_limit_is_refused_with_the_way_out(tmp_path):
    _npy_header_declaring(tmp_path / "x.npy", (300_000_000, 1, 4, 4))
    with zipfile.ZipFile(tmp_path / "big.npz", "w") as z:
        z.write(tmp_path / "x.npy", "x.npy")
    with pytest.raises(EdgecError, match=r"x.npy declares 19,200,000,000 bytes.*use .npy files"):
        calib.load(str(tmp_path / "big.npz"), _model(1))


def test_a_large_npy_is_memory_mapped_not_read(tmp_path):
    data = np.lib.format.open_memmap(tmp_path / "big.npy", "w+", np.float32, (20_000, 1, 64, 64))  # 328 MB
    data[:] = 1.0
    del data
    g = GraphBuilder()
    g.output(g.op("Relu", [g.input("x", ["N", 1, 64, 64])]))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    loaded = calib.load(str(tmp_path / "big.npy"), g.model())
    assert len(loaded) == 20_000 and float(loaded.take(1)[0]["x"].sum()) == 64 * 64
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000


@pytest.mark.parametrize(
    "spec, message",
    [
        ("scale=1/0", "scale=1/0 must be a finite, non-zero number"),
        ("resize=60000", "resize=60000 is over 16384 pixels a side"),
        ("mean=nan", "bad value for mean"),
    ],
)
def test_preprocess_values_that_cannot_work_are_refused(spec, message):
    with pytest.raises(EdgecError, match=message):
        preprocess.parse(spec)


def test_a_decompression_bomb_image_is_refused_from_its_header(tmp_path):
    Image.new("1", (10_000, 10_000)).save(tmp_path / "bomb.png")  # 100 M pixels in a few kB
    spec = preprocess.parse("resize=28,layout=nchw,color=gray")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(EdgecError, match=r"bomb.png: 10000x10000 pixels, over the 89,478,485"):
        spec.apply(tmp_path / "bomb.png")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000
