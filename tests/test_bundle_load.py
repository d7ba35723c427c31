"""Bundles on load (issue 12, class 14): every manifest path relative and inside the bundle, the
artifact listed and hashed, every malformed field an EdgecError (exit 2), and a weight container
that detects its own corruption (mutation fuzzing with the manifest's hashes recomputed)."""

import hashlib
import json
import shutil
import struct

import numpy as np
import pytest

import edgec
from edgec import bundle, runtime
from edgec.bench import bench
from edgec.cli import main
from edgec.compress import container
from edgec.errors import EdgecError


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A huffman-coded LeNet-300 bundle (model.onnx + model.ecw), built once."""
    out = tmp_path_factory.mktemp("bundles") / "lenet300"
    edgec.compile("zoo:lenet300", "x86-64", passes="huffman", output_dir=out, backend="onnx")
    return out


@pytest.fixture
def copy(built, tmp_path):
    target = tmp_path / "b"
    shutil.copytree(built, target)
    return target


def _manifest(path):
    return json.loads((path / "manifest.json").read_text())


def _write_manifest(path, manifest):
    (path / "manifest.json").write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))


def _rehash(path, manifest):
    """What an attacker who can edit the manifest does: recompute every listed file's hash."""
    for name in list(manifest["files"]):
        file = path / name
        if file.is_file():
            manifest["files"][name] = {"bytes": file.stat().st_size, "sha256": bundle.sha256_file(file)}
    _write_manifest(path, manifest)


def _refused(path, match: str, capsys=None):
    with pytest.raises(EdgecError, match=match) as raised:
        runtime.load(path)
    assert "\n" not in str(raised.value) and raised.value.exit_code == 2
    with pytest.raises(EdgecError, match=match):
        bench(path, runs=1, warmup=0)
    if capsys is not None:  # and through the command: exit 2, one line
        capsys.readouterr()
        assert main(["bench", str(path), "--runs", "1"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("edgec: error: ")


def test_the_built_bundle_loads_and_runs(copy):
    model = runtime.load(copy)
    assert len(model.decoded) >= 3 and set(model.decoded) <= {t.name for t in model.proto.graph.initializer}
    out = model.run({"input": np.zeros((1, 1, 28, 28), np.float32)})
    assert next(iter(out.values())).shape == (1, 10)


def test_file_entry_escaping_the_bundle(copy, tmp_path, capsys):
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0")
    manifest = _manifest(copy)
    manifest["files"]["../secret.txt"] = {"bytes": 10, "sha256": bundle.sha256_file(secret)}
    _write_manifest(copy, manifest)
    _refused(copy, "must be relative and inside the bundle", capsys)


@pytest.mark.parametrize("artifact", ["/etc/passwd", "../b/model.onnx", "./model.onnx", "sub//model.onnx", "a\\b"])
def test_artifact_outside_or_not_normalized(copy, artifact):
    manifest = _manifest(copy)
    manifest["artifact"] = artifact
    _write_manifest(copy, manifest)
    _refused(copy, "relative")


def test_artifact_must_be_listed_and_hashed(copy, capsys):
    manifest = _manifest(copy)
    del manifest["files"]["model.onnx"]
    _write_manifest(copy, manifest)
    _refused(copy, "not listed", capsys)


def test_emptied_file_list_with_a_replaced_model(copy):
    shutil.copy(edgec.models.registry.get("lenet5").path(), copy / "model.onnx")
    manifest = _manifest(copy)
    manifest["files"] = {}
    _write_manifest(copy, manifest)
    _refused(copy, "non-empty table")


def test_symlink_leading_out_of_the_bundle(copy, tmp_path):
    outside = tmp_path / "elsewhere.onnx"
    shutil.move(copy / "model.onnx", outside)
    (copy / "model.onnx").symlink_to(outside)
    manifest = _manifest(copy)
    _rehash(copy, manifest)
    _refused(copy, "leads outside the bundle")


def test_container_not_listed_in_the_manifest(copy):
    manifest = _manifest(copy)
    del manifest["files"]["model.ecw"]
    _write_manifest(copy, manifest)
    _refused(copy, "weight container model.ecw is not listed")


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        "null",
        '"manifest"',
        "3",
        "[" * 100_000 + "]" * 100_000,
        '{"format": "edgec-bundle", "files": [], "artifact": "model.onnx"}',
        '{"format": "edgec-bundle", "files": {"model.onnx": {"bytes": "1", "sha256": "x"}}, "artifact": "model.onnx",'
        ' "backend": "onnx", "target": "x86-64"}',
        '{"format": "edgec-bundle", "files": {"model.onnx": 7}, "artifact": "model.onnx", "backend": "onnx",'
        ' "target": "x86-64"}',
        '{"format": "edgec-bundle", "files": {"model.onnx": {}}, "artifact": 5, "backend": "onnx", "target": "t"}',
        '{"format": "edgec-bundle", "files": {"model.onnx": {}}, "artifact": "model.onnx", "backend": null}',
        '{"format": "edgec-bundle", "bytes": Infinity}',
        "{not json",
    ],
)
def test_malformed_manifests_are_one_line_errors(copy, text):
    _write_manifest(copy, text)
    _refused(copy, "manifest")


