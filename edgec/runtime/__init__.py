"""The host side of the device runtime: load a build output, verify it, decode its weights, run it.

    model = edgec.runtime.load("build/lenet300-arduino-nano-33-ble")
    outputs = model.run({"input": x})

A bundle directory is checked against its manifest (every file's size and sha256) before
anything is decoded; a model whose weights live in edgec's compressed container (`model.ecw`,
written after the huffman pass) gets them decoded, bit for bit, into the ONNX graph.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import onnx
import onnx.external_data_helper
from onnx import numpy_helper

from edgec import bundle, runner
from edgec.compress import container, storage
from edgec.errors import EdgecError


@dataclass
class LoadedModel:
    proto: onnx.ModelProto
    session: object  # onnxruntime.InferenceSession
    manifest: dict | None = None
    decoded: list[str] = field(default_factory=list)  # tensors that came from the container
    # Why onnxruntime's graph optimizer was off for this session (None: optimized, as usual).
    unoptimized_because: str | None = None

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.session.get_inputs()]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return runner.run(self.session, [feeds])[0]


def load(path: str | Path, threads: int | None = None) -> LoadedModel:
    """A bundle directory (with manifest.json) or a model.onnx file; EdgecError on anything wrong."""
    if not isinstance(path, (str, os.PathLike)):
        raise EdgecError(f"edgec.runtime.load takes a bundle directory or an .onnx path, not a {type(path).__name__}")
    path = Path(path)
    manifest = None
    if path.is_dir():
        manifest = verified_manifest(path)
        path = path / manifest["artifact"]
    elif bundle.is_bundle(path.parent):  # a file of an edgec bundle is loaded under its manifest
        manifest = verified_manifest(path.parent)
        if path.name not in manifest["files"]:
            raise EdgecError(f"{path}: not listed (and hashed) in {path.parent / 'manifest.json'}")
    if not path.is_file():
        raise EdgecError(f"{path}: no such file")
    try:
        proto = onnx.load(str(path), load_external_data=False)
        _check_external_data(proto, path.parent, manifest)
        onnx.external_data_helper.load_external_data_for_model(proto, str(path.parent))
    except EdgecError:
        raise
    except Exception as exc:
        raise EdgecError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from exc
    decoded = _join_container(proto, path.parent, manifest)
    session, unoptimized_because = optimized_session(proto, threads)
    if session is None:
        raise EdgecError(f"{path}: onnxruntime cannot load the model: {unoptimized_because}")
    return LoadedModel(proto, session, manifest, decoded, unoptimized_because)


def optimized_session(proto: onnx.ModelProto, threads: int | None = None):
    """(session, None) with onnxruntime's graph optimizations on, as deployed sessions run.

    Its optimizer folds the Constant nodes inside If branches and then infers both branches'
    shapes; a branch the inputs never take need not fit the static input shapes (silero-vad's
    8 kHz branch at a 16 kHz input shape), and it refuses a model that runs correctly
    unoptimized. Then (unoptimized session, why): the workaround onnxruntime users apply by hand
    (graph_optimization_level=ORT_DISABLE_ALL). (None, why) when neither loads.
    """
    try:
        return runner.make_session(proto, optimize=True, threads=threads, spinning=True), None
    except Exception as exc:
        why = str(exc).splitlines()[0][:200]
    try:
        return runner.make_session(proto, optimize=False, threads=threads, spinning=True), why
    except Exception:
        return None, why


MANIFEST_BYTES_LIMIT = 64 << 20


def verified_manifest(directory: str | Path) -> dict:
    """The bundle's manifest, after checking its shape (a JSON object with the right types), that
    every path in it is relative, normalized and inside the bundle (no `..`, no absolute path, no
    symlink leading out), that the artifact is one of the listed files, and that every listed
    file has its recorded size and sha256. EdgecError (exit code 2) naming the bundle otherwise."""
    directory = Path(directory)
    file = directory / "manifest.json"
    try:
        if file.stat().st_size > MANIFEST_BYTES_LIMIT:
            raise EdgecError(f"{directory}: manifest.json is over {MANIFEST_BYTES_LIMIT >> 20} MB")
        manifest = json.loads(file.read_text(), parse_constant=_not_json)
    except EdgecError:
        raise
    except (OSError, ValueError, RecursionError) as exc:
        raise EdgecError(f"{directory}: no readable manifest.json ({type(exc).__name__}: {_first_line(exc)})") from exc
    if not isinstance(manifest, dict):
        raise EdgecError(f"{directory}: manifest.json holds a JSON {type(manifest).__name__}, not an object")
    if manifest.get("format") != bundle.MANIFEST_FORMAT:
        raise EdgecError(
            f"{directory}: manifest.json is not an edgec bundle manifest (format {manifest.get('format')!r})"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise EdgecError(f"{directory}: manifest 'files' must be a non-empty table of the bundle's files")
    for key in ("artifact", "backend", "target"):
        if not isinstance(manifest.get(key), str) or not manifest[key]:
            raise EdgecError(f"{directory}: manifest '{key}' must be a non-empty string")
    inside_bundle(directory, manifest["artifact"], "artifact")
    if manifest["artifact"] not in files:
        raise EdgecError(f"{directory}: the artifact {manifest['artifact']} is not listed (and hashed) in 'files'")
    for name, entry in files.items():
        file = inside_bundle(directory, name, "files")
        if (
            not isinstance(entry, dict)
            or type(entry.get("bytes")) is not int
            or entry["bytes"] < 0
            or not isinstance(entry.get("sha256"), str)
            or len(entry["sha256"]) != 64
        ):
            raise EdgecError(f"{directory}: manifest entry for {name} needs integer 'bytes' and a sha256 hex 'sha256'")
        if not file.is_file():
            raise EdgecError(f"{directory}: {name} is listed in the manifest but missing")
        if file.stat().st_size != entry["bytes"] or bundle.sha256_file(file) != entry["sha256"]:
            raise EdgecError(f"{directory}: {name} does not match its sha256 in the manifest")
    for key in ("inputs", "outputs"):
        ports = manifest.get(key, [])
        if not isinstance(ports, list) or not all(
            isinstance(p, dict) and isinstance(p.get("name"), str) and isinstance(p.get("shape", []), list)
            for p in ports
        ):
            raise EdgecError(f"{directory}: manifest '{key}' must be a list of ports with a name and a shape")
    return manifest


def inside_bundle(directory: Path, name: object, field: str) -> Path:
    """`directory / name` for a manifest path that is relative, normalized and stays in the bundle."""
    if not isinstance(name, str) or not name or "\\" in name or "\x00" in name:
        raise EdgecError(f"{directory}: manifest '{field}' holds {name!r}, not a relative file name")
    parts = name.split("/")
    if name.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise EdgecError(f"{directory}: manifest '{field}' path {name!r} must be relative and inside the bundle")
    path = directory / name
    try:
        root = directory.resolve(strict=True)
        real = path.resolve()
    except (OSError, RuntimeError) as exc:
        raise EdgecError(f"{directory}: cannot resolve {name!r} ({type(exc).__name__})") from exc
    if real != root and root not in real.parents:
        raise EdgecError(f"{directory}: manifest '{field}' path {name!r} leads outside the bundle (a symlink)")
    return path


def _not_json(name: str):
    raise ValueError(f"{name} is not JSON")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


def _check_external_data(proto: onnx.ModelProto, directory: Path, manifest: dict | None) -> None:
    """External-data locations are bundle paths too: inside the directory, and listed when a manifest exists."""
    for tensor in onnx.external_data_helper._get_all_tensors(proto):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = {e.key: e.value for e in tensor.external_data}.get("location", "")
        inside_bundle(directory, location, "external data")
        if manifest is not None and location not in manifest["files"]:
            raise EdgecError(f"{directory}: external data {location} is not listed (and hashed) in the manifest")


def _join_container(proto: onnx.ModelProto, directory: Path, manifest: dict | None = None) -> list[str]:
    meta = {p.key: p.value for p in proto.metadata_props}
    if storage.METADATA_KEY not in meta:
        return []
    try:
        spec = json.loads(meta[storage.METADATA_KEY], parse_constant=_not_json)
        if not isinstance(spec, dict) or not isinstance(spec.get("tensors"), list):
            raise ValueError("not an object with a 'tensors' list")
        expected = {t for t in spec["tensors"] if isinstance(t, str)}
    except (ValueError, RecursionError) as exc:
        raise EdgecError(f"{directory}: the model's {storage.METADATA_KEY} metadata is malformed ({exc})") from exc
    file = inside_bundle(directory, spec.get("file"), "weight container")
    if manifest is not None and spec["file"] not in manifest["files"]:
        raise EdgecError(f"{directory}: the weight container {spec['file']} is not listed (and hashed) in the manifest")
    tensors = container.read(file)
    if set(tensors) != expected:
        raise EdgecError(f"{file}: holds {sorted(tensors)[:5]}..., the model expects {sorted(expected)[:5]}...")
    present = {t.name for t in proto.graph.initializer}
    for name in sorted(tensors):
        if name in present:
            raise EdgecError(f"{file}: '{name}' is also in the ONNX file")
        proto.graph.initializer.append(numpy_helper.from_array(tensors[name], name))
    return sorted(tensors)


def strip_container_tensors(proto: onnx.ModelProto, names: set[str]) -> None:
    """The ONNX file a device receives next to model.ecw: those initializers removed. Alone it
    fails to load (the weights are missing) rather than running with wrong weights."""
    kept = [t for t in proto.graph.initializer if t.name not in names]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)
