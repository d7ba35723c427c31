"""Running an IR model in onnxruntime, the reference runtime every check compares against."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from typing import Mapping, Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
from onnx import numpy_helper

from edgec import external_data, fingerprint, fp16_emulation, ir, unsaturated_int8
from edgec.quant import qdq

# edgec reports runtime failures itself, in one line; onnxruntime would also print them in red.
ort.set_default_logger_severity(4)

Feeds = Mapping[str, np.ndarray]


def session_options(
    optimize: bool = False, threads: int | None = None, spinning: bool = False, arena: bool = False,
    int8_fusion: bool = True,
) -> ort.SessionOptions:
    options = ort.SessionOptions()
    if not int8_fusion:
        # The Q/DQ arithmetic in float with the float fusions on: onnxruntime otherwise quantizes
        # float weights between Q/DQ pairs itself (its own rounding, not the graph's) and fused a
        # per-channel activation quantizer into a QLinearConv it then refused (PP-OCRv4 rec).
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    if not spinning:
        # Idle pool threads otherwise spin between the ops of each run: a build's own runs
        # (calibration, checks) cost CPU time, not latency. ResNet-50 Q/DQ, 8 runs: 1.48 CPU s
        # with spinning, 0.83 without, and no slower. The device runtime keeps onnxruntime's default.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # Checks run with graph optimizations off so they see the graph edgec wrote, not
    # onnxruntime's rewrite of it; deployment-style runs turn them back on.
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    options.log_severity_level = 3
    # Without the arena, activations go back to the allocator after each run instead of being
    # held by every live session at its peak (PP-OCRv4 det at 640x640: ~150 MB per session).
    options.enable_cpu_mem_arena = arena
    # The default order ran the observers edgec adds to a tensor (calibration's min/max and
    # samples, exposed outputs) late, keeping every activation alive for the whole run:
    # PicoDet at 800x608 observed in full peaked at 1.86 GB, 477 MB in priority order (the
    # model alone: 0.49 GB), and ran 1.9x faster. The order does not change any value.
    options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    if not optimize:
        # Kernels pre-pack constant weights into another GEMM layout, so folding a weight
        # computation (exactly) would change summation order and show up as a 4e-5 difference
        # in silero-vad's LSTM state. Checks compare graphs, so both sides use the plain kernels.
        options.add_session_config_entry("session.disable_prepacking", "1")
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return unsaturated_int8.configure(options)


def make_session(
    model: ir.Model | onnx.ModelProto | str | os.PathLike,
    optimize: bool = False,
    threads: int | None = None,
    spinning: bool = False,
    arena: bool = False,
    int8_fusion: bool = True,
    dequantize_weights: bool = False,
) -> ort.InferenceSession:
    """A CPU session. `dequantize_weights` (an ir.Model only): constant int8 weights go in
    dequantized (see dequantized_weights)."""
    options = session_options(optimize, threads, spinning, arena, int8_fusion)
    providers = ["CPUExecutionProvider"]
    if isinstance(model, (str, os.PathLike)):
        return ort.InferenceSession(str(model), options, providers=providers)
    if isinstance(model, ir.Model) and external_data.needed(model.graph):
        # A large model reaches onnxruntime as a file with its weights beside it; onnxruntime
        # has read them when the session exists, so the directory can go.
        with tempfile.TemporaryDirectory() as tmp:
            path = ir.save(model, os.path.join(tmp, "model.onnx"))[0]
            return ort.InferenceSession(str(path), options, providers=providers)
    if isinstance(model, ir.Model):
        return _session_reading_weights_in_place(model, options, providers, dequantize_weights)
    if unsaturated_int8.enabled(options) and unsaturated_int8.prepare(model.graph, dry_run=True):
        model = copy_of(model)
        unsaturated_int8.prepare(model.graph)  # every initializer is in the proto: copies included
    return ort.InferenceSession(model.SerializeToString(), options, providers=providers)


def copy_of(proto: onnx.ModelProto) -> onnx.ModelProto:
    copied = onnx.ModelProto()
    copied.CopyFrom(proto)
    return copied


# NumPy dtypes onnxruntime can wrap without a copy (OrtValue.ortvalue_from_numpy).
_IN_PLACE_DTYPES = frozenset(
    np.dtype(t) for t in (np.float32, np.float64, np.float16, np.int8, np.uint8, np.int16, np.uint16,
                          np.int32, np.uint32, np.int64, np.uint64, np.bool_)
)
_IN_MEMORY_LOCATION = "__in_memory__.data"  # never read: every such initializer is supplied


def _session_reading_weights_in_place(
    model: ir.Model, options, providers, dequantize: bool = False
) -> ort.InferenceSession:
    """A session whose large weights onnxruntime reads from the graph's own arrays
    (SessionOptions.add_external_initializers) instead of a serialized copy: the proto holds the
    graph only. Serializing every weight into the proto and parsing it back was ~0.3 CPU s per
    session on ResNet-50 (100 MB; 15 sessions in its -O int8 build), now ~0.03. The session keeps
    the arrays alive; they are never written in place while it lives (passes replace arrays).
    Weights of If/Loop bodies stay inline: they are not the session's top-level initializers."""
    nested = {id(t) for sub in list(ir.iter_graphs(model.graph))[1:] for t in sub.tensors().values()}

    def in_place(constant: gs.Constant) -> bool:
        return id(constant) not in nested and np.dtype(constant.dtype) in _IN_PLACE_DTYPES

    with external_data.placeholders(model.graph, in_place) as swapped:
        proto = model._proto()
    kept = _without_dead_nodes(proto.graph)
    external_data.point_outside(proto, swapped, None, _IN_MEMORY_LOCATION)
    # After point_outside: the placeholders have their real shapes again.
    copies = unsaturated_int8.prepare(proto.graph) if unsaturated_int8.enabled(options) else {}
    weights = {name: np.ascontiguousarray(c.values) for name, c in swapped.items() if name in kept}
    weights |= {copy: weights[original] for copy, original in copies.items() if original in weights}
    if dequantize:
        proto = dequantized_weights(proto, weights)
    arrays = list(weights.values())
    if arrays:
        options.add_external_initializers(list(weights), [ort.OrtValue.ortvalue_from_numpy(a) for a in arrays])
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=providers)
    session._edgec_weights = arrays  # onnxruntime reads these buffers for as long as the session lives
    return session


