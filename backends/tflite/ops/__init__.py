"""The lowering table: ONNX op type -> function(ctx, node) that emits TFLite operators."""

from edgec.backends.tflite.ops import (
    activation,
    constant,
    control,
    conv,
    conv_transpose,
    dense,
    elementwise,
    gelu,
    layernorm,
    pool,
    quantize,
    reduce,
    resize,
    select,
    shape,
    tensor,
)
from edgec.backends.tflite.ops.dtypes import float32_only

LOWERINGS = {}
for family in (activation, conv, conv_transpose, dense, elementwise, gelu, layernorm, pool, reduce, resize, shape, tensor):
    LOWERINGS |= {op: float32_only(lower) for op, lower in family.LOWERINGS.items()}
for family in (constant, control, quantize, select):  # typed by what they convert (select: bool, float, ints)
    LOWERINGS |= family.LOWERINGS
