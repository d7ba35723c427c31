"""Frontends: whatever the user hands edgec (a path, a zoo name, a proto, a torch module) becomes IR."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import onnx

from edgec import ir
from edgec.errors import EdgecError, ModelLoadError

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
        try:
            # -1 dimensions (a streaming model's length) are fixed by --input-shape; LiteRT gives the rest.
            return tflite_frontend.load(path, input_shapes=input_shapes)
        except EdgecError:
            raise
        except Exception as exc:  # a malformed flatbuffer surfaces as whatever the schema accessors raise
            raise ModelLoadError(
                f"{path}: not a readable TFLite model ({type(exc).__name__}: {_first_line(exc)}); "
                "the file is corrupt or uses a field edgec cannot read"
            ) from exc
    if _is_torchscript(path):
        from edgec.frontends import torch as torch_frontend

        torch_frontend.refuse_pickle(path)
        if not input_shapes:
            raise ModelLoadError(f"{path}: a TorchScript model needs --input-shape NAME=1x3x224x224 for each input")
        return torch_frontend.load_torchscript(path, input_shapes, input_dtypes)
    return _load_onnx(path, input_shapes)


def _load_onnx(path: Path, input_shapes=None) -> ir.Model:
    """ir.load, after checking what it would trip over (external data past the end of its file),
    with the file's own opset kept: ir.load upgrades old opsets, `edgec inspect` shows the file's."""
    opset = None
    try:
        header = onnx.load(str(path), load_external_data=False)
    except Exception:  # ir.load reports an unreadable file in its own words
        header = None
    if header is not None:
        opset = next((o.version for o in header.opset_import if o.domain in ("", "ai.onnx")), None)
        _check_external_data_sizes(header, path)
    model = ir.load(path, input_shapes=input_shapes)
    model.source_opset = opset
    return model


def _check_external_data_sizes(proto: onnx.ModelProto, path: Path) -> None:
    from onnx import external_data_helper

    for tensor in external_data_helper._get_all_tensors(proto):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        try:
            offset, length = int(info.get("offset", 0) or 0), int(info.get("length", -1) or -1)
        except ValueError:
            raise ModelLoadError(
                f"{path}: tensor '{tensor.name}' has a malformed external data offset/length"
            ) from None
        file = path.parent / location
        if not location or not file.is_file():
            continue  # ir.load names a missing file
        size = file.stat().st_size
        if offset < 0 or offset > size or (length >= 0 and offset + length > size):
            raise ModelLoadError(
                f"{path}: external data for tensor '{tensor.name}' is truncated: {location} holds {size:,} bytes, "
                f"the model needs {offset + max(length, 0):,}"
            )


def _load_zoo(name: str, input_shapes) -> Loaded:
    from edgec.models import registry

    entry = registry.get(name)
    shapes = {**entry.input_shapes, **(input_shapes or {})}
    model = _load_onnx(Path(entry.path()), input_shapes=shapes or None)
    model.source = f"{ZOO_PREFIX}{name}"
    return Loaded(model, entry)


def _is_torchscript(path: Path) -> bool:
    # TorchScript archives are zip files; ONNX files are protobuf and never start with "PK".
    # A legacy torch.save pickle starts with the pickle protocol byte 0x80.
    with open(path, "rb") as f:
        head = f.read(2)
    return (
        head == b"PK"
        or path.suffix in TORCHSCRIPT_SUFFIXES
        or (head[:1] == b"\x80" and head[1:2] in b"\x02\x03\x04\x05")
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


def _is_torch_module(obj: Any) -> bool:
    return any(
        c.__module__.startswith("torch.") and c.__name__ in ("Module", "ScriptModule") for c in type(obj).__mro__
    )