def test_bench_refuses_a_port_declaring_2_to_the_40_elements(copy):
    manifest = _manifest(copy)
    manifest["inputs"][0]["shape"] = [1, 1 << 20, 1 << 20]
    _write_manifest(copy, manifest)
    with pytest.raises(EdgecError, match="elements"):
        bench(copy, runs=1, warmup=0)
    manifest["inputs"][0]["shape"] = [1, 1, 28, 28]
    manifest["inputs"][0]["dtype"] = {"x": 1}
    _write_manifest(copy, manifest)
    with pytest.raises(EdgecError, match="dtype"):
        bench(copy, runs=1, warmup=0)


# --- the weight container --------------------------------------------------------------------


def _tensors():
    rng = np.random.default_rng(0)
    dense = rng.standard_normal((16, 24)).astype(np.float32)
    sparse = dense.copy()
    sparse[rng.random(sparse.shape) < 0.9] = 0
    indices = rng.integers(0, 32, (40, 30)).astype(np.uint8)
    pruned_indices = indices.copy()
    pruned_indices[rng.random(indices.shape) < 0.8] = 0
    return {"dense": dense, "sparse": sparse, "indices": indices, "pruned": pruned_indices}


def _with_header(header) -> bytes:
    """A container whose header is `header` (raw JSON text), checksum recomputed."""
    body = container.MAGIC + struct.pack("<I", len(header)) + header
    return body + hashlib.sha256(body).digest()


def test_container_round_trip_and_checksum():
    tensors = _tensors()
    data, _ = container.pack(tensors)
    assert data[:4] == b"ECW2"
    decoded = container.unpack(data)
    assert all(np.array_equal(decoded[k], v) and decoded[k].dtype == v.dtype for k, v in tensors.items())
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 1
    with pytest.raises(EdgecError, match="checksum mismatch"):
        container.unpack(bytes(flipped))
    with pytest.raises(EdgecError, match="container v1, no checksum"):
        container.unpack(b"ECW1" + data[4:])


@pytest.mark.parametrize(
    "header, match",
    [
        (b"[]", "header is a JSON list"),
        (b"null", "header is a JSON NoneType"),
        (b'{"format":"edgec-compressed-weights","version":Infinity,"tensors":[]}', "Infinity"),
        (b"[" * 50_000 + b"]" * 50_000, "RecursionError"),
        (b'{"format":"edgec-compressed-weights","version":2,"tensors":{}}', "not a list"),
        (b'{"format":"edgec-compressed-weights","version":2,"tensors":[7]}', "not an object"),
        (
            b'{"format":"edgec-compressed-weights","version":2,"tensors":[{"name":"w","dtype":"<f4",'
            b'"shape":[1048576,1048576],"layout":"dense","base":0,"values":{"coding":"raw","count":0,'
            b'"offset":0,"bytes":0}}]}',
            "1,099,511,627,776 elements",
        ),
        (
            b'{"format":"edgec-compressed-weights","version":2,"tensors":[{"name":"w","dtype":"<f4",'
            b'"shape":[4],"layout":"dense","base":0,"values":{"coding":"fixed","width":0,"count":4,'
            b'"offset":0,"bytes":0}}]}',
            "width is 0",
        ),
        (
            b'{"format":"edgec-compressed-weights","version":2,"tensors":[{"name":"w","dtype":"<f4",'
            b'"shape":[1e400],"layout":"dense","base":0,"values":{}}]}',
            "dimension is inf",
        ),
        (
            b'{"format":"edgec-compressed-weights","version":2,"tensors":[{"name":"w","dtype":"object",'
            b'"shape":[1],"layout":"dense","base":0,"values":{}}]}',
            "not a numeric type",
        ),
        (
            b'{"format":"edgec-compressed-weights","version":2,"tensors":[{"name":"w","dtype":"<f4",'
            b'"shape":[65536],"layout":"dense","base":0,"values":{"coding":"huffman","alphabet":2,"count":65536,'
            b'"bits":0,"offset":0,"bytes":0,"table":{"offset":0,"bytes":0}}}]}',
            "codes in 0 bits",
        ),
    ],
)
def test_hostile_container_headers_are_edgec_errors(header, match):
    with pytest.raises(EdgecError, match=match) as raised:
        container.unpack(_with_header(header), "model.ecw")
    assert "\n" not in str(raised.value)


