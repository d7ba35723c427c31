"""The IR through Relax to a compiled TVM module: import with static shapes, fuse, compile, link model.so."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path


from edgec import ir
from edgec.errors import EdgecError

# Ops the check passes walk through from an input to the Conv that fixes its layout.


@dataclass
class Imported:
    """The Relax module and its ports (name, shape, dtype, layout), shapes all static."""

    mod: object  # tvm.IRModule
    inputs: list[dict]
    outputs: list[dict]
    notes: list[str] = field(default_factory=list)


def import_model(model: ir.Model) -> Imported:
    """IR -> ONNX -> Relax, weights embedded as constants. TVM compiles static shapes, so a
    symbolic dimension (a batch) becomes 1, which is what the checks and `edgec bench` feed."""
    from tvm.relax.frontend.onnx import from_onnx

    require_converters(model)
    notes, inputs = [], []
    for spec in model.input_specs():
        shape = [d if isinstance(d, int) else 1 for d in spec["shape"] or ()]
        fixed = [str(d) for d in spec["shape"] or () if not isinstance(d, int)]
        if fixed:
            notes.append(
                f"input '{spec['name']}': dimension(s) {', '.join(fixed)} fixed to 1 (TVM builds static shapes)"
            )
        inputs.append({"name": spec["name"], "shape": shape, "dtype": spec["dtype"]})
    try:
        with native_warnings_dropped():  # the importer folds constant Gathers through TOPI too
            mod = from_onnx(
                model.to_onnx(),
                shape_dict={p["name"]: p["shape"] for p in inputs},
                dtype_dict={p["name"]: p["dtype"] for p in inputs},
                opset=model.opset,
            )
    except Exception as exc:
        raise EdgecError(f"TVM's ONNX importer failed: {type(exc).__name__}: {_first_line(exc)}") from exc
    if ir.compute_precision(model.graph) == "fp16":
        from edgec.backends.tvm import fp16

        mod = fp16.with_fp32_arithmetic(mod)
    returned = mod["main"].ret_ty
    types = list(returned.fields) if hasattr(returned, "fields") else [returned]
    outputs = [
        {"name": spec["name"], "shape": [int(d) for d in ty.shape.values], "dtype": str(ty.dtype)}
        for spec, ty in zip(model.output_specs(), types)
    ]
    for port in inputs + outputs:
        port["layout"] = ir.port_layout(model, port["name"])
    return Imported(mod, inputs, outputs, notes)


def require_converters(model: ir.Model, unrolled: tuple[str, ...] = ()) -> None:
    """Raise EdgecError naming the operators TVM's ONNX importer has no converter for (the
    `unrolled` ones are rewritten before it sees them)."""
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    known = set(_get_convert_map()) | {"If", "Constant"} | set(unrolled)
    missing = sorted({n.op for n in ir.iter_nodes(model.graph)} - known)
    if missing:
        raise EdgecError(f"TVM's ONNX importer (Relax) has no converter for: {', '.join(missing)}")


def fuse(mod, tvm_target, database=None):
    """Relax's tuning-ready form: ops legalized to TIR, constants folded (so int8 weights behind a
    DequantizeLinear are stored as the float32 they dequantize to), neighbours fused into one
    kernel each; with a MetaSchedule database, its schedules are applied to those kernels."""
    import tvm
    from tvm import relax

    passes = [
        relax.transform.DecomposeOpsForInference(),
        relax.transform.CanonicalizeBindings(),
        relax.get_pipeline("zero"),
    ]
    with tvm.target.Target(tvm_target), native_warnings_dropped():
        if database is None:
            return tvm.transform.Sequential(passes)(mod)
        with database:
            return tvm.transform.Sequential(passes)(mod)


@contextlib.contextmanager
def native_warnings_dropped():
    """TVM's C++ logs a warning per legalized Gather ("Fast mode segfaults when there are
    out-of-bounds indices"), one per step of an unrolled LSTM, straight to file descriptor 2.
    Its lines are kept aside and everything but those warnings is written back afterwards."""
    import sys
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as kept:
        os.dup2(kept.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            kept.seek(0)
            for line in kept.read().decode(errors="replace").splitlines(keepends=True):
                if ": Warning: " not in line:
                    sys.stderr.write(line)
            sys.stderr.flush()


def compile_module(fused, tvm_target):
    """tvm.compile with the target as a dict (TVM 0.27 rejects target strings)."""
    import tvm

    try:
        with _cuda_compiled_by_nvcc(tvm_target), native_warnings_dropped():
            return tvm.compile(fused, target=tvm.target.Target(tvm_target))
    except Exception as exc:
        raise EdgecError(f"TVM could not compile the model: {type(exc).__name__}: {_first_line(exc)}") from exc


@contextlib.contextmanager
def _cuda_compiled_by_nvcc(tvm_target: dict):
    """TVM compiles CUDA kernels with NVRTC unless told otherwise, and NVRTC needs the
    cuda-bindings package; nvcc (which codegen.cuda_blockers found) writes a fatbin instead."""
    if tvm_target.get("kind") != "cuda" or "TVM_CUDA_COMPILE_MODE" in os.environ:
        yield
        return
    os.environ["TVM_CUDA_COMPILE_MODE"] = "nvcc"
    try:
        yield
    finally:
        del os.environ["TVM_CUDA_COMPILE_MODE"]


def export(executable, path: Path, fcompile) -> None:
    """Link the shared library; the cross compiler for another architecture, TVM's g++ otherwise."""
    try:
        if fcompile is None:
            executable.export_library(str(path))
        else:
            executable.export_library(str(path), fcompile=fcompile)
    except Exception as exc:
        raise EdgecError(f"linking {path.name} failed: {type(exc).__name__}: {_first_line(exc)}") from exc


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # TVM's errors end with the message after a C++ backtrace; the last line says what went wrong.
    return (lines[-1] if lines else type(exc).__name__)[:300]
