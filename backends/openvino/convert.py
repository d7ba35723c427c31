"""The IR as an OpenVINO model: written as ONNX, read by OpenVINO's ONNX frontend, batch fixed."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from edgec import ir
from edgec.errors import EdgecError
from edgec.graph_utils import NameGen

FLOAT, FLOAT16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16


def to_openvino(model: ir.Model, widen_fp16: bool):
    """An ov.Model computing what `model` computes, with the IR's input and output names.

    `widen_fp16`: a convert-fp16 graph (float16 weights and activations, Casts at the edges)
    comes back to float32 compute with its float16 weights as exact float32 values, so that
    save_model's compress_to_fp16 writes them as OpenVINO's own fp16 IR does (float16
    constants, decompressed at load) and the device picks the precision it computes in."""
    import openvino as ov

    if widen_fp16:
        model = model.copy()
        widen_float16(model.graph)
    with tempfile.TemporaryDirectory(prefix="edgec-openvino-") as tmp:
        path = ir.save(model, Path(tmp) / "model.onnx")[0]
        try:
            converted = ov.convert_model(str(path), input=_static_batch(model))
        except Exception as exc:  # OpenVINO raises its own exception types, all multi-line
            raise EdgecError(f"openvino: cannot convert the model: {conversion_problem(exc)}") from exc
    _keep_names(converted, model)
    return converted


def conversion_problem(exc: BaseException) -> str:
    """One line out of OpenVINO's multi-line conversion report: the operators it has no rule
    for or failed on (with its reason), else the first line that says something."""
    text = str(exc)
    problems = []
    missing = re.search(r"No conversion rule found for operations: ([^\n]+)", text)
    if missing:
        problems.append(f"no OpenVINO conversion rule for {missing.group(1).strip()}")
    failed = re.search(r"Conversion is failed for: ([^\n]+)", text)
    if failed:
        reason = re.search(r"While validating ONNX node [^:]*: ([^\n]+)", text)
        problems.append(
            f"OpenVINO failed to convert {failed.group(1).strip()}" + (f" ({reason.group(1)})" if reason else "")
        )
    if problems:
        return "; ".join(problems)[:300]
    lines = [ln.strip(" -:") for ln in text.splitlines()]
    useful = [ln for ln in lines if ln and not ln.startswith(("Check ", "Exception from", "FrontEnd API failed"))]
    return (useful or lines or [type(exc).__name__])[0][:300]


def _keep_names(converted, model: ir.Model) -> None:
    """The runner and the manifest address ports by the IR's names; the ONNX frontend keeps them
    as tensor names, in the IR's order (checked, and added where a port lost its name)."""
    for kind, ports, specs in (
        ("inputs", converted.inputs, model.input_specs()),
        ("outputs", converted.outputs, model.output_specs()),
    ):
        if len(ports) != len(specs):
            raise EdgecError(f"openvino: the converted model has {len(ports)} {kind}, the IR {len(specs)}")
        for port, spec in zip(ports, specs):
            if spec["name"] not in port.get_names():
                port.get_tensor().add_names({spec["name"]})


def dynamic_batch_inputs(model: ir.Model) -> list[str]:
    """Inputs whose leading (batch) dimension the IR leaves unknown."""
    return [s["name"] for s in model.input_specs() if s["shape"] and not _known(s["shape"][0])]


def _static_batch(model: ir.Model) -> dict[str, list[int]]:
    """Input shapes with a dynamic batch dimension as 1, as the check samples and the benchmark
    feed it: the frontend then folds the shape computations, the CPU plugin plans static shapes
    (6-20% faster on LeNet-5 and MobileNetV2 at batch 1), and the MYRIAD plugin takes nothing
    else; an application can still model.reshape() after loading. Other unknown dimensions
    stay dynamic (-1)."""
    shapes = {}
    for spec in model.input_specs():
        if spec["shape"]:
            dims = [d if _known(d) else -1 for d in spec["shape"]]
            shapes[spec["name"]] = [1 if dims[0] == -1 else dims[0], *dims[1:]]
    return shapes


def _known(dim) -> bool:
    return isinstance(dim, int) and dim >= 0