def _mutate(data: bytes, rng) -> bytes:
    kind = rng.integers(5)
    at = int(rng.integers(len(data)))
    if kind == 0:  # flip 1-8 bits
        out = bytearray(data)
        for _ in range(int(rng.integers(1, 9))):
            i = int(rng.integers(len(out)))
            out[i] ^= 1 << int(rng.integers(8))
        return bytes(out)
    if kind == 1:  # truncate
        return data[:at]
    if kind == 2:  # insert random bytes
        return data[:at] + rng.bytes(int(rng.integers(1, 16))) + data[at:]
    if kind == 3:  # delete a range
        return data[:at] + data[at + int(rng.integers(1, 16)) :]
    return data[:at] + rng.bytes(min(8, len(data) - at)) + data[at + 8 :]  # overwrite


def test_mutation_fuzzer_on_the_container_never_yields_wrong_weights():
    tensors = _tensors()
    data, _ = container.pack(tensors)
    rng = np.random.default_rng(12)
    outcomes = {"identical": 0, "refused": 0}
    for _ in range(300):
        mutated = _mutate(data, rng)
        try:
            decoded = container.unpack(mutated, "model.ecw")
        except EdgecError as exc:
            assert "\n" not in str(exc)
            outcomes["refused"] += 1
            continue
        assert set(decoded) == set(tensors)
        assert all(np.array_equal(decoded[k], v) and decoded[k].dtype == v.dtype for k, v in tensors.items())
        outcomes["identical"] += 1
    assert outcomes["refused"] >= 290, outcomes  # only mutations that change nothing decode


def test_mutation_fuzzer_through_runtime_load_with_rehashed_manifest(copy):
    """The attacker recomputes the manifest's hashes: the container's own checksum still refuses."""
    original = (copy / "model.ecw").read_bytes()
    reference = runtime.load(copy).run({"input": np.ones((1, 1, 28, 28), np.float32)})
    rng = np.random.default_rng(3)
    manifest = _manifest(copy)
    for _ in range(25):
        (copy / "model.ecw").write_bytes(_mutate(original, rng))
        _rehash(copy, manifest)
        try:
            model = runtime.load(copy)
        except EdgecError:
            continue
        out = model.run({"input": np.ones((1, 1, 28, 28), np.float32)})
        assert all(np.array_equal(out[k], reference[k]) for k in reference)


@pytest.mark.parametrize(
    "key, value", [("onnx", "../../etc/passwd"), ("engine", "/tmp/x.plan"), ("calibration_cache", "calib.cache")]
)
def test_build_engine_confines_the_paths_in_engine_json(tmp_path, capsys, key, value):
    out = tmp_path / "trt"
    edgec.compile(edgec.models.registry.get("lenet5").path(), "jetson-nano", output_dir=out, backend="tensorrt")
    plan = json.loads((out / "engine.json").read_text())
    plan[key] = value
    (out / "engine.json").write_text(json.dumps(plan))
    _rehash(out, _manifest(out))
    capsys.readouterr()
    assert main(["build-engine", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"engine.json {key}" in err[0]


def test_load_takes_only_paths():
    for wrong in (None, 3, ["b"]):
        with pytest.raises(EdgecError, match="takes a bundle directory"):
            runtime.load(wrong)
