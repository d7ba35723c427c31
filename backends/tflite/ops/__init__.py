"""The lowering table: ONNX op type -> function(ctx, node) that emits TFLite operators."""

from edgec.backends.tflite.ops import activation, conv, dense, elementwise, pool, shape

LOWERINGS = {**activation.LOWERINGS, **conv.LOWERINGS, **dense.LOWERINGS, **elementwise.LOWERINGS}
LOWERINGS |= {**pool.LOWERINGS, **shape.LOWERINGS}