def widen_float16(graph: gs.Graph) -> None:
    """Undo convert-fp16's typing in place: float16 constants become (exactly equal) float32
    ones, Casts to float16 cast to float32, float16 tensors are float32. Graph inputs and
    outputs keep their dtype (convert-fp16{io=fp16}) behind a Cast."""
    io = {id(t) for t in graph.inputs + graph.outputs}
    for sub in ir.iter_graphs(graph):
        for node in sub.nodes:
            if node.op == "Cast" and node.attrs.get("to") == FLOAT16:
                node.attrs["to"] = FLOAT
            for value in node.attrs.values():  # Constant / ConstantOfShape values
                if isinstance(value, gs.Constant) and value.values.dtype == np.float16:
                    _widen(value)
        for tensor in sub.tensors().values():
            if isinstance(tensor, gs.Constant) and tensor.values.dtype == np.float16:
                _widen(tensor)
            elif _is_half(tensor) and id(tensor) not in io:
                tensor.dtype = np.float32
    _cast_half_io(graph)


# Smaller constants (scalars, shapes' companions) stay float32: nothing to gain.
HALF_MIN_ELEMENTS = 16


def _float32_constants(model):
    import openvino as ov

    for op in list(model.get_ops()):
        if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.f32:
            values = op.get_data()
            if values.size >= HALF_MIN_ELEMENTS:
                yield op, values, np.array_equal(values.astype(np.float16).astype(np.float32), values)


def keeps_float32_weights(model) -> bool:
    """Whether some float32 constant of a widened convert-fp16 model holds values float16 does
    not: the weights of layers convert-fp16 kept in float32 for accuracy."""
    return any(not exact for _, _, exact in _float32_constants(model))


def half_exact_constants(model) -> int:
    """In place: every float32 constant whose values float16 holds exactly becomes a float16
    constant read through Convert; the others stay float32. Returns how many were halved.
    save_model's compress_to_fp16 would halve them all, also the weights of the layers
    convert-fp16 kept in float32: PP-OCRv4's detector (38 layers nearest the output kept)
    ran 20.6 dB from float on OpenVINO where its IR was 27.4 (random inputs); halved this way,
    31.2. (compress_to_fp16 also marks its Converts as decompression, which Python cannot.)"""
    import openvino as ov
    import openvino.opset13 as ops

    halved = 0
    for op, values, exact in _float32_constants(model):
        if exact:
            op.output(0).replace(ops.convert(ops.constant(values.astype(np.float16)), ov.Type.f32).output(0))
            halved += 1
    return halved


def _widen(const: gs.Constant) -> None:
    const.values = const.values.astype(np.float32)
    const.export_dtype = None  # gs would still export the values as float16


def _is_half(tensor: gs.Tensor) -> bool:
    return isinstance(tensor, gs.Variable) and tensor.dtype is not None and tensor.dtype == np.float16


def _redirect(old: gs.Tensor, new: gs.Tensor) -> None:
    """Every reader of `old` reads `new` instead."""
    for reader in list(old.outputs):
        for i, tensor in enumerate(reader.inputs):
            if tensor is old:
                reader.inputs[i] = new


def _cast_half_io(graph: gs.Graph) -> None:
    names = NameGen(graph)
    for tensor in [t for t in graph.inputs if _is_half(t)]:
        wide = gs.Variable(names(f"{tensor.name}_float32"), np.float32, tensor.shape)
        _redirect(tensor, wide)
        graph.nodes.append(gs.Node("Cast", names(f"{tensor.name}_widen"), {"to": FLOAT}, [tensor], [wide]))
    for tensor in [t for t in graph.outputs if _is_half(t) and t.inputs]:
        wide = gs.Variable(names(f"{tensor.name}_float32"), np.float32, tensor.shape)
        producer = tensor.inputs[0]
        producer.outputs[producer.outputs.index(tensor)] = wide
        _redirect(tensor, wide)
        graph.nodes.append(gs.Node("Cast", names(f"{tensor.name}_narrow"), {"to": FLOAT16}, [wide], [tensor]))
    graph.toposort(recurse_subgraphs=False)
