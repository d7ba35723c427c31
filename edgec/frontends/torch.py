"""PyTorch frontend: an nn.Module with example inputs, or a TorchScript file with input shapes."""

from __future__ import annotations

import io
import os
import warnings
import zipfile
from pathlib import Path
from typing import Mapping, Sequence

import onnx

from edgec import ir
from edgec.errors import EdgecError, ModelLoadError

# Every backend edgec lowers to reads opset 17; newer opsets add nothing a vision or audio
# model exported from PyTorch needs.
EXPORT_OPSET = 17
INSTALL_HINT = "PyTorch models need the torch extra: pip install 'edgec[torch]' (torch==2.13.0, CPU build)"


def _torch():
    try:
        import torch
    except ImportError as exc:
        raise EdgecError(INSTALL_HINT) from exc
    return torch


def from_module(
    module,
    example_inputs: Sequence | Mapping,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    dynamic_batch: bool = False,
    exporter: str = "torchscript",
    fold_in_exporter: bool = False,
) -> ir.Model:
    """Export `module` (put in eval mode) through torch.onnx.export and import the result.

    exporter="torchscript" traces (works for nn.Module and ScriptModule); "dynamo" uses
    torch.export. By default the exporter's own constant folding is off, so edgec's passes, with
    their checks, do that work and the report shows it.
    """
    torch = _torch()
    if isinstance(example_inputs, Mapping):
        input_names = list(example_inputs)
        example_inputs = tuple(example_inputs.values())
    elif isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    example_inputs = tuple(example_inputs)
    input_names = list(
        input_names or [f"input{i}" if len(example_inputs) > 1 else "input" for i in range(len(example_inputs))]
    )
    module.eval()
    dynamic_axes = None
    if dynamic_batch:
        dynamic_axes = {name: {0: "batch"} for name in input_names}
        if output_names:
            dynamic_axes.update({name: {0: "batch"} for name in output_names})
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                module,
                example_inputs,
                buffer,
                input_names=input_names,
                output_names=output_names,
                opset_version=EXPORT_OPSET,
                dynamo=(exporter == "dynamo"),
                dynamic_axes=dynamic_axes,
                do_constant_folding=fold_in_exporter,
            )
        except Exception as exc:
            raise ModelLoadError(
                f"torch.onnx.export failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            ) from exc
    proto = onnx.load_from_string(buffer.getvalue())
    return ir.from_proto(proto, source=type(module).__name__)


def refuse_pickle(path: str | os.PathLike) -> None:
    """A torch.save() pickle (a whole nn.Module or a state_dict) is Python objects, not a graph:
    say how to compile it instead of calling it a corrupt TorchScript file."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(2)
    pickled = head[:1] == b"\x80"
    if head == b"PK":
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise ModelLoadError(f"{path}: not a TorchScript archive (not a readable zip file: {exc})") from exc
        has_code = any("/code/" in n or n.startswith("code/") for n in names)
        pickled = not has_code and any(n.endswith("data.pkl") for n in names)
    if pickled:
        raise ModelLoadError(
            f"{path}: a torch.save() pickle (an nn.Module or state_dict), not TorchScript; compile the module "
            "from Python with edgec.compile(module, example_inputs=...), or save it with "
            "torch.jit.trace(module, example).save(PATH)"
        )


def load_torchscript(
    path: str | os.PathLike, input_shapes: Mapping[str, Sequence[int]], input_dtypes: Mapping[str, str] | None = None
) -> ir.Model:
    """A TorchScript archive (torch.jit.save) exported with one shape per forward() argument."""
    torch = _torch()
    path = Path(path)
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise ModelLoadError(f"{path}: not a TorchScript archive ({str(exc).splitlines()[0][:200]})") from exc
    names = [a.name for a in module.forward.schema.arguments[1:]]  # [0] is self
    missing = [n for n in names if n not in input_shapes]
    extra = [n for n in input_shapes if n not in names]
    if missing or extra:
        raise EdgecError(
            f"{path}: give --input-shape for each forward() argument: {', '.join(names)}"
            + (f" (unknown: {', '.join(extra)})" if extra else "")
        )
    dtypes = input_dtypes or {}
    examples = tuple(_example(torch, input_shapes[n], dtypes.get(n, "float32")) for n in names)
    model = from_module(module, examples, input_names=names)
    model.source = str(path)
    return model


def _example(torch, shape: Sequence[int], dtype: str):
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise EdgecError(f"unknown input dtype '{dtype}'")
    if torch_dtype.is_floating_point:  # data-dependent paths should see data-like values
        return torch.rand(tuple(shape), generator=torch.Generator().manual_seed(0), dtype=torch_dtype)
    return torch.zeros(tuple(shape), dtype=torch_dtype)