def _without_dead_nodes(graph: onnx.GraphProto) -> set[str]:
    """Drop the top-level nodes no output depends on, and the initializers only they read, from
    `graph` (a session's copy); returns the initializer names left. onnxruntime's optimizer folds
    such a node's DequantizeLinear of weights and then fails to attach the in-memory initializers
    ("ReplaceInitializedTensorImpl Failed to find existing initializer"): a weight-only int8
    model's original weights, left behind while quantize scored re-rounded ones."""
    nodes = list(graph.node)
    used, live = {o.name for o in graph.output}, set()
    grew = True
    while grew:  # sweeps back from the outputs: one in topological order, more if a pass left it unsorted
        grew = False
        for index in range(len(nodes) - 1, -1, -1):
            if index not in live and any(out in used for out in nodes[index].output if out):
                live.add(index)
                used |= _names_read(nodes[index])
                grew = True
    if len(live) < len(nodes):
        del graph.node[:]
        graph.node.extend(node for index, node in enumerate(nodes) if index in live)
        kept = [t for t in graph.initializer if t.name in used]
        del graph.initializer[:]
        graph.initializer.extend(kept)
    return {t.name for t in graph.initializer}


def _names_read(node: onnx.NodeProto) -> set[str]:
    """Every name `node` reads, with those its subgraphs read (If/Loop bodies read outer names)."""
    names = set(node.input)
    for body in ir.node_subgraph_protos(node):
        for inner in body.node:
            names |= _names_read(inner)
    return names


# onnxruntime's CPU arena keeps a session's activation buffers from one run to the next. Without
# it, ResNet-50's -O int8 build spent 9.9 of its 48.5 CPU s in the kernel (fresh pages for every
# large activation of every run), with it 6.5, at the same peak RSS. But the arena also holds up
# to about twice the run's peak until the session ends: PP-OCRv4's detector at 640x640 peaked at
# 2.06 GB instead of 1.45. So only runs whose activations, all summed, stay under this use it.
ARENA_ACTIVATION_BYTES = 512 << 20


def arena_pays(graph, batch: int = 1) -> bool:
    """Whether every activation of one run of `graph` (`batch` samples; symbolic dimensions read
    as 1) sums to at most ARENA_ACTIVATION_BYTES. A tensor of unknown shape counts as large as the
    largest known one."""
    known, unknown, largest = 0, 0, 0
    for tensor in graph.tensors().values():
        if not isinstance(tensor, gs.Variable):
            continue
        if tensor.shape is None or tensor.dtype is None:
            unknown += 1
            continue
        elements = batch
        for dim in tensor.shape:
            elements *= dim if isinstance(dim, int) and dim > 0 else 1
        size = elements * np.dtype(tensor.dtype).itemsize
        known, largest = known + size, max(largest, size)
    return known + unknown * largest <= ARENA_ACTIVATION_BYTES


