"""The lowering table: ONNX op type -> function(ctx, node) that emits TFLite operators."""

from edgec.backends.tflite.ops import activation, conv, dense, elementwise, pool, reduce, shape, tensor

LOWERINGS = {}
for family in (activation, conv, dense, elementwise, pool, reduce, shape, tensor):
    LOWERINGS |= family.LOWERINGS
