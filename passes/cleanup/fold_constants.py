"""Evaluate nodes whose inputs are all constants and store their results as initializers."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from edgec import runner
from edgec.compress import shared
from edgec.graph_utils import attr_tensor_to_numpy, is_graph_output, remove_node
from edgec.ir import Model
from edgec.pass_infra import Pass, PassContext, PassResult, option

# Folding these would freeze one random draw into the model.
NONDETERMINISTIC = {
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
}
_CONSTANT_ATTRS = {"value_float": np.float32, "value_floats": np.float32, "value_int": np.int64, "value_ints": np.int64}


class FoldConstantsPass(Pass):
    name = "fold-constants"
    summary = "Evaluate nodes whose inputs are all constant and replace them with initializers."
    # A result bigger than its inputs by more than this stays computed (ConstantOfShape, Expand,
    # Tile): folding it would grow the file for nothing.
    max_growth_bytes: int = option(1 << 20, min=0)
    # Ops whose constant inputs are a storage format: DequantizeLinear keeps int8 weights int8.
    keep_ops: tuple[str, ...] = ("DequantizeLinear",)

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        # The main graph only. onnxruntime infers the shapes of both branches of an If at load, from
        # the values it knows: a branch the inputs never take need not fit the static input shapes
        # (silero-vad's 8 kHz branch squeezes an axis that is 2 at its 16 kHz shape). Folding in a
        # branch (to initializers or to Constant nodes alike) made such a model refuse to load;
        # branches stay as the exporter wrote them.
        # An If whose condition folded to a constant (an input frozen with --freeze-input) is
        # replaced by the branch it always takes, and the branch's constants fold in turn.
        constant_nodes, folded, kept, inlined = 0, 0, 0, 0
        while True:
            constant_nodes += _constant_nodes_to_initializers(graph)
            more_folded, more_kept = self.fold(graph)
            folded, kept = folded + more_folded, kept + more_kept
            taken = inline_decided_ifs(graph)
            if not taken:
                break
            inlined += taken
        stats = {"constant_nodes": constant_nodes, "folded_nodes": folded, "kept_for_size": kept}
        stats["inlined_ifs"] = inlined
        return PassResult(constant_nodes + folded + inlined > 0, stats)

    def _foldable(self, node: gs.Node) -> bool:
        return (
            node.domain in (None, "", "ai.onnx")
            and node.op not in NONDETERMINISTIC
            and node.op not in self.keep_ops
            and not shared.is_decode_node(node)  # weight-sharing indices stay indices
            and node.op != "Constant"
            and next(node.subgraphs(), None) is None
            and bool(node.outputs)
        )

    def fold(self, graph: gs.Graph, seeds: set[int] | None = None) -> tuple[int, int]:
        """Fold the closure of all-constant nodes with one onnxruntime run; returns (folded, kept for size).

        With `seeds` (tensor ids), only nodes downstream of those tensors are folded.
        """
        region = self._region(graph, seeds)
        if not region:
            return 0, 0
        values = _evaluate(graph, region)
        kept, too_big = self._nodes_to_keep(graph, region, values)
        folded = set()
        for node in region:
            if id(node) in kept:
                continue
            for out in node.outputs:
                if out.outputs:
                    out.to_constant(np.asarray(values[out.name]))
            node.inputs.clear()
            node.outputs.clear()
            folded.add(id(node))
        graph.nodes = [n for n in graph.nodes if id(n) not in folded]
        return len(folded), too_big

    def _region(self, graph: gs.Graph, seeds: set[int] | None) -> list[gs.Node]:
        """Nodes computable from constants alone, in graph (topological) order."""
        region, produced = [], set(seeds or ())
        for node in graph.nodes:
            known = all(isinstance(t, gs.Constant) or t.is_empty() or id(t) in produced for t in node.inputs)
            downstream = seeds is None or any(id(t) in produced for t in node.inputs)
            if known and downstream and self._foldable(node):
                region.append(node)
                produced.update(id(t) for t in node.outputs)
        return region

    def _nodes_to_keep(self, graph: gs.Graph, region: list[gs.Node], values: dict) -> tuple[set[int], int]:
        """Region nodes that must stay: their result is too big, unknown, or a graph output.

        Walks backwards so a kept node's inputs count as needed by a node outside the fold.
        """
        in_region = {id(n) for n in region}
        kept: set[int] = set()
        too_big = 0
        for node in reversed(region):
            in_bytes = sum(t.values.nbytes for t in node.inputs if isinstance(t, gs.Constant))
            for out in node.outputs:
                needed = any(id(c) not in in_region or id(c) in kept for c in out.outputs)
                if is_graph_output(graph, out):
                    # Not every runtime accepts an initializer as a graph output.
                    kept.add(id(node))
                elif needed and out.name not in values:
                    kept.add(id(node))
                elif needed and values[out.name].nbytes > in_bytes + self.max_growth_bytes:
                    kept.add(id(node))
                    too_big += 1
        return kept, too_big


def inline_decided_ifs(graph: gs.Graph) -> int:
    """Replace each If of the main graph whose condition is a constant with the nodes of the
    branch it takes; returns how many. Branch outputs take the If's output tensors' place, so
    readers and graph outputs keep their names."""
    inlined = 0
    for node in [n for n in graph.nodes if n.op == "If"]:
        condition = node.inputs[0] if node.inputs else None
        if not isinstance(condition, gs.Constant) or condition.values.size != 1:
            continue
        branch = node.attrs["then_branch" if bool(condition.values.ravel()[0]) else "else_branch"]
        if len(branch.outputs) != len(node.outputs):
            continue
        produced = {id(out) for sub in branch.nodes for out in sub.outputs}
        graph.nodes.extend(branch.nodes)
        for result, wanted in zip(branch.outputs, list(node.outputs)):
            if id(result) in produced and not any(result is out for out in graph.outputs):
                # the branch's tensor becomes the If's output: same name, same readers
                maker = result.inputs[0]
                maker.outputs[maker.outputs.index(result)] = wanted
                for reader in list(result.outputs):
                    for i, t in enumerate(reader.inputs):
                        if t is result:
                            reader.inputs[i] = wanted
            else:  # an outer tensor or constant passed through: keep the If's output name
                graph.nodes.append(gs.Node("Identity", name=f"{node.name}_taken", inputs=[result], outputs=[wanted]))
        branch.nodes = []
        node.inputs.clear()
        node.outputs.clear()
        inlined += 1
    if inlined:
        _constant_nodes_to_initializers(graph)  # the branches' Constant nodes, as in the main graph
        graph.cleanup(remove_unused_graph_inputs=False).toposort()
    return inlined


def _constant_nodes_to_initializers(graph: gs.Graph) -> int:
    """`Constant` nodes become initializers, so every later pass sees one kind of constant."""
    count = 0
    for node in list(graph.nodes):
        if node.op != "Constant" or len(node.outputs) != 1 or is_graph_output(graph, node.outputs[0]):
            continue
        value = _constant_node_value(node)
        if value is None:
            continue
        out = node.outputs[0]
        out.to_constant(value)
        remove_node(graph, node)
        count += 1
    return count


def _constant_node_value(node: gs.Node) -> np.ndarray | None:
    if "value" in node.attrs:
        return attr_tensor_to_numpy(node.attrs["value"])
    for attr, dtype in _CONSTANT_ATTRS.items():
        if attr in node.attrs:
            return np.asarray(node.attrs[attr], dtype=dtype)
    return None  # sparse_value and string values stay as nodes


def _evaluate(graph: gs.Graph, region: list[gs.Node]) -> dict[str, np.ndarray]:
    """Run the region in onnxruntime (the checks' runtime), node by node if the batch fails."""
    try:
        return _run_region(graph, region)
    except Exception:
        values: dict[str, np.ndarray] = {}
        for node in region:
            if all(isinstance(t, gs.Constant) or t.is_empty() or t.name in values for t in node.inputs):
                try:
                    values.update(_run_region(graph, [node], values))
                except Exception:
                    continue  # an op onnxruntime cannot evaluate stays in the graph
        return values


def _run_region(graph: gs.Graph, nodes: list[gs.Node], known: dict[str, np.ndarray] | None = None) -> dict:
    known = known or {}
    tensors: dict[str, gs.Tensor] = {}
    copies = []
    for node in nodes:
        inputs = []
        for t in node.inputs:
            if t.is_empty():
                inputs.append(gs.Variable.empty())
            elif isinstance(t, gs.Constant):
                inputs.append(tensors.setdefault(t.name, gs.Constant(t.name, t.values)))
            elif t.name in known:
                inputs.append(tensors.setdefault(t.name, gs.Constant(t.name, known[t.name])))
            else:
                inputs.append(tensors.setdefault(t.name, gs.Variable(t.name)))
        outputs = [tensors.setdefault(t.name, gs.Variable(t.name)) for t in node.outputs]
        copies.append(gs.Node(node.op, node.name, dict(node.attrs), inputs, outputs, domain=node.domain))
    produced = [t for node in copies for t in node.outputs if not t.is_empty()]
    sub = gs.Graph(nodes=copies, inputs=[], outputs=produced, opset=graph.opset, import_domains=graph.import_domains)
    session = runner.make_session(Model(sub))
    names = [o.name for o in session.get_outputs()]
    # Sequences and maps come back as lists and dicts: only tensors become initializers.
    return {n: v for n, v in zip(names, session.run(names, {})) if isinstance(v, np.ndarray)}
