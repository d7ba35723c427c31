"""The IR as TensorRT 8.2's ONNX parser reads it: float32 (or explicit int8), opset 13, only
operators in its table. Later TensorRT versions read this form too."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

import onnx

from edgec import ir
from edgec.backends.tensorrt import decompose, opset, precision, support
from edgec.errors import EdgecError

# The ONNX IR version that came with opset 13 (onnx 1.8, the ONNX that TensorRT 8.2's parser
# was built against): a newer file would claim features the parser predates.
IR_VERSION = 7


@dataclass
class Legalized:
    proto: onnx.ModelProto
    opset_before: int
    rewrites: dict[str, int] = field(default_factory=dict)  # what changed, for the notes
    facts: dict = field(default_factory=dict)  # int64 constants and ports the parser narrows


def legalize(model: ir.Model, qdq: Literal["explicit", "strip"] = "explicit") -> Legalized:
    """`qdq`: an int8 IR keeps its Q/DQ in TensorRT's explicit form, or loses them ("strip") for
    a float engine (weights keep their int8-rounded values). The IR itself is not modified."""
    work = model.copy()
    graph = work.graph
    ir.infer_shapes(graph)  # decompositions and opset rewrites read ranks and dimensions
    before = int(graph.opset)
    rewrites: Counter = Counter()
    found = ir.compute_precision(graph)
    if found == "fp16":
        rewrites["float16 casts removed (weights widened to float32)"] = precision.widen_fp16(graph)
    elif found == "int8" and qdq == "strip":
        rewrites["activation Q/DQ pairs removed (weights dequantized)"] = precision.strip_qdq(graph)
    elif found == "int8":
        requantized, dequantized = precision.tensorrt_qdq(graph)
        rewrites["int8 weights as float -> QuantizeLinear -> DequantizeLinear"] = requantized
        rewrites["uint8 weights with a zero point stored as float (TensorRT reads symmetric int8 only)"] = dequantized
    for op, count in decompose.decompose(graph).items():
        rewrites[f"{op} decomposed"] = count
    for op, count in opset.downgrade(graph).items():
        rewrites[f"{op} rewritten for opset {opset.TARGET_OPSET}"] = count
    facts = support.check(graph)
    graph.import_domains = None  # rebuilt from graph.opset on export
    proto = work.to_onnx()
    proto.ir_version = IR_VERSION
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EdgecError(f"the TensorRT-flavoured ONNX is not valid opset {opset.TARGET_OPSET}: {first}") from exc
    return Legalized(proto, before, {k: v for k, v in rewrites.items() if v}, facts)
