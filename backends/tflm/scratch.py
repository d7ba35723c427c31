"""Kernel scratch buffers TFLM plans next to the tensors: CMSIS-NN, ESP-NN and reference kernels."""

# Each optimized library requests its scratch in the kernel's Prepare with the sizes below; the
# float32 kernels of both fall back to TFLM's reference ones, which need none for these ops.

from __future__ import annotations

import math

from edgec.backends.tflm.reader import Graph, Operator

LIBRARIES = ("reference", "cmsis-nn", "esp-nn")


def library_for(triple: str) -> str:
    """The kernels a target's TFLM build uses: CMSIS-NN on Cortex-M, ESP-NN on the ESP32-S3."""
    if triple.startswith(("thumbv6m", "thumbv7", "thumbv8")):
        return "cmsis-nn"
    if triple.startswith("xtensa-esp32s3"):
        return "esp-nn"
    return "reference"


def requests(graph: Graph, library: str) -> dict[int, list[int]]:
    """Operator index -> scratch sizes in bytes, for the ops that request any."""
    if library not in LIBRARIES:
        raise ValueError(f"unknown kernel library '{library}' (known: {', '.join(LIBRARIES)})")
    found = {}
    for op in graph.operators:
        size = _reference(graph, op) + _optimized(graph, op, library)
        if size > 0:
            found[op.index] = [size]
    return found


def _reference(graph: Graph, op: Operator) -> int:
    """TRANSPOSE_CONV's integer kernels accumulate the whole output in a scratch buffer
    (int32 for int8, int64 for int16: tflite-micro kernels/transpose_conv.cc)."""
    if op.op != "TRANSPOSE_CONV":
        return 0
    output = graph.tensor(op.outputs[0])
    width = {"INT8": 4, "INT16": 8}.get(output.type, 0)
    return math.prod(output.shape) * width


def _optimized(graph: Graph, op: Operator, library: str) -> int:
    if library == "reference" or op.op not in ("CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "SOFTMAX"):
        return 0
    data = graph.tensor(op.inputs[0])
    if library == "cmsis-nn" and data.type in ("INT8", "INT16"):
        return _cmsis_nn(graph, op, data)
    if library == "esp-nn" and data.type == "INT8":  # esp-nn has int8 kernels only
        return _esp_nn(graph, op, data)
    return 0


def _cmsis_nn(graph: Graph, op: Operator, data) -> int:
    """CMSIS-NN's *_get_buffer_size on a DSP core without MVE (Cortex-M4/M7/M33): im2col of two
    columns of int16 for convolution (arm_convolve_s8_get_buffer_size; used as the bound for
    its 1x1 and 1xN variants too), one int16 column for ch_mult-1 depthwise
    (arm_depthwise_conv_s8_opt_get_buffer_size), an int32 per channel for average pooling."""
    channels = data.shape[-1]
    if op.op == "CONV_2D":
        _, kh, kw, cin = graph.tensor(op.inputs[1]).shape
        return 2 * cin * kh * kw * 2
    if op.op == "DEPTHWISE_CONV_2D":
        _, kh, kw, cout = graph.tensor(op.inputs[1]).shape
        return channels * kh * kw * 2 if cout == channels else 0
    if op.op == "AVERAGE_POOL_2D":
        return channels * 4
    return 0


def _esp_nn(graph: Graph, op: Operator, data) -> int:
    """ESP-NN's esp32s3 scratch (esp_nn_get_{conv,depthwise_conv}_scratch_size_esp32s3), bounded
    over the paths of the esp-nn versions read, which differ: older ones widen the filter and
    the input to int16, newer ones copy a padded input and an aligned filter. A 1x1 stride-1
    convolution on a multiple of 8 channels only transposes 8 rows at a time (plus a 16 KiB
    output panel once the filter passes 24 KiB); depthwise pads channels to a multiple of 8 and
    keeps an output copy and three int32 arrays per channel; softmax keeps an int32 row."""
    if op.op == "SOFTMAX":
        return data.shape[-1] * 4 + 16
    if op.op == "AVERAGE_POOL_2D":
        return 0
    filter_shape = graph.tensor(op.inputs[1]).shape
    output = graph.tensor(op.outputs[0])
    padded = _padded_input_elements(data.shape, filter_shape, output.shape, op.options)
    cin, cout = data.shape[-1], output.shape[-1]
    if op.op == "CONV_2D":
        if _pointwise(filter_shape, op.options) and cin % 8 == 0:
            panel = 24 * cin + 16 * 1024 + 64 if cin * cout > 24 * 1024 else 0
            return max(16 * cin + 32, 24 * cin + 8 * cout + 64, panel)
        return 2 * (math.prod(filter_shape) + padded) + 64
    grow = _round8(cin) / cin
    filter_elements = math.prod(filter_shape) * _round8(cout) // cout
    outputs = math.prod(output.shape[1:3]) * _round8(cout)
    return 2 * (filter_elements + math.ceil(padded * grow)) + outputs + 12 * _round8(cout) + 64


def _round8(n: int) -> int:
    return (n + 7) // 8 * 8


def _pointwise(filter_shape, options) -> bool:
    """A 1x1 filter, stride 1, no padding (VALID, or SAME, which pads nothing for 1x1)."""
    return tuple(filter_shape[1:3]) == (1, 1) and options is not None and (options.strideH, options.strideW) == (1, 1)


def _padded_input_elements(input_shape, filter_shape, output_shape, options) -> int:
    """Elements of the NHWC input grown by the padding that SAME asks for (VALID: none)."""
    _, height, width, channels = input_shape
    _, kh, kw, _ = filter_shape
    if options is None or getattr(options, "padding", 1) != 0:  # schema Padding: SAME = 0
        return height * width * channels
    grown = []
    for size, kernel, out, stride, dilation in (
        (height, kh, output_shape[1], options.strideH, options.dilationHFactor),
        (width, kw, output_shape[2], options.strideW, options.dilationWFactor),
    ):
        grown.append(size + max((out - 1) * stride + (kernel - 1) * max(dilation, 1) + 1 - size, 0))
    return grown[0] * grown[1] * channels
