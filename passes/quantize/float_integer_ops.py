"""onnxruntime's dynamic quantization rewritten as float layers with int8-stored weights.

`quantize_dynamic` writes each Conv/MatMul as integer arithmetic around activations it
quantizes at run time:

    x -> DynamicQuantizeLinear -> (x_q, x_scale, x_zp)
    ConvInteger(x_q, w_q, x_zp, w_zp) [+ int32 bias floor(b / (x_scale * w_scale))]
        -> Cast(float) -> Mul(x_scale * w_scale) -> y

and each LSTM as com.microsoft DynamicQuantizeLSTM with int8 W/R stored transposed. Runtimes
without those operators (TFLite, TVM's importer, TensorRT) have the same scheme under another
name: float activations and int8 weights, the activations quantized inside the kernel (TFLite's
dynamic-range "hybrid" kernels). This pass, which such backends run first (Backend.prepare_passes,
so the cleanup folds the shapes the contrib LSTM hid and -O int8 quantizes float layers), rewrites
each matched pattern to that form: Conv/MatMul reading DequantizeLinear(w_q) and the float bias,
and a plain LSTM with the dequantized weights. Only the run-time rounding of activations goes,
which the pass's check measures; a pattern that does not match exactly is left as it is, for
the backend to refuse by name.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from edgec.graph_utils import constant_value, only_consumer, producer
from edgec.pass_infra import Numerics, Pass, PassContext, PassResult
from edgec.passes.quantize.quantize import QuantizePass


class FloatIntegerOpsPass(Pass):
    name = "float-integer-ops"
    summary = (
        "Rewrite onnxruntime's dynamic int8 (ConvInteger/MatMulInteger/DynamicQuantizeLSTM) as float layers "
        "with int8 weights."
    )
    numerics = Numerics.LOSSY
    # Only the run-time 8-bit rounding of activations goes: the mirror of adding it, so judged by
    # the budget edgec holds its own int8 to against float (the quantize pass's). A tighter one
    # was tuned on one model (ddddocr's CRNN: 31.4 dB on random inputs, 30.0 on real crops, same
    # top-1 on all logits). The rewrite itself is held exact by its tests: with the rounding gone
    # the model comes closer to the float model it was quantized from, never further.
    tolerance = QuantizePass.tolerance

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        layers = float_layers_from_integer_ops(graph)
        return PassResult(layers > 0, {"layers_rewritten": layers})


def float_layers_from_integer_ops(graph: gs.Graph) -> int:
    """Rewrite every matched ConvInteger/MatMulInteger chain and DynamicQuantizeLSTM of `graph`
    (in place); returns how many layers changed."""
    changed = 0
    for node in list(graph.nodes):
        if node.op in ("ConvInteger", "MatMulInteger"):
            changed += _rewrite_integer_layer(graph, node)
        elif node.op == "DynamicQuantizeLSTM":
            changed += _rewrite_lstm(graph, node)
    if changed:
        graph.cleanup(remove_unused_graph_inputs=False).toposort()
    return changed


def _only_reader(graph: gs.Graph, tensor: gs.Tensor, op: str) -> gs.Node | None:
    reader = only_consumer(graph, tensor)
    return reader if reader is not None and reader.op == op else None


def _optional(node: gs.Node, index: int) -> gs.Tensor | None:
    """Input `index` of `node`, or None where it is left out (absent or named "")."""
    return node.inputs[index] if len(node.inputs) > index and node.inputs[index].name else None


def _constant(tensor) -> np.ndarray | None:
    value = constant_value(tensor) if tensor is not None else None
    return None if value is None else np.asarray(value)


def _rewrite_integer_layer(graph: gs.Graph, node: gs.Node) -> int:
    quantizer = producer(node.inputs[0])
    if quantizer is None or quantizer.op != "DynamicQuantizeLinear" or node.inputs[0] is not quantizer.outputs[0]:
        return 0
    x_zero_point = _optional(node, 2)
    if x_zero_point is not None and x_zero_point is not quantizer.outputs[2]:
        return 0
    x, x_scale = quantizer.inputs[0], quantizer.outputs[1]
    w_q = _constant(node.inputs[1])
    if w_q is None or w_q.dtype not in (np.int8, np.uint8):
        return 0
    w_zp = _constant(_optional(node, 3)) if _optional(node, 3) is not None else np.zeros((), w_q.dtype)
    if w_zp is None:
        return 0
    tensor, bias = node.outputs[0], None
    add = _only_reader(graph, tensor, "Add")
    if add is not None:  # the int32 bias quantize_dynamic adds before the Cast
        bias = _float_bias(add, tensor)
        if bias is None:
            return 0
        tensor = add.outputs[0]
    cast = _only_reader(graph, tensor, "Cast")
    rescale = _only_reader(graph, cast.outputs[0], "Mul") if cast is not None else None
    if rescale is None:
        return 0
    w_scale = _weight_scale(rescale, cast.outputs[0], x_scale)
    if w_scale is None:
        return 0
    channels = w_q.shape[0] if node.op == "ConvInteger" else w_q.shape[-1]
    if w_scale.size not in (1, channels) or w_zp.size not in (1, channels):
        return 0
    if node.op == "ConvInteger" and bias is not None and bias.size != channels:
        return 0
    if int(cast.attrs.get("to", 0)) != 1:  # to float32
        return 0
    axis = 0 if node.op == "ConvInteger" else w_q.ndim - 1
    per_channel = w_scale.size > 1 or w_zp.size > 1
    if per_channel:
        scale = np.broadcast_to(w_scale.astype(np.float32).ravel(), (channels,)).copy()
        zero = np.broadcast_to(w_zp.ravel(), (channels,)).astype(w_q.dtype)
    else:
        scale, zero = w_scale.astype(np.float32).reshape(()), w_zp.astype(w_q.dtype).reshape(())
    weight = gs.Variable(f"{node.name}_dequantized_weight", dtype=np.float32, shape=list(w_q.shape))
    graph.nodes.append(
        gs.Node(
            "DequantizeLinear",
            name=f"{node.name}_weight_dequantize",
            attrs={"axis": axis} if per_channel else {},
            inputs=[
                gs.Constant(f"{node.name}_weight", w_q),
                gs.Constant(f"{node.name}_weight_scale", np.asarray(scale)),
                gs.Constant(f"{node.name}_weight_zero_point", np.asarray(zero)),
            ],
            outputs=[weight],
        )
    )
    y = rescale.outputs[0]
    rescale.outputs.clear()
    node.outputs.clear()
    if node.op == "ConvInteger":
        inputs = [x, weight]
        if bias is not None:
            inputs.append(gs.Constant(f"{node.name}_bias", bias.reshape(-1).astype(np.float32)))
        graph.nodes.append(gs.Node("Conv", name=node.name, attrs=dict(node.attrs), inputs=inputs, outputs=[y]))
    elif bias is None:
        graph.nodes.append(gs.Node("MatMul", name=node.name, inputs=[x, weight], outputs=[y]))
    else:
        product = gs.Variable(f"{node.name}_product", dtype=np.float32)
        bias_constant = gs.Constant(f"{node.name}_bias", bias.astype(np.float32))
        graph.nodes.append(gs.Node("MatMul", name=node.name, inputs=[x, weight], outputs=[product]))
        graph.nodes.append(gs.Node("Add", name=f"{node.name}_bias_add", inputs=[product, bias_constant], outputs=[y]))
    return 1


def _float_bias(add: gs.Node, accumulator: gs.Tensor) -> np.ndarray | None:
    """The float bias b of Add(acc, [Reshape](Cast(Floor(Div(b, scale))))), shaped as the Reshape."""
    other = add.inputs[1] if add.inputs[0] is accumulator else add.inputs[0]
    shape = None
    step = producer(other)
    if step is not None and step.op == "Reshape":
        shape = _constant(step.inputs[1])
        step = producer(step.inputs[0])
    chain = []
    for op in ("Cast", "Floor", "Div"):
        if step is None or step.op != op:
            return None
        chain.append(step)
        step = producer(step.inputs[0])
    bias = _constant(chain[-1].inputs[0])
    if bias is None:
        return None
    return bias.reshape(shape) if shape is not None else bias


def _weight_scale(rescale: gs.Node, value: gs.Tensor, x_scale: gs.Tensor) -> np.ndarray | None:
    """w_scale of Mul(value, Mul(x_scale, w_scale))."""
    other = rescale.inputs[1] if rescale.inputs[0] is value else rescale.inputs[0]
    product = producer(other)
    if product is None or product.op != "Mul" or not any(t is x_scale for t in product.inputs):
        return None
    w_scale = product.inputs[1] if product.inputs[0] is x_scale else product.inputs[0]
    return _constant(w_scale)


def _rewrite_lstm(graph: gs.Graph, node: gs.Node) -> int:
    """DynamicQuantizeLSTM(X, W, R, B, seq_lens, h0, c0, P, W_scale, W_zp, R_scale, R_zp), W/R
    int8 [directions, in, 4*hidden] -> LSTM with float W/R [directions, 4*hidden, in]."""
    inputs = list(node.inputs) + [None] * (12 - len(node.inputs))
    weights = []
    for stored, scale, zero in ((inputs[1], inputs[8], inputs[9]), (inputs[2], inputs[10], inputs[11])):
        values, scale, zero = _constant(stored), _constant(scale), _constant(zero)
        if values is None or scale is None or zero is None or values.ndim != 3:
            return 0
        directions = values.shape[0]
        # per direction [D] or per gate column [D, 4*hidden]
        scale = scale.astype(np.float32).reshape(directions, 1, -1)
        zero = zero.astype(np.int32).reshape(directions, 1, -1)
        real = (values.astype(np.int32) - zero).astype(np.float32) * scale
        weights.append(gs.Constant(f"{stored.name}_dequantized", np.ascontiguousarray(real.transpose(0, 2, 1))))
    lstm_inputs = [inputs[0], *weights] + [t if t is not None else gs.Variable.empty() for t in inputs[3:8]]
    while not lstm_inputs[-1].name:  # trailing optional inputs left out
        lstm_inputs.pop()
    outputs = list(node.outputs)
    graph.nodes.append(gs.Node("LSTM", name=node.name, attrs=dict(node.attrs), inputs=lstm_inputs, outputs=outputs))
    node.outputs.clear()
    return 1
