"""Which channels of a network must go together, and how every weight is cut when they go.

Structured pruning removes output channels of a layer. Every tensor those channels reach one to
one (activations, BatchNormalization, pooling, depthwise convolutions, both sides of a residual
Add) loses the same channels, and every layer that reads them loses the matching input slice of
its weight. `analyze` finds these coupled sets ("groups") as the connected components of a
networkx graph over tensors; `apply` cuts the constants of each group down to the channels it
keeps. Which channels to keep is the pruning pass's decision (edgec.passes.prune.prune_channels).

A group whose channels cannot change safely is pinned: it is read by an op this analysis does not
understand, it is (or feeds) a graph output, a subgraph reads it, or a layer in it was skipped.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Mapping

import networkx as nx
import numpy as np
import onnx_graphsurgeon as gs

from edgec import ir
from edgec.graph_utils import NameGen, constant_value, is_graph_output, set_constant_input

# What a cut does to the layer that owns the constant.
OUTPUT = "output"  # a producer's weight or bias along its output channels
PARAM = "param"  # per-channel constants: BatchNorm, depthwise kernels, broadcast operands
INPUT = "input"  # a consumer's weight along the features it reads

# Ops that compute every element (or every channel plane) on its own, so channel c of the output
# depends on channel c of the input only.
PER_ELEMENT_OPS = frozenset(
    "Relu LeakyRelu Elu Selu Celu Sigmoid HardSigmoid HardSwish Tanh Softplus Softsign Mish Gelu Erf "
    "Abs Neg Exp Log Sqrt Reciprocal Floor Ceil Round Sign Sin Cos ThresholdedRelu Identity Dropout Cast Clip".split()
)
# Pooling works on the planes behind axis 1 (NCHW), one channel at a time.
SPATIAL_OPS = frozenset("MaxPool AveragePool LpPool GlobalAveragePool GlobalMaxPool GlobalLpPool".split())
# Elementwise ops with numpy broadcasting: activations read together are coupled channel by channel.
BROADCASTING_OPS = frozenset("Add Sub Mul Div Max Min Sum Mean Pow PRelu".split())


@dataclass(eq=False)
class Cut:
    """One constant input of a node, cut along `axis` to the kept channels of a group."""

    node: gs.Node
    index: int  # which input of the node
    axis: int
    role: str  # OUTPUT, PARAM or INPUT
    block: int = 1  # elements per channel along the axis: H*W where a Flatten made C x H x W features


@dataclass(eq=False)
class Group:
    """Tensors whose channel dimension must shrink together, and everything cut when it does."""

    id: int
    channels: int
    tensors: list[gs.Variable]
    producers: list[gs.Node]  # Conv/Gemm/MatMul layers whose output channels these are
    cuts: list[Cut]
    depthwise: list[gs.Node]  # their `group` attribute is the channel count
    reshapes: list[tuple[gs.Node, int, int]]  # (Reshape, position in its shape, block): a flatten to C*block
    flattened: list[gs.Variable]  # Flatten/Reshape outputs holding these channels as blocks of features
    # A Concat output: its inputs' channels in order, as (group, count); None for an untracked input.
    segments: list[tuple[Group | None, int]] | None = None
    pinned: list[str] = field(default_factory=list)  # why the channels cannot change

    @property
    def name(self) -> str:
        if self.producers:
            return self.producers[0].name or self.producers[0].outputs[0].name
        return self.tensors[0].name

    @property
    def prunable(self) -> bool:
        """The pass may choose channels to remove here (a Concat output follows its inputs)."""
        return bool(self.producers) and not self.pinned and self.segments is None and self.channels > 1


@dataclass
class Analysis:
    groups: list[Group]
    group_of: dict[str, Group]  # tensor name -> its group

    def prunable(self) -> list[Group]:
        return [g for g in self.groups if g.prunable]


def analyze(graph: gs.Graph, skip: tuple[str, ...] = ()) -> Analysis:
    """The channel groups of the main graph. Needs inferred shapes (ir.infer_shapes)."""
    walk = _Walk(graph, skip)
    for node in _topological(graph):
        walk.visit(node)
    walk.pin_boundaries()
    return walk.groups()


def kept_channels(analysis: Analysis, chosen: Mapping[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Every group's kept channels, sorted: `chosen` for the groups named there, all channels for
    the rest, and for a Concat output its inputs' kept channels at their offsets."""
    for group_id in chosen:
        group = next(g for g in analysis.groups if g.id == group_id)
        if not group.prunable:
            raise ValueError(f"channel group '{group.name}' cannot be pruned: {', '.join(group.pinned) or 'no layer'}")
    kept: dict[int, np.ndarray] = {}

    def resolve(group: Group) -> np.ndarray:
        if group.id not in kept:
            if group.segments is None:
                kept[group.id] = np.sort(np.asarray(chosen.get(group.id, np.arange(group.channels)), np.int64))
            else:
                parts, offset = [], 0
                for segment, count in group.segments:
                    parts.append(offset + (np.arange(count) if segment is None else resolve(segment)))
                    offset += count
                kept[group.id] = np.concatenate(parts).astype(np.int64)
        return kept[group.id]

    for group in analysis.groups:
        resolve(group)
    return kept


