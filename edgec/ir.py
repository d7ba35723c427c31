"""The in-memory model: an onnx-graphsurgeon Graph plus the model-level facts ONNX keeps outside it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import shape_inference, version_converter
from onnx_graphsurgeon.importers.onnx_importer import get_onnx_tensor_dtype, get_onnx_tensor_shape
from onnx_graphsurgeon.logger import G_LOGGER

from edgec import external_data
from edgec.errors import EdgecError, ModelLoadError

# gs logs "[W] ..." lines (missing `colored`, unknown dtypes) on stdout; edgec reports for itself.
G_LOGGER.severity = G_LOGGER.ERROR

# Opset 13 is where Squeeze/Unsqueeze/Split take their axes as inputs and most ops reached their
# current form, so passes only handle one spelling of each op. 21 is the newest opset that every
# backend edgec lowers to (onnxruntime, OpenVINO, TVM's relax frontend) accepts.
MIN_OPSET = 13
MAX_OPSET = 21


@dataclass
class Model:
    """A graph plus metadata_props. The opset, IR version and producer live on the graph."""

    graph: gs.Graph
    metadata: dict[str, str] = field(default_factory=dict)
    source: str = "<memory>"

    @property
    def opset(self) -> int:
        return int(self.graph.opset)

    def to_onnx(self, value_info: bool = False) -> onnx.ModelProto:
        """The model as ONNX. Inferred shapes of intermediates are left out unless asked for:
        runtimes trust value_info when they plan memory, and ONNX inference can get If outputs
        wrong when the branches differ in rank (silero-vad), so only the interface keeps shapes."""
        if external_data.needed(self.graph):
            raise EdgecError(f"{self.source}: too large for one protobuf; write it with edgec.ir.save")
        return self._proto(value_info)

    def _proto(self, value_info: bool = False) -> onnx.ModelProto:
        proto = export_graph(self.graph, value_info)
        del proto.metadata_props[:]
        for key, value in sorted(self.metadata.items()):
            proto.metadata_props.add(key=key, value=value)
        return proto

    def copy(self) -> "Model":
        graph = self.graph.copy()
        # gs's Variable.copy() forgets a tensor's kind (sequence/optional/map become tensors).
        for original, copied in zip(iter_graphs(self.graph), iter_graphs(graph)):
            kinds = {t.name: t.type for t in original.tensors().values() if isinstance(t, gs.Variable)}
            for tensor in copied.tensors().values():
                if isinstance(tensor, gs.Variable) and tensor.name in kinds:
                    tensor.type = kinds[tensor.name]
        return Model(graph, dict(self.metadata), self.source)

    def input_specs(self) -> list[dict]:
        return [tensor_spec(t) for t in self.graph.inputs]

    def output_specs(self) -> list[dict]:
        return [tensor_spec(t) for t in self.graph.outputs]


def export_graph(graph: gs.Graph, value_info: bool = False) -> onnx.ModelProto:
    """A gs graph as the ModelProto edgec writes (see Model.to_onnx), without metadata."""
    proto = gs.export_onnx(graph, do_type_check=False)
    _hoist_shared_initializers(proto.graph)
    if not value_info:
        _drop_inferred_shapes(proto.graph, top=True)
    # At least the IR version that carries this opset: an upgraded IR-3 model would otherwise
    # still demand that every initializer is also a graph input. Older is kept where it suffices,
    # so older runtimes keep loading the file.
    needed = onnx.helper.find_min_ir_version_for(list(proto.opset_import), ignore_unknown=True)
    proto.ir_version = max(proto.ir_version if graph.ir_version else 0, needed)
    return proto


def tensor_spec(tensor: gs.Tensor) -> dict:
    dtype = tensor.dtype
    name = np.dtype(dtype).name if dtype is not None and not isinstance(dtype, int) else str(dtype)
    shape = None if tensor.shape is None else [d if isinstance(d, int) else (d or "?") for d in tensor.shape]
    return {"name": tensor.name, "dtype": name, "shape": shape}


# --- loading -------------------------------------------------------------------------------


def load(path: str | os.PathLike, input_shapes: Mapping[str, Sequence[int]] | None = None) -> Model:
    """Read an ONNX file (with its external data) into the IR, upgraded and shape-inferred."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file")
    try:
        # Weights are attached only after the proto-level work: the checker, the version
        # converter and shape inference all serialize the model, and protobuf stops at 2 GiB.
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError, but also RuntimeWarning-ish oddities
        raise ModelLoadError(f"{path}: not an ONNX model ({_first_line(exc)})") from exc
    if not proto.graph.node and not proto.graph.output:
        raise ModelLoadError(f"{path}: not an ONNX model (no graph in the file)")
    return from_proto(proto, source=str(path), base_dir=path.parent, input_shapes=input_shapes)