# onnxruntime's input type strings as NumPy dtypes.
ORT_DTYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(int16)": np.int16, "tensor(int32)": np.int32,
    "tensor(int64)": np.int64, "tensor(bool)": np.bool_,
}
_ORT_FLOATS = {name: dtype for name, dtype in ORT_DTYPES.items() if np.issubdtype(dtype, np.floating)}


def run(session: ort.InferenceSession, samples: Sequence[Feeds]) -> list[dict[str, np.ndarray]]:
    """Run each sample; float inputs are cast to the precision the model takes (a model whose IO
    became float16 is still checked on the same samples)."""
    names = [o.name for o in session.get_outputs()]
    inputs = [(i.name, _ORT_FLOATS.get(i.type)) for i in session.get_inputs()]
    last = len(samples) - 1
    results = []
    for i, feeds in enumerate(samples):
        wanted = {
            name: feeds[name] if dtype is None else np.asarray(feeds[name]).astype(dtype, copy=False)
            for name, dtype in inputs
        }
        results.append(dict(zip(names, session.run(names, wanted, run_options(session, last=i == last)))))
    return results


# An arena's unused chunks go back after a session's last run: without it, DNSMOS's -O int8
# build (351 MB of activations a run) kept ~300-650 MB per arena session after the session ended
# (RSS 116 -> 1727 MB over five sessions, none alive; malloc_trim did not help), peaking at
# 2.27 GB instead of 666 MB without the arena. Shrinking after every run instead (771 MB) undid
# the arena's point, fresh pages in every run: ResNet-50's calibration run, 100 samples, 11.9
# instead of 8.9 CPU s. Only arena sessions take the option: onnxruntime refuses it on a
# session without one.
_ARENA_RUN = ort.RunOptions()
_ARENA_RUN.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")


def run_options(session: ort.InferenceSession, last: bool = True) -> ort.RunOptions | None:
    """The options of a build session's run: the arena's shrinkage on the `last` run, when the
    session has an arena."""
    return _ARENA_RUN if last and session.get_session_options().enable_cpu_mem_arena else None


# Models whose outputs run_model_shared remembers: the check before a pass, the pass's own
# judgement of its result and the check after it (quantize's recovery), and quantize's float
# graph with the three bias-correction candidates scored on the check samples.
SHARED_RUNS = 5


def run_model_shared(
    model: ir.Model, samples: Sequence[Feeds], cache: dict | None, digest: str | None = None
) -> list[dict[str, np.ndarray]]:
    """run_model, remembered in `cache` (a PassContext's) by the model's computation digest
    (edgec.fingerprint) and the very sample objects: quantize's recovery judged the quantized
    model and the float one on the check samples, then the check after the pass ran both again
    (on ResNet-18 -O int8 about 10% of the build). `digest` when the caller has it."""
    digest = digest or (fingerprint.computation(model.graph) if cache is not None else None)
    if digest is None:
        return run_model(model, samples)
    key = ("outputs", digest, tuple(id(s) for s in samples))
    if key not in cache:
        for old in [k for k in cache if isinstance(k, tuple) and k[:1] == ("outputs",)][: -(SHARED_RUNS - 1) or None]:
            del cache[old]
        cache[key] = run_model(model, samples)
    return cache[key]


def run_model(
    model: ir.Model, samples: Sequence[Feeds], optimize: bool = False, float_weights: bool | None = None
) -> list[dict[str, np.ndarray]]:
    """The model's outputs per sample; a float16 graph computes as float16 hardware does, every
    op's output rounded (edgec.fp16_emulation), not in float32 as onnxruntime's CPU provider would.
    Unoptimized runs (the checks) take int8 weights already dequantized: the same values bit for
    bit, computed once instead of in every run (see dequantized_weights). `float_weights` does
    that for an optimized run too: float kernels with their fusions, no int8 ones, no per-run
    dequantization."""
    float_weights = not optimize if float_weights is None else float_weights
    if ir.holds_float16(model.graph) and not external_data.needed(model.graph):
        proto = fp16_emulation.emulated(model.to_onnx(value_info=True))
        return run(make_session(proto, optimize=optimize, arena=arena_pays(model.graph)), samples)
    if float_weights and not external_data.needed(model.graph):
        session = make_session(
            model, optimize=optimize, arena=arena_pays(model.graph), int8_fusion=False, dequantize_weights=True
        )
        return run(session, samples)
    return run(make_session(model, optimize=optimize, arena=arena_pays(model.graph)), samples)


