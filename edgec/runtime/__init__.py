"""The host side of the device runtime: load a build output, verify it, decode its weights, run it.

    model = edgec.runtime.load("build/lenet300-arduino-nano-33-ble")
    outputs = model.run({"input": x})

A bundle directory is checked against its manifest (every file's size and sha256) before
anything is decoded; a model whose weights live in edgec's compressed container (`model.ecw`,
written after the huffman pass) gets them decoded, bit for bit, into the ONNX graph.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import onnx
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

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.session.get_inputs()]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return runner.run(self.session, [feeds])[0]


def load(path: str | Path, threads: int | None = None) -> LoadedModel:
    """A bundle directory (with manifest.json) or a model.onnx file; EdgecError on anything wrong."""
    path = Path(path)
    manifest = None
    if path.is_dir():
        manifest = verified_manifest(path)
        path = path / manifest["artifact"]
    if not path.is_file():
        raise EdgecError(f"{path}: no such file")
    try:
        proto = onnx.load(str(path))
    except Exception as exc:
        raise EdgecError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from exc
    decoded = _join_container(proto, path.parent)
    try:
        session = runner.make_session(proto, optimize=True, threads=threads)
    except Exception as exc:
        raise EdgecError(f"{path}: onnxruntime cannot load the model: {str(exc).splitlines()[0][:200]}") from exc
    return LoadedModel(proto, session, manifest, decoded)


def verified_manifest(directory: Path) -> dict:
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise EdgecError(f"{directory}: no readable manifest.json ({exc})") from exc
    for name, entry in manifest.get("files", {}).items():
        file = directory / name
        if not file.is_file():
            raise EdgecError(f"{directory}: {name} is listed in the manifest but missing")
        if file.stat().st_size != entry["bytes"] or bundle.sha256_file(file) != entry["sha256"]:
            raise EdgecError(f"{directory}: {name} does not match its sha256 in the manifest")
    return manifest


def _join_container(proto: onnx.ModelProto, directory: Path) -> list[str]:
    meta = {p.key: p.value for p in proto.metadata_props}
    if storage.METADATA_KEY not in meta:
        return []
    spec = json.loads(meta[storage.METADATA_KEY])
    tensors = container.read(directory / spec["file"])
    expected = set(spec["tensors"])
    if set(tensors) != expected:
        raise EdgecError(
            f"{directory / spec['file']}: holds {sorted(tensors)[:5]}..., the model expects {sorted(expected)[:5]}..."
        )
    present = {t.name for t in proto.graph.initializer}
    for name in sorted(tensors):
        if name in present:
            raise EdgecError(f"{directory / spec['file']}: '{name}' is also in the ONNX file")
        proto.graph.initializer.append(numpy_helper.from_array(tensors[name], name))
    return sorted(tensors)


def strip_container_tensors(proto: onnx.ModelProto, names: set[str]) -> None:
    """The ONNX file a device receives next to model.ecw: those initializers removed. Alone it
    fails to load (the weights are missing) rather than running with wrong weights."""
    kept = [t for t in proto.graph.initializer if t.name not in names]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)