def feature_positions(channels: np.ndarray, block: int) -> np.ndarray:
    """Positions along a cut axis of the given channels, each `block` consecutive features wide."""
    channels = np.asarray(channels, np.int64)
    return (channels[:, None] * block + np.arange(block)).ravel()


def apply(graph: gs.Graph, analysis: Analysis, kept: Mapping[int, np.ndarray]) -> None:
    """Cut every group down to its kept channels (see kept_channels). The shapes of the tensors
    that shrank are cleared; the caller re-runs shape inference."""
    names = NameGen(graph)
    for group in analysis.groups:
        keep = kept[group.id]
        if group.pinned or len(keep) == group.channels:
            continue
        for cut in group.cuts:
            tensor = cut.node.inputs[cut.index]
            value = np.take(constant_value(tensor), feature_positions(keep, cut.block), axis=cut.axis)
            # A constant that another node reads too is copied, never cut under that node.
            set_constant_input(cut.node, cut.index, value, names, f"{tensor.name}_pruned")
        for node in group.depthwise:
            node.attrs["group"] = len(keep)
        for node, position, block in group.reshapes:
            shape = constant_value(node.inputs[1]).copy()
            shape[position] = len(keep) * block
            node.inputs[1] = gs.Constant(names(f"{node.inputs[1].name}_pruned"), shape)
        for tensor in group.tensors + group.flattened:
            tensor.shape = None


# --- compensation: a removed channel's mean moves into its readers' biases --------------------
#
# Without fine-tuning, removing a channel also removes its average contribution to every layer
# that reads it. After BatchNorm is folded into the conv that contribution is large: a weak
# channel's activation is often nearly constant (relu6 of its bias plus a little), so its readers
# lose a constant offset (MobileNetV2 on Fashion-MNIST: cosine 0.71 at ratio 0.1). Adding
# W[:, removed] @ mean(removed) to each reader's bias puts the offset back.
#
# Heads (the last weighted layers before a graph output) are left alone. Pruning everything
# before them shrinks their output (LeNet-5 at ratio 0.5: logits at 0.12-0.26 of their scale), and
# restoring the mean of shrunk logits adds most of the average logit vector as a class prior:
# predictions collapse onto the classes with the largest average logits (top-1 agreement 0.71
# without compensation, 0.32 with it at the head, 0.75 with it everywhere else).

WEIGHTED_OPS = frozenset(("Conv", "Gemm", "MatMul"))


def compensation_reads(graph: gs.Graph, analysis: Analysis, kept: Mapping[int, np.ndarray]) -> dict[str, int]:
    """What `compensate` needs measured: the input of every layer it changes, with the axis of
    its features (channels for a Conv, the last axis for Gemm/MatMul)."""
    return {cut.node.inputs[0].name: _feature_axis(cut.node) for _, _, cut in _compensated(graph, analysis, kept)}