# The most float32 bytes dequantized_weights writes: a check session then holds the weights
# 4x larger than in int8, which is what a float model of that size needs anyway.
DEQUANTIZED_WEIGHT_BYTES = 512 << 20
_DEQUANTIZABLE = {np.dtype(t) for t in (np.int8, np.uint8, np.int16, np.uint16, np.int32)}


def dequantized_weights(proto: onnx.ModelProto, weights: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """`proto` (changed in place) with each DequantizeLinear of constants replaced by its float32
    result. With graph optimizations off, onnxruntime dequantizes every weight in every run into
    fresh buffers: ResNet-50 Q/DQ, 48 runs, 7.3 CPU s (2.1 of them page faults) against 4.7 with
    the weights dequantized once. Computed as onnxruntime's kernel does, (float)(q - zero_point)
    * scale, so the outputs are bit for bit the same (tested); blocked quantization, float16
    scales and subgraphs are left as they are. `weights`: the arrays of the proto's in-memory
    external initializers (_session_reading_weights_in_place), changed in place too: the float32
    results join them."""
    graph = proto.graph
    initializers = {i.name: i for i in graph.initializer}
    in_memory, weights = weights is not None, {} if weights is None else weights
    outputs = {o.name for o in graph.output}
    folded, kept, written = {}, [], 0

    def value(name: str) -> np.ndarray:
        return weights[name] if name in weights else numpy_helper.to_array(initializers[name])

    for node in graph.node:
        dequantizes = node.op_type == "DequantizeLinear" and node.output[0] not in outputs
        values = _dequantized(node, initializers, value, node.input[0] in weights) if dequantizes else None
        if values is None or written + values.nbytes > DEQUANTIZED_WEIGHT_BYTES:
            kept.append(node)
            continue
        folded[node.output[0]] = values
        written += values.nbytes
    if not folded:
        return proto
    del graph.node[:]
    graph.node.extend(kept)
    used = {name for node in kept for name in node.input} | outputs
    remaining = [i for i in graph.initializer if i.name in used]
    for name in [name for name in weights if name not in used]:
        del weights[name]
    del graph.initializer[:]
    graph.initializer.extend(remaining)
    for name, values in folded.items():
        if not in_memory:
            graph.initializer.append(numpy_helper.from_array(values, name))
            continue
        reference = graph.initializer.add(name=name, data_type=onnx.TensorProto.FLOAT, dims=values.shape)
        reference.data_location = onnx.TensorProto.EXTERNAL
        reference.external_data.add(key="location", value=_IN_MEMORY_LOCATION)  # never read
        weights[name] = values
    return proto


def _dequantized(node: onnx.NodeProto, initializers: dict, value, in_memory: bool = False) -> np.ndarray | None:
    """The float32 values of a DequantizeLinear of initializers (`value` reads one); None when
    not computed here. `in_memory`: its codes are the graph's own array (shareable by identity)."""
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if attributes.get("block_size") or "output_dtype" in attributes:
        return None
    if any(name not in initializers for name in node.input if name) or len(node.input) < 2:
        return None
    q = value(node.input[0])
    scale = value(node.input[1])
    zero_point = value(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if q.dtype not in _DEQUANTIZABLE or scale.dtype != np.float32 or scale.ndim > 1:
        return None
    axis = attributes.get("axis", 1)
    if _SHARED_DEQUANTIZED is None or not in_memory or q.size <= 64:
        return qdq.dequantize(q, scale, zero_point, axis)
    # The stored codes by identity (the memo holds them, so no identity is reused), the rest by value.
    key = (id(q), scale.tobytes(), None if zero_point is None else zero_point.tobytes(), axis)
    if key not in _SHARED_DEQUANTIZED:
        _SHARED_DEQUANTIZED[key] = (qdq.dequantize(q, scale, zero_point, axis), q)
    return _SHARED_DEQUANTIZED[key][0]


# While sharing_dequantized() is active: float32 weights by (codes, scale, zero point, axis).
_SHARED_DEQUANTIZED: dict | None = None


@contextmanager
def sharing_dequantized():
    """Within the block, sessions that take dequantized weights (run_model's float_weights) compute
    each rounded weight's float32 values once: quantize's candidates share their rounded weights
    (QuantizePass's weight memo), and the openvino scheme scores each of them in a session of
    float32 weights (ResNet-50: 12 sessions, 2.4 CPU s dequantizing). The values are kept until
    the block ends."""
    global _SHARED_DEQUANTIZED
    outer, _SHARED_DEQUANTIZED = _SHARED_DEQUANTIZED, {} if _SHARED_DEQUANTIZED is None else _SHARED_DEQUANTIZED
    try:
        yield
    finally:
        _SHARED_DEQUANTIZED = outer
