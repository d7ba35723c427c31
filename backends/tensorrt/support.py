"""What TensorRT 8.2's ONNX parser takes: its operator table and the inputs it needs constant.

The table is onnx-tensorrt's docs/operators.md: the rows marked supported in the 8.4 document,
less Xor and Shrink, which its changelog lists as added in 8.4 (the 8.2 GA release added none
over 8.2 EA, which added Einsum, IsNaN, GatherND, Scatter, ScatterElements, ScatterND, Sign
and Round). TensorRT 8.2 reads opset 13 at most.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from edgec.errors import EdgecError
from edgec.graph_utils import constant_value
from edgec.ir import iter_graphs

TRT82_OPS = frozenset(
    """
    Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast
    Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace
    DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather
    GatherElements GatherND Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual
    GRU HardSigmoid Identity If ImageScaler InstanceNormalization IsNaN LeakyRelu Less LessOrEqual
    Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean Min Mul Neg
    NonMaxSuppression Not Or Pad ParametricSoftplus Pow PRelu QuantizeLinear RandomUniform
    RandomUniformLike Range ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean
    ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RNN Round
    ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Sigmoid Sign Sin Sinh Size Slice
    Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile
    TopK Transpose Unsqueeze Upsample Where
    """.split()
)

# Inputs the 8.x parser needs as initializers (operators.md restrictions, 7.2-8.4 documents;
# not ConvTranspose's weights, which 8.0 took as a tensor too: "multi-input ConvTranspose").
CONSTANT_INPUTS = {
    "Clip": (1, 2),
    "Slice": (3,),  # axes
    "Squeeze": (1,),
    "Unsqueeze": (1,),
    "TopK": (1,),
    "CumSum": (1,),
    "InstanceNormalization": (1, 2),
}
RESIZE_MODES = ("nearest", "linear")
RESIZE_COORDINATES = ("half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners")
INT32 = np.iinfo(np.int32)


def check(graph: gs.Graph) -> dict:
    """Raise one EdgecError naming every node TensorRT 8.2 cannot parse; return facts worth a note
    (int64 constants the parser narrows to int32, int64 graph inputs and outputs)."""
    problems = []
    int64_constants = 0
    for g in iter_graphs(graph):
        for node in g.nodes:
            where = f"{node.op} '{node.name or node.outputs[0].name}'"
            if node.domain not in ("", "ai.onnx", None):
                problems.append(f"{where} (domain {node.domain})")
            elif node.op not in TRT82_OPS:
                problems.append(where)
            else:
                reason = _restriction(node)
                if reason:
                    problems.append(f"{where} ({reason})")
        for tensor in g.tensors().values():
            if isinstance(tensor, gs.Constant) and tensor.values.dtype == np.int64:
                int64_constants += 1
                if not _narrows_safely(tensor):
                    problems.append(f"int64 constant '{tensor.name}' (values outside int32, which TensorRT 8.2 uses)")
    if problems:
        raise EdgecError(
            f"TensorRT 8.2's ONNX parser cannot take {len(problems)} node(s)/tensor(s): "
            + "; ".join(problems[:8])
            + ("; ..." if len(problems) > 8 else "")
        )
    int64_ports = [t.name for t in list(graph.inputs) + list(graph.outputs) if _dtype(t) == np.int64]
    return {"int64_constants": int64_constants, "int64_ports": int64_ports}


def _restriction(node: gs.Node) -> str | None:
    for index in CONSTANT_INPUTS.get(node.op, ()):
        if index < len(node.inputs) and not node.inputs[index].is_empty():
            if constant_value(node.inputs[index]) is None:
                return f"input {index} must be a constant"
    if node.op == "Resize":
        if node.attrs.get("mode", "nearest") not in RESIZE_MODES:
            return f"mode {node.attrs['mode']!r}"
        coordinates = node.attrs.get("coordinate_transformation_mode", "half_pixel")
        if coordinates not in RESIZE_COORDINATES:
            return f"coordinate_transformation_mode {coordinates!r}"
    return None


def _narrows_safely(tensor: gs.Constant) -> bool:
    """The parser casts int64 to int32, clamping. Harmless for Slice bounds (INT64_MAX means
    "to the end" either way) and for values inside int32; anything else would change."""
    values = tensor.values
    if values.size == 0 or (values.min() >= INT32.min and values.max() <= INT32.max):
        return True
    return all(r.op == "Slice" and any(r.inputs[i] is tensor for i in (1, 2)) for r in tensor.outputs)


def _dtype(tensor: gs.Tensor):
    dtype = tensor.dtype
    return None if dtype is None or isinstance(dtype, int) else np.dtype(dtype)
