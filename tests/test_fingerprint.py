"""edgec.fingerprint: the equivalence check skips a run only when the computation provably did not change."""

import numpy as np
import onnx
import onnx_graphsurgeon as gs

import edgec
from edgec import fingerprint, ir
from tests.helpers import GraphBuilder


def _model(tmp_path, identity=False, weight_scale=1.0, stride=1, name="m.onnx"):
    b = GraphBuilder(seed=0)
    x = b.input("x", [1, 3, 8, 8])
    w = b.rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * weight_scale
    h = b.op("Conv", [x, b.const(w)], pads=[1, 1, 1, 1], strides=[stride, stride])
    if identity:
        h = b.op("Identity", [b.op("Identity", [h])])
    b.output(b.op("Relu", [h]))
    onnx.save(b.proto(), tmp_path / name)
    model = ir.load(tmp_path / name)
    model.graph.outputs[0].name = "y"  # the interface is part of the computation: same name in every variant
    return model


def test_names_identity_nodes_and_node_order_do_not_change_the_digest(tmp_path):
    plain = fingerprint.computation(_model(tmp_path).graph)
    assert plain is not None and plain == fingerprint.computation(_model(tmp_path, identity=True).graph)
    renamed = _model(tmp_path)
    for node in renamed.graph.nodes:
        node.name = "other_" + node.name
    renamed.graph.nodes.reverse()
    assert fingerprint.computation(renamed.graph) == plain


def test_a_changed_constant_attribute_or_input_changes_it(tmp_path):
    plain = fingerprint.computation(_model(tmp_path).graph)
    assert fingerprint.computation(_model(tmp_path, weight_scale=1.0 + 1e-7).graph) != plain
    assert fingerprint.computation(_model(tmp_path, stride=2).graph) != plain
    retyped = _model(tmp_path)
    retyped.graph.inputs[0].dtype = np.float16
    assert fingerprint.computation(retyped.graph) != plain


def test_graphs_with_subgraphs_get_no_digest(tmp_path):
    model = _model(tmp_path)
    branch = gs.Graph(nodes=[], inputs=[], outputs=[model.graph.nodes[0].inputs[1]])
    cond = gs.Constant("cond", np.array(True))
    out = gs.Variable("y_if", dtype=np.float32)
    model.graph.nodes.append(gs.Node("If", inputs=[cond], outputs=[out], attrs={"then_branch": branch, "else_branch": branch}))
    model.graph.outputs.append(out)
    assert fingerprint.computation(model.graph) is None


def test_the_check_after_remove_identity_is_not_run_when_only_identities_went(tmp_path):
    _model(tmp_path, identity=True)
    result = edgec.compile(tmp_path / "m.onnx", target="x86-64", backend="onnx", passes="remove-identity,fold-batchnorm",
                           output_dir=tmp_path / "o")
    step = result.report["passes"][0]
    assert step["name"] == "remove-identity" and step["modified"]
    assert step["check"]["ok"] and "same computation" in step["check"]["against"]
    assert result.ok and result.report["final_check"]["ok"]
