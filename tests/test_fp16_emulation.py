"""The checks run float16 graphs as float16 hardware computes them: every op's output rounded."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgec import fp16_emulation, ir, runner


def _chain(input_type=TensorProto.FLOAT16, cast_input=False):
    """y = sqrt(x * 1.00098)^2 in float16, with the scale as a Constant node. Rounded op by op,
    1.0 * 1.00098 = 1.00098 -> sqrt = 1.0 (float16 has no value between 1 and 1.00098) -> 1.0;
    computed in float32 and rounded once at the end it gives 1.00098."""
    x = helper.make_tensor_value_info("x", input_type, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT16, [4])
    scale = numpy_helper.from_array(np.array([1.0009765625], np.float16), "scale")
    nodes = [helper.make_node("Constant", [], ["a"], value=scale)]
    first = "x"
    if cast_input:
        nodes.append(helper.make_node("Cast", ["x"], ["x16"], to=TensorProto.FLOAT16))
        first = "x16"
    nodes += [
        helper.make_node("Mul", [first, "a"], ["t"]),
        helper.make_node("Sqrt", ["t"], ["u"]),
        helper.make_node("Mul", ["u", "u"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "chain", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _per_op_float16(x):
    x = np.asarray(x, np.float16)
    t = (x * np.float16(1.0009765625)).astype(np.float16)
    u = np.sqrt(t).astype(np.float16)
    return (u * u).astype(np.float16).astype(np.float32)


def test_every_float16_op_output_is_rounded_as_float16_hardware_rounds_it():
    x = np.array([1.0, 3.0, 7.0, 1000.0], np.float32)
    for proto in (_chain(), _chain(TensorProto.FLOAT, cast_input=True)):
        got = runner.run_model(ir.from_proto(proto), [{"x": x}])[0]["y"]
        np.testing.assert_array_equal(got, _per_op_float16(x))
        assert got[0] == 1.0  # onnxruntime on the float16 graph itself: 1.00098
        plain = runner.run(runner.make_session(proto), [{"x": x.astype(np.float32 if proto.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT else np.float16)}])[0]["y"]
        assert float(plain[0]) == np.float32(np.float16(1.0009765625))


def test_the_emulation_is_float32_with_explicit_rounding_pairs():
    emulated = fp16_emulation.emulated(_chain())
    types = {t.type.tensor_type.elem_type for t in list(emulated.graph.input) + list(emulated.graph.output)}
    assert types == {TensorProto.FLOAT}
    casts = [n for n in emulated.graph.node if n.op_type == "Cast"]
    # the input x, the Constant's output, t, u and y each rounded by one pair
    assert len(casts) == 2 * 5 and {a.i for n in casts for a in n.attribute} == {TensorProto.FLOAT16, TensorProto.FLOAT}
    onnx.checker.check_model(emulated)


def test_float32_graphs_and_graphs_with_subgraphs_are_left_alone():
    proto = _chain()
    branch = helper.make_graph([helper.make_node("Identity", ["x"], ["z"])], "b", [], [helper.make_tensor_value_info("z", TensorProto.FLOAT16, [4])])
    cond = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    proto.graph.input.append(cond)
    proto.graph.node.append(helper.make_node("If", ["c"], ["w"], then_branch=branch, else_branch=branch))
    proto.graph.output.append(helper.make_tensor_value_info("w", TensorProto.FLOAT16, [4]))
    assert fp16_emulation.emulated(proto) is proto