def from_proto(
    proto: onnx.ModelProto,
    source: str = "<memory>",
    base_dir: str | os.PathLike | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> Model:
    external = _uses_external_data(proto)
    if external:
        _check_external_files(proto, base_dir, source)
    try:
        # The checker resolves external data relative to the model file, so give it the path.
        onnx.checker.check_model(source if external else proto, full_check=False)
    except Exception as exc:
        raise ModelLoadError(f"{source}: not a valid ONNX model ({_first_line(exc)})") from exc
    proto = _to_supported_opset(proto, source)
    _symbolic_nonpositive_dims(proto.graph)
    if input_shapes:
        _set_input_shapes(proto, input_shapes, source)
    proto = _infer(proto, strip=bool(input_shapes))
    if external:
        onnx.external_data_helper.load_external_data_for_model(proto, str(base_dir))
    graph = gs.import_onnx(proto)
    metadata = {p.key: p.value for p in proto.metadata_props}
    return Model(graph, metadata, source)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


def default_opset(proto: onnx.ModelProto) -> int | None:
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    return None


def _to_supported_opset(proto: onnx.ModelProto, source: str) -> onnx.ModelProto:
    opset = default_opset(proto)
    if opset is None or MIN_OPSET <= opset <= MAX_OPSET:
        return proto
    goal = MIN_OPSET if opset < MIN_OPSET else MAX_OPSET
    try:
        converted = version_converter.convert_version(proto, goal)
    except Exception as exc:
        raise ModelLoadError(
            f"{source}: opset {opset} is outside {MIN_OPSET}..{MAX_OPSET} and the ONNX version "
            f"converter could not move it to {goal} ({_first_line(exc)})"
        ) from exc
    return converted


def _symbolic_nonpositive_dims(graph: onnx.GraphProto) -> None:
    """Converters write `dim_value: -1` (or 0) for a dynamic dimension; ONNX means a symbolic one
    by dim_param. Read as fixed, -1 refused --input-shape and made 1x3x1x1 check inputs."""
    for value in list(graph.input) + list(graph.output):
        if not value.type.HasField("tensor_type") or not value.type.tensor_type.HasField("shape"):
            continue
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value <= 0:
                dim.dim_param = f"{value.name}_dim{axis}"


def _set_input_shapes(proto: onnx.ModelProto, shapes: Mapping[str, Sequence[int]], source: str) -> None:
    inputs = {vi.name: vi for vi in proto.graph.input}
    for name, dims in shapes.items():
        if name not in inputs:
            raise EdgecError(f"--input-shape {name}: the model has no input of that name (inputs: {', '.join(inputs)})")
        shape = inputs[name].type.tensor_type.shape
        if len(shape.dim) and len(shape.dim) != len(dims):
            raise EdgecError(f"--input-shape {name}: rank {len(dims)} given, the model declares rank {len(shape.dim)}")
        for dim, want in zip(shape.dim, dims):
            if dim.HasField("dim_value") and dim.dim_value != want:
                raise EdgecError(f"--input-shape {name}: dimension {dim.dim_value} is fixed in the model, {want} given")
        del shape.dim[:]
        for want in dims:
            shape.dim.add(dim_value=int(want))


def _uses_external_data(proto: onnx.ModelProto) -> bool:
    return any(onnx.external_data_helper.uses_external_data(t) for t in _all_initializers(proto.graph))


def _subgraph_protos(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """The direct subgraphs (If branches, Loop/Scan bodies) of a GraphProto's nodes."""
    for node in graph.node:
        yield from node_subgraph_protos(node)


def node_subgraph_protos(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    """The subgraphs (If branches, a Loop/Scan body) a NodeProto holds as attributes."""
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        yield from attr.graphs


def _check_external_files(proto: onnx.ModelProto, base_dir, source: str) -> None:
    if base_dir is None:
        raise ModelLoadError(f"{source}: the model keeps weights in external files; load it from its path")
    for tensor in _all_initializers(proto.graph):
        if onnx.external_data_helper.uses_external_data(tensor):
            info = onnx.external_data_helper.ExternalDataInfo(tensor)
            if not (Path(base_dir) / info.location).is_file():
                raise ModelLoadError(f"{source}: external weight file missing: {info.location}")


def _all_initializers(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for sub in _subgraph_protos(graph):
        yield from _all_initializers(sub)


def _infer(proto: onnx.ModelProto, strip: bool = False) -> onnx.ModelProto:
    """Shape inference; `strip` drops stale value_info first (after a shape change). The proto is
    always small here: large weights are external references (see edgec.external_data)."""
    if strip:
        _strip_value_info(proto.graph)
    try:
        return shape_inference.infer_shapes(proto, strict_mode=False, data_prop=_may_propagate(proto))
    except Exception:
        # Inference is best effort: custom domains and some real-world graphs defeat it, and
        # every pass that needs a shape checks that it has one.
        return proto


def _may_propagate(proto: onnx.ModelProto) -> bool:
    """ONNX data propagation treats every 1-D tensor as a shape and materializes its values;
    on a 1-D tensor of 200M elements it exhausted 24 GB. Real shape tensors are tiny."""
    dims = [list(t.dims) for t in _all_initializers(proto.graph)]
    dims += [[d.dim_value for d in vi.type.tensor_type.shape.dim] for vi in proto.graph.input]
    return not any(len(d) == 1 and d[0] > 65536 for d in dims)


def _hoist_shared_initializers(graph: onnx.GraphProto) -> None:
    """gs writes an initializer into every subgraph that reads it, so a weight used by both If
    branches (or by a branch and its parent) is stored twice or more; silero-vad grew 40%.
    Keep one copy, in the innermost graph that encloses every reader."""
    subtrees = list(_subgraph_protos(graph))
    for sub in subtrees:
        _hoist_shared_initializers(sub)
    own = {t.name for t in graph.initializer}
    seen: dict[str, onnx.TensorProto] = {}
    counts: dict[str, int] = {}
    for sub in subtrees:
        for tensor in {t.name: t for t in _all_initializers(sub)}.values():
            counts[tensor.name] = counts.get(tensor.name, 0) + 1
            seen.setdefault(tensor.name, tensor)
    shared = {name for name, count in counts.items() if count > 1 or name in own}
    if not shared:
        return
    graph.initializer.extend(onnx.TensorProto.FromString(seen[n].SerializeToString()) for n in sorted(shared - own))
    for sub in subtrees:
        _remove_initializers(sub, shared)


def _remove_initializers(graph: onnx.GraphProto, names: set[str]) -> None:
    keep = [t for t in graph.initializer if t.name not in names]
    if len(keep) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(keep)
    for sub in _subgraph_protos(graph):
        _remove_initializers(sub, names)


def _drop_inferred_shapes(graph: onnx.GraphProto, top: bool) -> None:
    del graph.value_info[:]
    if not top:
        for output in graph.output:  # keep the element type, which subgraph outputs must declare
            if output.type.HasField("tensor_type"):
                output.type.tensor_type.ClearField("shape")
    for sub in _subgraph_protos(graph):
        _drop_inferred_shapes(sub, top=False)


def _strip_value_info(graph: onnx.GraphProto) -> None:
    del graph.value_info[:]
    for sub in _subgraph_protos(graph):
        _strip_value_info(sub)


# --- shape refresh for passes ---------------------------------------------------------------


def infer_shapes(model_or_graph: Model | gs.Graph) -> None:
    """Re-run ONNX shape inference and write the results into the graph's tensors in place."""
    graph = model_or_graph.graph if isinstance(model_or_graph, Model) else model_or_graph
    if external_data.needed(graph):
        proto = export_skeleton(graph)
    else:
        proto = external_data.skeleton(lambda: gs.export_onnx(graph, do_type_check=False), graph, _never_shape_data)[0]
    # A declared output shape is the exporter's claim, and inference stops at a contradicting one
    # (ddddocr's CRNN declares [1, seqlen] for a [T, 1, 8210] output): infer from the nodes, and
    # keep what was declared only where inference knows less.
    declared = {t.name: t.shape for t in graph.outputs}
    for output in proto.graph.output:
        if output.type.HasField("tensor_type"):
            output.type.tensor_type.ClearField("shape")
    inferred = _infer(proto, strip=True)
    _copy_shapes(graph, inferred.graph)
    for tensor in graph.outputs:
        tensor.shape = _merged_shape(tensor.shape, declared.get(tensor.name))


def _merged_shape(inferred, declared):
    """Inferred dims where inference fixed them, declared dims elsewhere (same rank); an inferred
    shape of another rank wins when it is fully known."""
    if inferred is None:
        return declared
    if declared is None:
        return inferred
    if len(inferred) != len(declared):
        return inferred if all(isinstance(d, int) and d > 0 for d in inferred) else declared
    return [i if isinstance(i, int) and i > 0 else d for i, d in zip(inferred, declared)]


def _copy_shapes(graph: gs.Graph, proto_graph: onnx.GraphProto) -> None:
    infos = {vi.name: vi for vi in list(proto_graph.value_info) + list(proto_graph.output)}
    tensors = graph.tensors()
    for name, info in infos.items():
        tensor = tensors.get(name)
        if isinstance(tensor, gs.Variable) and info.type.HasField("tensor_type"):
            tensor.dtype = get_onnx_tensor_dtype(info)
            tensor.shape = get_onnx_tensor_shape(info)
    proto_nodes = list(proto_graph.node)
    for node, proto_node in zip(graph.nodes, proto_nodes):
        for attr in proto_node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH and isinstance(node.attrs.get(attr.name), gs.Graph):
                _copy_shapes(node.attrs[attr.name], attr.g)


# --- saving ---------------------------------------------------------------------------------


def save(model: Model, path: str | os.PathLike) -> list[Path]:
    """Write the model; a large one keeps its weights in `<name>.data` beside it.

    Returns every file written, so bundles can hash them.
    """
    path = Path(path)
    if external_data.needed(model.graph):
        return external_data.save(model._proto, model.graph, path)
    onnx.save(model.to_onnx(), str(path))
    return [path]


# Ops whose constant inputs ONNX shape inference reads only for their shape and type, never for
# their values (data propagation does not go through them).
_WEIGHT_READERS = frozenset(
    ("Conv", "ConvTranspose", "Gemm", "MatMul", "DequantizeLinear", "LSTM", "GRU", "RNN", "BatchNormalization",
     "LayerNormalization", "InstanceNormalization")
)


def _never_shape_data(constant: gs.Constant) -> bool:
    """Whether only weight readers read this constant: shape inference needs its dims, not its
    values, so it can be an unwritten reference. Serializing every weight into the proto and
    back was 2.1 CPU s of ResNet-50's -O int8 (six inferences, 1.2 s of them page faults).
    Constants anything else reads keep their values: data propagation computes shapes from them
    (an all-weights skeleton once left a Reshape of oww-hey-jarvis's float16 graph shapeless)."""
    return (
        np.dtype(constant.dtype) != np.int64
        and bool(constant.outputs)
        and all(node.op in _WEIGHT_READERS for node in constant.outputs)
    )


def export_skeleton(graph: gs.Graph) -> onnx.ModelProto:
    """The graph with large weights as unwritten external references: enough for shapes."""
    return external_data.skeleton(lambda: export_graph(graph), graph)[0]


def serialized_size(model: Model) -> int:
    """Bytes of the model as saved (the .onnx file plus its weight file, for large models)."""
    if external_data.needed(model.graph):
        proto, outside = external_data.skeleton(model._proto, model.graph)
        return proto.ByteSize() + outside
    return model.to_onnx().ByteSize()


# --- graph walking --------------------------------------------------------------------------


def name_nodes(graph: gs.Graph) -> int:
    """Give every node a unique, non-empty, stable name (op and first output, both stable), so
    what is keyed by node name (fallback layers, the latency search, reports) means one node.
    TFLite imports and many converters leave every name empty. Unnamed Q/DQ nodes stay unnamed:
    nothing is keyed by them and names would grow small int8 files. Returns the nodes renamed."""
    nodes = [n for g in iter_graphs(graph) for n in g.nodes]
    taken: set[str] = set()
    keep: set[int] = set()
    for node in nodes:
        if node.name and node.name not in taken:
            taken.add(node.name)
            keep.add(id(node))
    renamed = 0
    for node in nodes:
        if id(node) in keep or (not node.name and node.op in ("QuantizeLinear", "DequantizeLinear")):
            continue
        base = f"{node.op}:{node.outputs[0].name}" if node.outputs else node.op
        name, suffix = base, 1
        while name in taken:
            name, suffix = f"{base}_{suffix}", suffix + 1
        node.name = name
        taken.add(name)
        renamed += 1
    return renamed


def iter_graphs(graph: gs.Graph) -> Iterator[gs.Graph]:
    """The graph and every subgraph (If/Loop/Scan bodies), outermost first."""
    yield graph
    for node in graph.nodes:
        for sub in node.subgraphs():
            yield from iter_graphs(sub)


def has_subgraphs(graph: gs.Graph) -> bool:
    """Whether any node of `graph` carries a body (If/Loop/Scan)."""
    return any(next(node.subgraphs(), None) is not None for node in graph.nodes)


def iter_nodes(graph: gs.Graph) -> Iterator[gs.Node]:
    for g in iter_graphs(graph):
        yield from g.nodes


def constants(graph: gs.Graph) -> dict[int, gs.Constant]:
    """Every distinct Constant (initializer) used anywhere in the graph, keyed by identity."""
    found: dict[int, gs.Constant] = {}
    for g in iter_graphs(graph):
        for tensor in g.tensors().values():
            if isinstance(tensor, gs.Constant):
                found[id(tensor)] = tensor
    return found


def weights(graph: gs.Graph) -> list[np.ndarray]:
    """Every constant array: initializers, and the values of Constant nodes (which some exporters,
    e.g. silero-vad's, use for all weights)."""
    arrays = [c.values for c in constants(graph).values()]
    for node in iter_nodes(graph):
        value = node.attrs.get("value") if node.op == "Constant" else None
        if isinstance(value, gs.Constant):
            arrays.append(value.values)
    return arrays


def param_count(graph: gs.Graph) -> int:
    """Elements in floating-point constants (the trainable weights, not shape constants), plus
    integer weights stored quantized (read by DequantizeLinear) or shared (indices into a
    codebook); quantization scales, zero points and codebooks are not parameters."""
    from edgec.compress import shared

    total = sum(int(a.size) for a in weights(graph) if np.issubdtype(a.dtype, np.floating))
    for const in constants(graph).values():
        if _is_quantization_param(const) and np.issubdtype(const.values.dtype, np.floating):
            total -= int(const.values.size)
        elif not np.issubdtype(const.values.dtype, np.floating) and _is_quantized_weight(const):
            total += int(const.values.size)
    for g in iter_graphs(graph):
        for weight in shared.shared_weights(g):
            total += int(weight.indices.values.size) - int(weight.codebook.values.size)
    return total


def _is_quantization_param(const: gs.Constant) -> bool:
    return bool(const.outputs) and all(
        node.op in ("QuantizeLinear", "DequantizeLinear") and node.inputs[0] is not const for node in const.outputs
    )


def _is_quantized_weight(const: gs.Constant) -> bool:
    # int8/uint8 initializers feeding DequantizeLinear are weights stored quantized.
    return any(node.op == "DequantizeLinear" and node.inputs[0] is const for node in const.outputs)


def param_bytes(graph: gs.Graph) -> int:
    return sum(int(a.nbytes) for a in weights(graph))


def port_layout(model: Model, tensor_name: str) -> str | None:
    """Channels-first when an input feeds a convolution (through Q/DQ or Cast, if any): ONNX's
    convention, recorded so a device-side caller knows how to lay out its buffers."""
    readers = {}
    for node in iter_nodes(model.graph):
        for t in node.inputs:
            readers.setdefault(t.name, []).append(node)
    frontier, seen = [tensor_name], set()
    while frontier:
        name = frontier.pop()
        seen.add(name)
        for node in readers.get(name, []):
            if node.op in ("Conv", "ConvTranspose") and node.inputs[0].name == name:
                rank = len(model.graph.tensors()[tensor_name].shape or ())
                return {3: "NCW", 4: "NCHW", 5: "NCDHW"}.get(rank)
            if node.op in ("QuantizeLinear", "DequantizeLinear", "Cast", "Identity"):
                frontier.extend(o.name for o in node.outputs if o.name not in seen)
    return None


def quantizes_activations(graph: gs.Graph) -> bool:
    """Whether any QuantizeLinear rounds a computed tensor: int8 compute, not only int8-stored
    weights read through DequantizeLinear (a weight-only int8 TFLite import, onnxruntime's
    weight-only exports)."""
    return any(
        n.op == "QuantizeLinear" and n.inputs and not isinstance(n.inputs[0], gs.Constant) for n in iter_nodes(graph)
    )


# Operators that compute in integers from quantized inputs, as onnxruntime's quantize_dynamic
# and QOperator exports write them (ddddocr's CRNN): no Q/DQ pairs, but int8 numerics.
INTEGER_ARITHMETIC_OPS = {
    "DynamicQuantizeLinear", "ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul",
    "DynamicQuantizeLSTM", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QLinearAdd", "QLinearMul",
}


def has_integer_arithmetic(graph: gs.Graph) -> bool:
    return any(n.op in INTEGER_ARITHMETIC_OPS for n in iter_nodes(graph))


def has_quantized_numerics(graph: gs.Graph) -> bool:
    """Q/DQ pairs or integer-arithmetic operators anywhere: a runtime may round differently from
    onnxruntime there, so checks hold it to a quantized budget, not float32's."""
    qdq = any(n.op in ("QuantizeLinear", "DequantizeLinear") for n in iter_nodes(graph))
    return qdq or has_integer_arithmetic(graph)


def compute_precision(graph: gs.Graph) -> str:
    """What a graph computes in, as backends plan their artifact: int8 when it has Q/DQ, fp16
    when it holds float16 tensors (convert-fp16's weights and casts), fp32 otherwise."""
    if any(n.op in ("QuantizeLinear", "DequantizeLinear") for n in iter_nodes(graph)):
        return "int8"
    return "fp16" if holds_float16(graph) else "fp32"


def holds_float16(graph: gs.Graph) -> bool:
    """Whether any tensor (weight or activation, subgraphs included) is float16."""
    for g in iter_graphs(graph):
        for t in g.tensors().values():
            dtype = t.values.dtype if isinstance(t, gs.Constant) else t.dtype
            if dtype is not None and not isinstance(dtype, int) and np.dtype(dtype) == np.float16:
                return True
    return False
