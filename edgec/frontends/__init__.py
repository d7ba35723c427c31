"""Frontends: whatever the user hands edgec (a path, a zoo name, a proto, a torch module) becomes IR."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import onnx

from edgec import ir
from edgec.errors import ModelLoadError

ZOO_PREFIX = "zoo:"
TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ptl", ".torchscript")


@dataclass
class Loaded:
    model: ir.Model
    zoo: Any = None  # the edgec.models.registry.ZooModel it came from, if any


def load(
    source: Any,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    input_dtypes: Mapping[str, str] | None = None,
    example_inputs: Any = None,
) -> Loaded:
    if isinstance(source, ir.Model):
        return Loaded(source.copy())
    if isinstance(source, onnx.ModelProto):
        return Loaded(ir.from_proto(source, input_shapes=input_shapes))
    if _is_torch_module(source):
        if example_inputs is None:
            raise ModelLoadError("a torch module needs example_inputs to be exported")
        from edgec.frontends import torch as torch_frontend

        return Loaded(torch_frontend.from_module(source, example_inputs))
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if text.startswith(ZOO_PREFIX):
            return _load_zoo(text[len(ZOO_PREFIX) :], input_shapes)
        return Loaded(load_path(Path(text), input_shapes, input_dtypes))
    raise ModelLoadError(
        f"cannot compile a {type(source).__name__}: give a path, a zoo: name, an ONNX proto or a torch module"
    )


def load_path(path: Path, input_shapes=None, input_dtypes=None) -> ir.Model:
    if not path.exists():
        hint = ""
        from edgec.models import registry

        if path.name in registry.ZOO or path.stem in registry.ZOO:
            hint = f" (did you mean {ZOO_PREFIX}{path.stem}?)"
        raise ModelLoadError(f"{path}: no such file{hint}")
    if path.is_dir():
        raise ModelLoadError(f"{path}: is a directory, not a model file")
    from edgec.frontends import tflite as tflite_frontend

    if tflite_frontend.is_tflite(path):
        if input_shapes:
            raise ModelLoadError(f"{path}: a .tflite model's input shapes are fixed in the file; drop --input-shape")
        return tflite_frontend.load(path)
    if _is_torchscript(path):
        from edgec.frontends import torch as torch_frontend

        if not input_shapes:
            raise ModelLoadError(f"{path}: a TorchScript model needs --input-shape NAME=1x3x224x224 for each input")
        return torch_frontend.load_torchscript(path, input_shapes, input_dtypes)
    return ir.load(path, input_shapes=input_shapes)


def _load_zoo(name: str, input_shapes) -> Loaded:
    from edgec.models import registry

    entry = registry.get(name)
    shapes = {**entry.input_shapes, **(input_shapes or {})}
    model = ir.load(entry.path(), input_shapes=shapes or None)
    model.source = f"{ZOO_PREFIX}{name}"
    return Loaded(model, entry)


def _is_torchscript(path: Path) -> bool:
    # TorchScript archives are zip files; ONNX files are protobuf and never start with "PK".
    with open(path, "rb") as f:
        return f.read(2) == b"PK" or path.suffix in TORCHSCRIPT_SUFFIXES


def _is_torch_module(obj: Any) -> bool:
    return any(
        c.__module__.startswith("torch.") and c.__name__ in ("Module", "ScriptModule") for c in type(obj).__mro__
    )