def compensate(
    graph: gs.Graph, analysis: Analysis, kept: Mapping[int, np.ndarray], means: Mapping[str, np.ndarray]
) -> list[gs.Node]:
    """Before `apply`: add to the bias of every layer that loses an input slice (heads excepted)
    what the removed features contribute at their mean. `means` holds, per tensor named by
    compensation_reads, the mean of each feature over samples (over batch and positions, with a
    Flatten's H*W block features each on its own). Returns the layers whose bias changed; a Gemm
    or Conv without one gets one, cut with its output channels like any other bias, and a MatMul
    gets a bias Add.

    Exact when the removed features are constant, for Gemm/MatMul. A Conv sums its kernel over
    the removed channels as if every kernel position read the mean, which is only true away from
    the zero-padded borders: there some positions read padding instead, and the bias is off."""
    names = NameGen(graph)
    changed = []
    for group, removed, cut in _compensated(graph, analysis, kept):
        mean = means.get(cut.node.inputs[0].name)
        if mean is None or mean.shape != (group.channels * cut.block,):
            continue
        positions = feature_positions(removed, cut.block)
        weight = np.take(constant_value(cut.node.inputs[cut.index]).astype(np.float64), positions, axis=cut.axis)
        # A Conv reads each input channel through every kernel position: (out, in, *kernel).
        weight = weight.sum(axis=tuple(range(2, weight.ndim)))
        contribution = np.tensordot(mean[positions].astype(np.float64), weight, axes=([0], [cut.axis]))
        _add_to_bias(graph, cut.node, contribution, analysis.group_of.get(cut.node.outputs[0].name), names)
        changed.append(cut.node)
    return changed


def _compensated(graph: gs.Graph, analysis: Analysis, kept: Mapping[int, np.ndarray]):
    """(group, its removed channels, a reader's input cut) for every reader compensate changes."""
    for group in analysis.groups:
        if group.pinned or len(kept[group.id]) == group.channels:
            continue  # apply leaves it whole
        removed = np.setdiff1d(np.arange(group.channels), kept[group.id])
        for cut in group.cuts:
            if cut.role == INPUT and not _is_head(graph, cut.node):
                yield group, removed, cut


def _is_head(graph: gs.Graph, node: gs.Node) -> bool:
    """Whether `node`'s output reaches a graph output without passing another weighted layer."""
    pending, seen = list(node.outputs), set()
    while pending:
        tensor = pending.pop()
        if is_graph_output(graph, tensor):
            return True
        for reader in tensor.outputs:
            if reader.op not in WEIGHTED_OPS and id(reader) not in seen:
                seen.add(id(reader))
                pending.extend(reader.outputs)
    return False


def _feature_axis(node: gs.Node) -> int:
    return 1 if node.op == "Conv" else -1  # a Gemm reading channels has transA=0: (batch, features)


def _add_to_bias(graph: gs.Graph, node: gs.Node, contribution: np.ndarray, own: Group | None, names: NameGen) -> None:
    """Add `contribution` (one value per output channel) to what `node` adds after its product."""
    dtype = constant_value(node.inputs[1]).dtype
    has_bias = len(node.inputs) > 2 and not node.inputs[2].is_empty()
    base = f"{node.name or node.outputs[0].name}_compensated"
    if node.op == "Conv":
        bias = constant_value(node.inputs[2]) if has_bias else np.zeros(len(contribution))
        set_constant_input(node, 2, (bias + contribution).astype(dtype), names, base)
        _cut_with_outputs(own, node, 2, 0)
    elif node.op == "Gemm":
        # Y = alpha * A @ B + beta * C: the new C holds beta * C and the contribution, so beta = 1.
        alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
        c = beta * constant_value(node.inputs[2]).astype(np.float64) if has_bias else 0.0
        c = np.asarray(c + alpha * contribution)
        node.attrs["beta"] = 1.0
        set_constant_input(node, 2, c.astype(dtype), names, base)
        _cut_with_outputs(own, node, 2, c.ndim - 1)  # a scalar C grew to one value per channel
    else:
        _bias_add_after(graph, node, contribution.astype(dtype), own, names, base)


