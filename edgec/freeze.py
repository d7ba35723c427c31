"""Inputs bound to fixed values (--freeze-input sr=16000), as OpenVINO's converter does with
`input="sr[]{i64}->16000"` and TensorFlow with a frozen placeholder.

A model that takes a setting as an input (silero-vad's sample rate, a score threshold) computes
both cases in If branches; a device needs one. The frozen input becomes a constant of the
input's declared type and leaves the model's inputs, and fold-constants then specializes what
depended on it: an If on the sample rate becomes its taken branch, which every backend can
lower and -O int8 can quantize.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx_graphsurgeon as gs

from edgec import ir
from edgec.errors import EdgecError

METADATA_KEY = "edgec.frozen_inputs"


def parse(values: Sequence[str]) -> dict[str, np.ndarray]:
    """NAME=VALUE or NAME=V1,V2,... (numbers), repeatable."""
    frozen = {}
    for text in values or ():
        name, sep, value = text.partition("=")
        try:
            numbers = [_number(v) for v in value.split(",")] if value else None
        except ValueError:
            numbers = None
        if not sep or not name or not numbers:
            raise EdgecError(f"--freeze-input {text!r}: expected NAME=VALUE or NAME=V1,V2,... (e.g. sr=16000)")
        frozen[name] = np.asarray(numbers[0] if len(numbers) == 1 else numbers)
    return frozen


def _number(text: str) -> int | float:
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        return float(text)


def freeze_inputs(model: ir.Model, values: Mapping[str, Any]) -> list[str]:
    """Replace each named input of `model` with a constant holding its value (in place); returns
    one line per input saying what was frozen. Values must fit the input's dtype and shape."""
    lines = []
    for name, value in values.items():
        inputs = {t.name: t for t in model.graph.inputs}
        tensor = inputs.get(name)
        if tensor is None:
            raise EdgecError(f"--freeze-input {name}: the model has no input '{name}' (inputs: {', '.join(inputs)})")
        if any(out is tensor for out in model.graph.outputs):
            raise EdgecError(f"--freeze-input {name}: '{name}' is also a model output")
        constant = gs.Constant(name, _fitted(name, np.asarray(value), tensor))
        for reader in list(tensor.outputs):
            for i, t in enumerate(reader.inputs):
                if t is tensor:
                    reader.inputs[i] = constant
        model.graph.inputs = [t for t in model.graph.inputs if t is not tensor]
        shown = constant.values.tolist()
        lines.append(f"input '{name}' frozen to {shown} ({constant.values.dtype}); it is no longer an input")
    if lines:
        previous = model.metadata.get(METADATA_KEY)
        model.metadata[METADATA_KEY] = "; ".join(([previous] if previous else []) + lines)
    return lines


def _fitted(name: str, value: np.ndarray, tensor: gs.Variable) -> np.ndarray:
    """`value` in the input's dtype and shape; refuses what would change it (16000 as int8, 0.5
    as int64, NaN) or does not fill the shape."""
    dtype = np.dtype(tensor.dtype) if tensor.dtype is not None else np.dtype(np.float32)
    if value.dtype.kind not in "biuf":
        raise EdgecError(f"--freeze-input {name}: {value!r} is not a number")
    if dtype.kind in "biu":
        whole = np.all(np.isfinite(value)) and np.all(np.asarray(value, np.float64) == np.round(value))
        if dtype.kind == "b":
            in_range = np.all((value == 0) | (value == 1))
        else:
            info = np.iinfo(dtype)
            in_range = np.min(value) >= info.min and np.max(value) <= info.max
        if not whole or not in_range:
            raise EdgecError(f"--freeze-input {name}: {value.tolist()} does not fit the input's {dtype}")
    elif not np.all(np.isfinite(value)):
        raise EdgecError(f"--freeze-input {name}: {value.tolist()} is not finite")
    converted = value.astype(dtype)
    shape = tensor.shape
    if shape is None:
        return converted
    static = all(isinstance(d, int) and d >= 0 for d in shape)
    if static and converted.size == int(np.prod(shape, dtype=np.int64)):
        return converted.reshape(shape)
    if static and converted.size == 1:
        return np.full(shape, converted.reshape(()), dtype)
    if converted.ndim == len(shape) and all(not isinstance(d, int) or d == s for d, s in zip(shape, converted.shape)):
        return converted
    dims = "x".join(str(d) for d in shape) or "a scalar"
    raise EdgecError(f"--freeze-input {name}: {converted.size} value(s) do not fill the input's shape ({dims})")
