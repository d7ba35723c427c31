import numpy as np
import pytest
from PIL import Image

from edgec import calib
from edgec.calib import preprocess
from edgec.errors import EdgecError
from tests.helpers import GraphBuilder


def _model(shape=("N", 1, 8, 8), inputs=("x",)):
    b = GraphBuilder()
    out = None
    for name in inputs:
        x = b.input(name, list(shape))
        out = x if out is None else b.op("Add", [out, x])
    b.output(b.op("Relu", [out]))
    return b.model()


def test_npz_keyed_by_input_name_and_stacks():
    path_model = _model(inputs=("a", "b"))
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/c.npz"
        np.savez(path, a=np.zeros((20, 1, 1, 8, 8), np.float32), b=np.ones((20, 1, 1, 8, 8), np.float32))
        data = calib.load(path, path_model)
        assert len(data) == 20
        first = next(iter(data))
        assert set(first) == {"a", "b"} and first["b"].shape == (1, 1, 8, 8)
        np.savez(path, np.zeros((20, 1, 1, 8, 8), np.float32), np.ones((20, 1, 1, 8, 8), np.float32))
        assert next(iter(calib.load(path, path_model)))["b"].max() == 1.0  # positional arr_0, arr_1


def test_npy_and_directory_of_npy_files(tmp_path):
    model = _model()
    np.save(tmp_path / "all.npy", np.zeros((32, 1, 8, 8), np.float32))  # a batch for a batch-N model: 32 samples
    assert len(calib.load(str(tmp_path / "all.npy"), model, min_samples=1)) == 32
    np.save(tmp_path / "all.npy", np.zeros((32, 1, 1, 8, 8), np.float32))  # a stack of samples
    assert len(calib.load(str(tmp_path / "all.npy"), model)) == 32
    folder = tmp_path / "dir"
    folder.mkdir()
    for i in range(17):
        np.save(folder / f"{i:03d}.npy", np.full((1, 1, 8, 8), i, np.float32))
    data = calib.load(str(folder), model)
    assert len(data) == 17 and [float(s["x"].max()) for s in data][:3] == [0.0, 1.0, 2.0]


def test_images_with_a_preprocessing_spec(tmp_path):
    model = _model(shape=(1, 3, 6, 6))
    for i in range(16):
        Image.fromarray(np.full((10, 12, 3), i * 10, np.uint8)).save(tmp_path / f"img{i:02d}.png")
    spec = "resize=6,crop=6,mean=0.5,std=0.5,layout=nchw"
    data = calib.load(str(tmp_path), model, spec)
    sample = list(data)[3]["x"]
    assert sample.shape == (1, 3, 6, 6)
    np.testing.assert_allclose(sample, (30 / 255 - 0.5) / 0.5, atol=1e-6)
    with pytest.raises(EdgecError, match="needs --preprocess"):
        calib.load(str(tmp_path), model)


def test_preprocess_spec_round_trips_and_rejects_nonsense():
    text = "resize=256,crop=224,color=bgr,scale=0.003921568627,mean=0.485/0.456/0.406,std=0.229/0.224/0.225"
    spec = preprocess.parse(text)
    assert spec.crop == (224,) and spec.color == "bgr" and spec.mean == (0.485, 0.456, 0.406)
    assert preprocess.parse(str(spec)) == spec
    assert preprocess.parse("scale=1/255").scale == pytest.approx(1 / 255)
    for bad, message in [
        ("resize=big", "bad value for resize"),
        ("color=cmyk", "color must be one of"),
        ("mean=1/2", "mean needs 1 or 3 values"),
        ("zoom=2", "unknown key 'zoom'"),
        ("std=0", "std must not be 0"),
        ("resize", "is not key=value"),
    ]:
        with pytest.raises(EdgecError, match=message):
            preprocess.parse(bad)


def test_plugin_loader(tmp_path):
    plugin = tmp_path / "loader.py"
    plugin.write_text(
        "import numpy as np\n"
        "def calibration_samples(inputs):\n"
        "    assert inputs[0]['name'] == 'x'\n"
        "    for i in range(20):\n"
        "        yield np.full((1, 1, 8, 8), i, np.float32)\n"
    )
    data = calib.load(f"plugin:{plugin}", _model())
    assert len(data) == 20 and float(list(data)[-1]["x"].max()) == 19.0


def test_random_is_marked_unrepresentative():
    data = calib.load("random:16", _model())
    assert len(data) == 16 and not data.representative


def test_split_is_disjoint_and_seeded():
    data = calib.load("random:40", _model())
    search, held_out = data.split(0.25, seed=3)
    assert (len(search), len(held_out)) == (30, 10)
    ids = lambda part: {float(s["x"].sum()) for s in part}  # noqa: E731 - random samples are distinct
    assert not ids(search) & ids(held_out) and len(ids(search) | ids(held_out)) == 40


@pytest.mark.parametrize(
    "make,message",
    [
        (
            lambda p: np.save(p / "c.npy", np.full((20, 1, 1, 8, 8), np.nan, np.float32)),
            r"c.npy\[0\]: 'x' contains NaN",
        ),
        (
            lambda p: np.save(p / "c.npy", np.zeros((20, 1, 1, 9, 9), np.float32)),
            r"c.npy\[0\]: 'x' has shape \[1, 1, 9, 9\]",
        ),
        (lambda p: np.save(p / "c.npy", np.zeros((3, 1, 1, 8, 8), np.float32)), r"c.npy: 3 samples, need at least 16"),
        (lambda p: np.save(p / "c.npy", np.full((20, 1, 1, 8, 8), "a")), r"c.npy\[0\]: 'x' is <U1, not numbers"),
        (lambda p: (p / "c.npy").write_bytes(b"not numpy"), r"c.npy: unreadable"),
    ],
)
def test_bad_calibration_files_are_named(tmp_path, make, message):
    make(tmp_path)
    with pytest.raises(EdgecError, match=message):
        list(calib.load(str(tmp_path / "c.npy"), _model()))


def test_unreadable_image_is_named(tmp_path):
    model = _model(shape=(1, 3, 6, 6))
    for i in range(16):
        Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(tmp_path / f"img{i:02d}.png")
    (tmp_path / "img07.png").write_bytes(b"truncated")
    with pytest.raises(EdgecError, match=r"img07.png: unreadable image"):
        list(calib.load(str(tmp_path), model, "layout=nchw"))


def test_integer_input_rejects_float_data(tmp_path):
    b = GraphBuilder()
    ids = b.input("ids", [1, 4], dtype=7)
    b.output(b.op("Cast", [ids], to=1))
    np.save(tmp_path / "c.npy", np.zeros((20, 1, 4), np.float32))
    with pytest.raises(EdgecError, match=r"'ids' is float32, the model wants int64"):
        list(calib.load(str(tmp_path / "c.npy"), b.model()))