def _bias_add_after(graph: gs.Graph, node: gs.Node, bias: np.ndarray, own: Group | None, names, base) -> None:
    """A MatMul has no bias: an Add after it gets one. Its channels are the last axis, along
    which a 1-D bias broadcasts. The MatMul writes a new tensor so the Add writes the old one:
    its readers, and the analysis that tracks it by name, stay as they were."""
    out = node.outputs[0]
    product = gs.Variable(names(f"{out.name}_product"), dtype=out.dtype)
    node.outputs[0] = product
    add = gs.Node("Add", names(base), inputs=[product, gs.Constant(names(f"{base}_bias"), bias)], outputs=[out])
    graph.nodes.insert(next(i for i, n in enumerate(graph.nodes) if n is node) + 1, add)
    _cut_with_outputs(own, add, 1, 0, PARAM)


def _cut_with_outputs(own: Group | None, node: gs.Node, index: int, axis: int, role: str = OUTPUT) -> None:
    """A bias compensate made (or grew to one value per channel) is cut with `own`, the group of
    the layer's output channels, unless a cut already covers it."""
    if own is None or own.channels <= 1 or any(c.node is node and c.index == index for c in own.cuts):
        return
    own.cuts.append(Cut(node, index, axis, role))


# --- the walk over the graph -----------------------------------------------------------------


def _topological(graph: gs.Graph) -> list[gs.Node]:
    """The nodes producers first (the model's own order where that is valid), without
    reordering the graph itself: the walk needs every input's channels settled first."""
    made_by = {id(t): i for i, node in enumerate(graph.nodes) for t in node.outputs}
    dag = nx.DiGraph()
    dag.add_nodes_from(range(len(graph.nodes)))
    for i, node in enumerate(graph.nodes):
        dag.add_edges_from((made_by[id(t)], i) for t in node.inputs if id(t) in made_by and made_by[id(t)] != i)
    return [graph.nodes[i] for i in nx.lexicographical_topological_sort(dag)]


def _shape(tensor: gs.Tensor) -> list | None:
    value = constant_value(tensor)
    if value is not None:
        return list(value.shape)
    return None if tensor.shape is None else list(tensor.shape)


def _rank(tensor: gs.Tensor) -> int | None:
    shape = _shape(tensor)
    return None if shape is None else len(shape)


def _static(dim) -> int | None:
    return int(dim) if isinstance(dim, (int, np.integer)) and dim >= 0 else None


def _is_scalar(tensor: gs.Tensor) -> bool:
    """An absent optional input, or one element: nothing per channel about it."""
    if tensor.is_empty():
        return True
    shape = _shape(tensor)
    return shape is not None and all(_static(d) == 1 for d in shape)


def _label(node: gs.Node) -> str:
    return f"{node.op} '{node.name}'" if node.name else node.op


