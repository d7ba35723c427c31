"""Layer normalizations that converters spelled out op by op, found so quantization leaves them float.

TF, TFLite and Paddle exports write LayerNorm / MVN as
    t = x - ReduceMean(x);  v = ReduceMean(t * t);  y = t / Sqrt(v + eps)   [* gamma + beta]
(or Pow(t, 2), Reciprocal + Mul, Rsqrt imported as Reciprocal(Sqrt)). Quantizing inside it rounds
the variance and 1/std, and on a sample whose variance is small the rounding of t is then
multiplied by a large 1/std (PP-OCRv4's recognizer, real images: 10.3 -> 10.9 dB held out with
its five LayerNorms float; oww-hey-jarvis 26.0 -> 26.3, the rest of its error being samples that
switch its output's branch). No runtime has an int8 kernel
for these ops, and onnxruntime fuses the float chain into one LayerNormalization kernel, so
keeping it float costs no speed. NNCF leaves MVN / LayerNorm float for the same reason.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from edgec.graph_utils import constant_value

# Ops that may sit between the variance and the normalizing Div/Mul: + eps, sqrt, 1/x, x^-0.5.
_STATISTIC_OPS = ("Add", "Sqrt", "Reciprocal", "Pow", "Max")


def float_normalization_nodes(graph: gs.Graph) -> set[int]:
    """ids of the nodes of every spelled-out normalization in the main graph, its affine
    Mul/Add by constants included."""
    found: set[int] = set()
    for node in graph.nodes:
        if node.op == "ReduceMean" and node.outputs:
            for group in _normalizations_from(node):
                found.update(id(n) for n in group)
    return found


def _normalizations_from(mean: gs.Node):
    x = mean.inputs[0]
    for sub in mean.outputs[0].outputs:
        if sub.op != "Sub" or len(sub.inputs) != 2 or sub.inputs[0] is not x or sub.inputs[1] is not mean.outputs[0]:
            continue
        centred = sub.outputs[0]
        for square in centred.outputs:
            if not _is_square(square, centred):
                continue
            group = _complete(mean, sub, square, centred)
            if group is not None:
                yield group


def _is_square(node: gs.Node, tensor: gs.Tensor) -> bool:
    if node.op == "Mul" and len(node.inputs) == 2:
        return node.inputs[0] is tensor and node.inputs[1] is tensor
    if node.op == "Pow" and len(node.inputs) == 2 and node.inputs[0] is tensor:
        exponent = constant_value(node.inputs[1])
        return exponent is not None and np.size(exponent) == 1 and float(np.ravel(exponent)[0]) == 2.0
    return False


def _only_reader(tensor: gs.Tensor) -> gs.Node | None:
    return tensor.outputs[0] if len(tensor.outputs) == 1 else None


def _has_constant_operand(node: gs.Node, tensor: gs.Tensor) -> bool:
    others = [t for t in node.inputs if t is not tensor]
    return len(node.inputs) == 2 and len(others) == 1 and constant_value(others[0]) is not None


def _complete(mean: gs.Node, sub: gs.Node, square: gs.Node, centred: gs.Tensor) -> list[gs.Node] | None:
    """The whole normalization from its square onwards, or None when the chain is not one."""
    variance_mean = _only_reader(square.outputs[0])
    if variance_mean is None or variance_mean.op != "ReduceMean":
        return None
    group = [mean, sub, square, variance_mean]
    statistic = variance_mean.outputs[0]
    for _ in range(4):  # + eps, sqrt, reciprocal: a short chain, never a walk through the model
        reader = _only_reader(statistic)
        if reader is None:
            return None
        if _normalizes(reader, centred, statistic):
            group.append(reader)
            return group + _affine(reader.outputs[0])
        constant_operand = reader.op not in ("Add", "Pow", "Max") or _has_constant_operand(reader, statistic)
        if reader.op not in _STATISTIC_OPS or not constant_operand:
            return None
        group.append(reader)
        statistic = reader.outputs[0]
    return None


def _normalizes(node: gs.Node, centred: gs.Tensor, statistic: gs.Tensor) -> bool:
    """centred / std, or centred * (1 / std) in either operand order."""
    operands = {id(t) for t in node.inputs}
    if len(node.inputs) != 2 or operands != {id(centred), id(statistic)}:
        return False
    return node.op == "Mul" or (node.op == "Div" and node.inputs[0] is centred)


def _affine(normalized: gs.Tensor) -> list[gs.Node]:
    """The gamma Mul and beta Add by constants that follow the normalization, if any."""
    nodes = []
    tensor = normalized
    for op in ("Mul", "Add"):
        reader = _only_reader(tensor)
        if reader is None or reader.op != op or not _has_constant_operand(reader, tensor):
            continue
        nodes.append(reader)
        tensor = reader.outputs[0]
    return nodes
