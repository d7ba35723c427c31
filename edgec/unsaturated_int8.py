"""onnxruntime's int8 kernels without saturation on x86 CPUs without VNNI.

There its u8 x s8 kernels add each pair of products into a saturating int16 (VPMADDUBSW):
full-range int8 weights overflow. The session config entry session.x64quantprecision=1 makes
onnxruntime convert constant int8 weights to uint8 and use its u8 x u8 kernels, which cannot
(MobileNetV2-style, full-range weights, AVX2 EPYC: 14.9 dB from the exact Q/DQ graph with the
default, 54.7 dB with the entry, 527 -> 733 us a sample). edgec's sessions set it on such hosts
(runner.session_options), edgec.runtime's too.

The conversion has two faults this module works around in the graphs it will see (same values):
a per-axis weight DequantizeLinear without a zero point gets a scalar uint8 zero point, which its
own kernel then refuses ("For per axis quantization, x_zero_point must be null or 1D tensor"), and
an int8 initializer read twice by the nodes whose weights it converts (merge-duplicate-initializers
shares equal zero points between DequantizeLinears; onnxruntime's dynamic quantizer gives an
LSTM's W and R one zero point) is converted twice under one name ("AddInitializedOrtValue Attempt
to replace the existing tensor").
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from edgec.targets import host_int8_pair_sums_saturate

ENTRY = "session.x64quantprecision"
# Nodes whose constant int8 inputs the conversion rewrites (onnxruntime's avx2_weight_s8_to_u8 and
# qdq_s8_to_u8), besides DequantizeLinears of constant int8 tensors.
CONVERTED_OPS = frozenset({
    "ConvInteger", "MatMulInteger", "DynamicQuantizeLSTM", "DynamicQuantizeMatMul", "MatMulIntegerToFloat",
    "QLinearConv", "QLinearMatMul", "QGemm", "QAttention",
})


def configure(options: ort.SessionOptions) -> ort.SessionOptions:
    """`options`, with the entry where this CPU needs it. Not elsewhere: onnxruntime's own test for
    it (MlasPlatformU8S8Overflow) also holds on VNNI CPUs, which need no slower kernels."""
    if host_int8_pair_sums_saturate():
        options.add_session_config_entry(ENTRY, "1")
    return options


def enabled(options: ort.SessionOptions) -> bool:
    try:
        return options.get_session_config_entry(ENTRY) == "1"
    except RuntimeError:  # onnxruntime raises for an entry never set
        return False


def prepare(graph: onnx.GraphProto, dry_run: bool = False) -> dict[str, str] | bool:
    """Make `graph` safe for the conversion (see the module docstring): explicit per-axis zero
    points of zeros, and an own copy for every further read of an int8 initializer by the nodes it
    converts. Returns {copy's name: original's name} for the copies (their arrays, when the
    originals live outside the proto, must be supplied under the new names too); with `dry_run`,
    only whether anything would change."""
    initializers = {t.name: t for t in graph.initializer}

    def int8(name: str) -> bool:
        return name in initializers and initializers[name].data_type == onnx.TensorProto.INT8

    converted = [
        n for n in graph.node
        if n.op_type in CONVERTED_OPS or (n.op_type == "DequantizeLinear" and int8(n.input[0]))
    ]
    copies: dict[str, str] = {}
    seen: set[str] = set()
    changed = False
    for index, node in enumerate(converted):
        scale = initializers.get(node.input[1]) if node.op_type == "DequantizeLinear" else None
        if scale is not None and len(node.input) == 2 and len(scale.dims) == 1 and scale.dims[0] > 1:
            changed = True
            if not dry_run:
                name = f"{node.input[0]}__edgec_zero_point{index}"
                graph.initializer.append(numpy_helper.from_array(np.zeros(scale.dims[0], np.int8), name))
                node.input.append(name)
        for position, name in enumerate(node.input):
            if not int8(name):
                continue
            if name not in seen:
                seen.add(name)
                continue
            changed = True
            if not dry_run:
                copy = onnx.TensorProto()
                copy.CopyFrom(initializers[name])
                copy.name = f"{name}__edgec_copy{index}_{position}"
                graph.initializer.append(copy)
                copies[copy.name] = name
                node.input[position] = copy.name
    return changed if dry_run else copies