class _Walk:
    """One pass over the nodes in topological order. A tensor is tracked (has a channel axis)
    when its channels descend one to one from a producer's output channels or a Concat of them;
    coupled tracked tensors are joined by an edge of `links`, whose components become groups."""

    def __init__(self, graph: gs.Graph, skip: tuple[str, ...]):
        self.graph = graph
        self.skip = set(skip)
        self.links = nx.Graph()
        self.axis: dict[str, int] = {}
        self.tensors: dict[str, gs.Variable] = {}
        self.flat: dict[str, tuple[str, int]] = {}  # flattened tensor -> (tracked tensor, block)
        # What the group of a tracked tensor owns, keyed by that tensor's name.
        self.cuts: dict[str, list[Cut]] = defaultdict(list)
        self.producers: dict[str, list[gs.Node]] = defaultdict(list)
        self.depthwise: dict[str, list[gs.Node]] = defaultdict(list)
        self.reshapes: dict[str, list[tuple[gs.Node, int, int]]] = defaultdict(list)
        self.flattened: dict[str, list[gs.Variable]] = defaultdict(list)
        self.pins: dict[str, list[str]] = defaultdict(list)
        self.hints: dict[str, set[int]] = defaultdict(set)  # channel counts known from weights
        self.concats: dict[str, list[tuple[str | None, int | None]]] = {}
        self.handlers = {
            "Conv": self.conv,
            "Gemm": self.gemm,
            "MatMul": self.matmul,
            "BatchNormalization": self.batchnorm,
            "Concat": self.concat,
            "Flatten": self.flatten,
            "Reshape": self.reshape,
            "Pad": self.pad,
            **{op: self.per_element for op in PER_ELEMENT_OPS | SPATIAL_OPS},
            **{op: self.broadcasting for op in BROADCASTING_OPS},
        }

    # --- bookkeeping ---

    def track(self, tensor: gs.Variable, axis: int, like: str | None = None) -> None:
        self.axis[tensor.name] = axis
        self.tensors[tensor.name] = tensor
        self.links.add_node(tensor.name, order=len(self.tensors))
        if like is not None:
            self.links.add_edge(tensor.name, like)

    def tracked_axis(self, tensor: gs.Tensor) -> int | None:
        return None if tensor.is_empty() else self.axis.get(tensor.name)

    def pin(self, tensor: gs.Tensor, reason: str) -> None:
        if tensor.name in self.axis:
            self.pins[tensor.name].append(reason)
        elif tensor.name in self.flat:
            self.pins[self.flat[tensor.name][0]].append(reason)

    def used(self, tensor: gs.Tensor) -> bool:
        return bool(tensor.outputs) or is_graph_output(self.graph, tensor)

    def skipped(self, node: gs.Node) -> bool:
        return node.name in self.skip or (len(node.inputs) > 1 and node.inputs[1].name in self.skip)

    def producer(self, node: gs.Node, out: gs.Variable, axis: int, channels: int, cuts: list[Cut]) -> None:
        self.track(out, axis)
        self.hints[out.name].add(int(channels))
        self.producers[out.name].append(node)
        self.cuts[out.name].extend(cuts)
        if self.skipped(node):
            self.pins[out.name].append(f"{_label(node)} is in skip")

    def consumer(self, node: gs.Node, x: gs.Tensor, weight_axis: int) -> None:
        """`node` reads the channels of `x` through its weight's `weight_axis`."""
        if x.name in self.axis:
            self.cuts[x.name].append(Cut(node, 1, weight_axis, INPUT))
        elif x.name in self.flat:
            source, block = self.flat[x.name]
            self.cuts[source].append(Cut(node, 1, weight_axis, INPUT, block))

    # --- visiting nodes ---

    def visit(self, node: gs.Node) -> None:
        for index, tensor in enumerate(node.inputs):
            # Flattened channels are understood by a Gemm/MatMul reading them as features only.
            if tensor.name in self.flat and not (node.op in ("Gemm", "MatMul") and index == 0):
                self.pin(tensor, f"read by {_label(node)}")
        handler = self.handlers.get(node.op)
        if handler is None or not handler(node):
            for tensor in node.inputs:
                self.pin(tensor, f"read by {_label(node)}")

    # Each handler returns False, having changed nothing, for a form it does not understand.

    def conv(self, node: gs.Node) -> bool:
        weight = constant_value(node.inputs[1]) if len(node.inputs) > 1 else None
        has_bias = len(node.inputs) > 2 and not node.inputs[2].is_empty()
        if weight is None or weight.ndim < 3 or (has_bias and constant_value(node.inputs[2]) is None):
            return False
        x, y = node.inputs[0], node.outputs[0]
        x_axis = self.tracked_axis(x)
        if x_axis not in (None, 1):
            return False
        groups = int(node.attrs.get("group", 1))
        bias = [2] if has_bias else []
        if groups == 1:
            self.consumer(node, x, 1)
            cuts = [Cut(node, i, 0, OUTPUT) for i in [1] + bias]
            self.producer(node, y, 1, weight.shape[0], cuts)
            return True
        x_shape = _shape(x)
        in_channels = _static(x_shape[1]) if x_shape is not None and len(x_shape) > 1 else None
        if not (weight.shape[0] == groups and weight.shape[1] == 1 and in_channels in (None, groups)):
            return False  # grouped, or depthwise with a channel multiplier: channels do not map one to one
        if x_axis is not None:
            self.track(y, 1, like=x.name)
            self.cuts[y.name].extend(Cut(node, i, 0, PARAM) for i in [1] + bias)
            self.depthwise[y.name].append(node)
            if self.skipped(node):
                self.pins[y.name].append(f"{_label(node)} is in skip")
        return True

    def gemm(self, node: gs.Node) -> bool:
        a, b = node.inputs[0], node.inputs[1]
        weight = constant_value(b)
        has_c = len(node.inputs) > 2 and not node.inputs[2].is_empty()
        c = constant_value(node.inputs[2]) if has_c else None
        if weight is None or weight.ndim != 2 or (has_c and c is None):
            return False
        reads_channels = a.name in self.axis or a.name in self.flat
        if reads_channels and (node.attrs.get("transA", 0) or self.axis.get(a.name, 1) != 1):
            return False
        trans_b = int(node.attrs.get("transB", 0))
        in_axis, out_axis = (1, 0) if trans_b else (0, 1)
        self.consumer(node, a, in_axis)
        channels = weight.shape[out_axis]
        cuts = [Cut(node, 1, out_axis, OUTPUT)]
        if c is not None and c.ndim >= 1 and c.shape[-1] == channels and channels > 1:
            cuts.append(Cut(node, 2, c.ndim - 1, OUTPUT))
        self.producer(node, node.outputs[0], 1, channels, cuts)
        return True

    def matmul(self, node: gs.Node) -> bool:
        a, y = node.inputs[0], node.outputs[0]
        weight = constant_value(node.inputs[1])
        rank = _rank(y) or _rank(a)
        if weight is None or weight.ndim != 2 or not np.issubdtype(weight.dtype, np.floating) or rank is None:
            return False
        if a.name in self.axis and self.axis[a.name] != _rank(a) - 1:
            return False
        self.consumer(node, a, 0)
        self.producer(node, y, rank - 1, weight.shape[1], [Cut(node, 1, 1, OUTPUT)])
        return True

    def per_element(self, node: gs.Node) -> bool:
        x = node.inputs[0]
        # Clip bounds, Dropout's ratio: one number each. MaxPool indices, Dropout's mask: unread.
        if not all(_is_scalar(t) for t in node.inputs[1:]) or any(self.used(t) for t in node.outputs[1:]):
            return False
        axis = self.tracked_axis(x)
        if axis is None:
            return True
        if node.op in SPATIAL_OPS and axis != 1:
            return False
        self.track(node.outputs[0], axis, like=x.name)
        return True

    def batchnorm(self, node: gs.Node) -> bool:
        x, y = node.inputs[0], node.outputs[0]
        if len(node.inputs) < 5 or any(constant_value(t) is None for t in node.inputs[1:5]):
            return False
        if node.attrs.get("training_mode", 0) or any(self.used(t) for t in node.outputs[1:]):
            return False
        axis = self.tracked_axis(x)
        if axis is None:
            return True
        if axis != 1:
            return False
        self.track(y, 1, like=x.name)
        self.cuts[y.name].extend(Cut(node, i, 0, PARAM) for i in range(1, 5))
        return True

    def broadcasting(self, node: gs.Node) -> bool:
        y = node.outputs[0]
        tracked = [t for t in node.inputs if self.tracked_axis(t) is not None]
        if not tracked:
            return True
        ranks = [_rank(t) for t in node.inputs]
        rank = _rank(y) or max((r for r in ranks if r is not None), default=None)
        if rank is None or None in ranks:
            return False
        axes = {self.axis[t.name] + rank - _rank(t) for t in tracked}
        if len(axes) != 1:
            return False
        axis = axes.pop()
        cuts, untracked = [], None
        for index, tensor in enumerate(node.inputs):
            if self.tracked_axis(tensor) is not None:
                continue
            aligned = axis - (rank - _rank(tensor))
            if aligned < 0 or _static(_shape(tensor)[aligned]) == 1:
                continue  # the same value for every channel
            if constant_value(tensor) is not None:
                cuts.append(Cut(node, index, aligned, PARAM))  # per-channel bias or scale
            else:
                untracked = tensor
        self.track(y, axis)
        for tensor in tracked:
            self.links.add_edge(y.name, tensor.name)
        self.cuts[y.name].extend(cuts)
        if untracked is not None:
            self.pins[y.name].append(
                f"{_label(node)} combines it with '{untracked.name}', whose channels are untracked"
            )
        return True

    def concat(self, node: gs.Node) -> bool:
        y = node.outputs[0]
        inputs = [t for t in node.inputs if not t.is_empty()]
        tracked = [t for t in inputs if self.tracked_axis(t) is not None]
        if not tracked:
            return True
        rank = _rank(y) or _rank(tracked[0])
        axes = {self.axis[t.name] for t in tracked}
        if rank is None or len(axes) != 1:
            return False
        axis, along = axes.pop(), int(node.attrs.get("axis", 0)) % rank
        if along != axis:
            # Joined along another dimension (e.g. height): every input carries the same channels.
            if len(tracked) != len(inputs):
                return False
            self.track(y, axis)
            for tensor in tracked:
                self.links.add_edge(y.name, tensor.name)
            return True
        segments = []
        for tensor in inputs:
            if self.tracked_axis(tensor) is not None:
                segments.append((tensor.name, None))
            else:
                shape = _shape(tensor)
                count = _static(shape[along]) if shape is not None and len(shape) == rank else None
                if count is None:
                    return False
                segments.append((None, count))  # kept whole
        self.track(y, axis)
        self.concats[y.name] = segments
        return True

    def flatten(self, node: gs.Node) -> bool:
        x = node.inputs[0]
        axis = self.tracked_axis(x)
        if axis is None:
            return True
        rank = _rank(x)
        if axis != 1 or rank is None or int(node.attrs.get("axis", 1)) % rank != 1:
            return False
        return self.flatten_to(x, node.outputs[0])

    def reshape(self, node: gs.Node) -> bool:
        """A Reshape of NC... to two dimensions (batch, features) is a flatten; any other pins."""
        x = node.inputs[0]
        if self.tracked_axis(x) is None:
            return True
        target = constant_value(node.inputs[1])
        shape = _shape(x)
        if target is None or target.shape != (2,) or node.attrs.get("allowzero", 0) or self.axis[x.name] != 1:
            return False
        if shape is None or any(_static(d) is None for d in shape[1:]):
            return False
        first, second = int(target[0]), int(target[1])
        features = int(np.prod(shape[1:], dtype=np.int64))
        if first not in (0, -1) and first != _static(shape[0]):
            return False
        if second == -1 and first != -1:
            position = None
        elif second == features:
            position = 1  # spelled out: rewritten when channels go
        else:
            return False
        return self.flatten_to(x, node.outputs[0], node, position)

    def flatten_to(self, x: gs.Tensor, y: gs.Variable, reshape: gs.Node | None = None, position=None) -> bool:
        """y holds x's channels as blocks of H*W consecutive features (NCHW flattened)."""
        dims = [_static(d) for d in (_shape(x) or [])[2:]]
        if None in dims:
            return False
        block = int(np.prod(dims, dtype=np.int64))
        if block == 1:
            self.track(y, 1, like=x.name)
        else:
            self.flat[y.name] = (x.name, block)
            self.flattened[x.name].append(y)
        if position is not None:
            self.reshapes[x.name].append((reshape, position, block))
        return True

    def pad(self, node: gs.Node) -> bool:
        x = node.inputs[0]
        axis = self.tracked_axis(x)
        if axis is None:
            return True
        pads = constant_value(node.inputs[1]) if len(node.inputs) > 1 else None
        has_axes = len(node.inputs) > 3 and not node.inputs[3].is_empty()
        value_ok = len(node.inputs) < 3 or _is_scalar(node.inputs[2])
        if pads is None or has_axes or not value_ok or pads.size % 2:
            return False
        if pads[axis] or pads[axis + pads.size // 2]:
            return False  # padding that adds channels
        self.track(node.outputs[0], axis, like=x.name)
        return True

    # --- after the walk ---

    def pin_boundaries(self) -> None:
        for tensor in self.graph.outputs:
            self.pin(tensor, "graph output")
        for sub in list(ir.iter_graphs(self.graph))[1:]:
            for node in sub.nodes:
                for tensor in node.inputs:
                    self.pin(tensor, f"read by {_label(node)} in a subgraph")

    def groups(self) -> Analysis:
        order = nx.get_node_attributes(self.links, "order")
        components = sorted(
            (sorted(c, key=order.get) for c in nx.connected_components(self.links)), key=lambda c: order[c[0]]
        )
        groups, group_of = [], {}
        for index, names in enumerate(components):
            group = Group(
                id=index,
                channels=0,
                tensors=[self.tensors[n] for n in names],
                producers=[p for n in names for p in self.producers[n]],
                cuts=[c for n in names for c in self.cuts[n]],
                depthwise=[d for n in names for d in self.depthwise[n]],
                reshapes=[r for n in names for r in self.reshapes[n]],
                flattened=[f for n in names for f in self.flattened[n]],
                pinned=[p for n in names for p in self.pins[n]],
            )
            counts = {d for n in names for d in self.hints[n]}
            counts |= {_static(self.tensors[n].shape[self.axis[n]]) for n in names if self.tensors[n].shape is not None}
            counts.discard(None)
            group.channels = max(counts, default=0)
            if len(counts) != 1:
                group.pinned.append(f"channel counts disagree: {sorted(counts)}" if counts else "channel count unknown")
            groups.append(group)
            group_of.update({n: group for n in names})
        for group in groups:
            self._compose(group, group_of)
        for group in groups:
            self._check_cuts(group)
        _pin_concat_inputs(groups)
        return Analysis(groups, group_of)

    def _compose(self, group: Group, group_of: dict[str, Group]) -> None:
        sources = [self.concats[t.name] for t in group.tensors if t.name in self.concats]
        if not sources:
            return
        group.segments = [(group_of[n], 0) if n else (None, count) for n, count in sources[0]]
        if len(sources) > 1 or group.producers:
            group.pinned.append("a Concat output mixed with other channels")

    def _check_cuts(self, group: Group) -> None:
        """Every constant to be cut must hold exactly the group's channels on its axis."""
        if group.segments is not None:
            group.segments = [(g, g.channels if g is not None else count) for g, count in group.segments]
            total = sum(count for _, count in group.segments)
            if group.channels and total != group.channels:
                group.pinned.append(f"Concat inputs sum to {total} channels, not {group.channels}")
        for cut in group.cuts:
            value = constant_value(cut.node.inputs[cut.index])
            expected = group.channels * cut.block
            if value is None or value.ndim <= cut.axis or value.shape[cut.axis] != expected:
                group.pinned.append(f"{_label(cut.node)} input {cut.index} does not hold {expected} on axis {cut.axis}")


def _pin_concat_inputs(groups: list[Group]) -> None:
    """A Concat output that must keep its channels keeps its inputs' channels too."""
    pending = [g for g in groups if g.pinned and g.segments is not None]
    while pending:
        group = pending.pop()
        for segment, _ in group.segments:
            if segment is not None and not segment.pinned:
                segment.pinned.append(f"concatenated into pinned '{group.name}'")
                if segment.segments is not None:
                    pending.append(segment)
