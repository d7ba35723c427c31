"""float16 arithmetic in Relax as the IR's reference computes it: fp16 storage, fp32 sums.

TVM's ONNX importer gives a float16 Conv or MatMul a float16 accumulator, and its reductions,
softmax and transcendental functions compute in float16 too (LLVM rounds every step to half on a
CPU without fp16 arithmetic). onnxruntime, TensorRT and cuDNN accumulate in float32. Measured on
PP-OCRv4 (convert-fp16 IRs, 16 random samples): the recognizer's output was 23.4 dB from the IR
(each Conv lost a few dB), and the detector's GlobalAveragePool over a 40x40 map summed to inf.
Here a float16 Conv/MatMul gets a float32 accumulator (`out_dtype`), its bias is added to that
accumulator (one ONNX op, rounded once, as the IR does), then one Cast back to float16; the ops
listed in WIDENED read float32 and write float16. Recognizer: 44.5 dB from the IR. Detector
(160x160, the build's 16 check samples): 30.6 dB from the IR and 25.4 from float with the bias
added after the Cast, 44.2 and 30.7 with it before (the IR: 32.1 from float). Weights stay
float16 constants; the Casts fuse into the neighbouring kernels.
"""

from __future__ import annotations

ACCUMULATING = {
    "relax.nn.conv1d",
    "relax.nn.conv2d",
    "relax.nn.conv3d",
    "relax.nn.conv1d_transpose",
    "relax.nn.conv2d_transpose",
    "relax.matmul",
}
WIDENED = {
    # reductions: a float16 running sum overflows (65504) or stops growing
    "relax.nn.adaptive_avg_pool1d",
    "relax.nn.adaptive_avg_pool2d",
    "relax.nn.avg_pool1d",
    "relax.nn.avg_pool2d",
    "relax.mean",
    "relax.sum",
    "relax.prod",
    "relax.variance",
    "relax.cumsum",
    "relax.nn.softmax",
    "relax.nn.log_softmax",
    "relax.nn.layer_norm",
    "relax.nn.group_norm",
    # transcendental functions: TVM's float16 polynomials are float16-accurate at best per step
    "relax.sigmoid",
    "relax.exp",
    "relax.log",
    "relax.tanh",
    "relax.erf",
    "relax.sqrt",
    "relax.rsqrt",
    "relax.power",
}


def with_fp32_arithmetic(mod):
    """`mod` with every float16 op of ACCUMULATING and WIDENED computed as described above;
    a module without float16 ops comes back unchanged."""
    from tvm import relax

    mutator = _mutator_class()(mod)
    for global_var, func in mod.functions_items():
        if isinstance(func, relax.Function):
            mutator.builder_.update_func(global_var, mutator.visit_expr(func))
    return mutator.builder_.get()


def _mutator_class():
    from tvm import relax
    from tvm.relax import PyExprMutator, expr_functor

    @expr_functor.mutator
    class Fp32Arithmetic(PyExprMutator):
        def visit_call_(self, call):
            call = self.builder_.normalize(super().visit_call_(call))
            name = getattr(call.op, "name", "")
            if name == "relax.add" and _dtype(call) == "float16":
                return self._bias_in_float32(call)
            if _dtype(call) != "float16" or name not in ACCUMULATING | WIDENED:
                return call
            if name in ACCUMULATING:
                wide = _with_fp32_accumulator(call)
            else:
                args = [relax.op.astype(a, "float32") if _dtype(a) == "float16" else a for a in call.args]
                wide = relax.Call(call.op, args, call.attrs, call.ty_args)
            return relax.op.astype(self.builder_.normalize(wide), "float16")

        def _bias_in_float32(self, call):
            """Conv + bias is one ONNX op, rounded to float16 once: the bias joins the float32
            accumulator before the Cast rather than after it."""
            for position, operand in enumerate(call.args):
                accumulator = self._float32_accumulator(operand)
                other = call.args[1 - position]
                if accumulator is not None and _is_constant(other, self):
                    wide = relax.op.add(accumulator, relax.op.astype(other, "float32"))
                    return relax.op.astype(self.builder_.normalize(wide), "float16")
            return call

        def _float32_accumulator(self, operand):
            """The float32 Conv/MatMul result behind `operand` when operand is its Cast to float16."""
            cast = self.lookup_binding(operand) if isinstance(operand, relax.Var) else None
            if not (isinstance(cast, relax.Call) and getattr(cast.op, "name", "") == "relax.astype"):
                return None
            inner = cast.args[0]
            source = self.lookup_binding(inner) if isinstance(inner, relax.Var) else inner
            accumulates = isinstance(source, relax.Call) and getattr(source.op, "name", "") in ACCUMULATING
            return inner if accumulates and _dtype(inner) == "float32" else None

    return Fp32Arithmetic


def _is_constant(expr, mutator) -> bool:
    """A constant, or a reshape/broadcast of one (the importer reshapes a Conv bias to [1, C, 1, 1])."""
    import tvm
    from tvm import relax

    while True:
        if isinstance(expr, tvm.ir.expr.Constant):
            return True
        bound = mutator.lookup_binding(expr) if isinstance(expr, relax.Var) else expr
        reshaped = isinstance(bound, relax.Call) and getattr(bound.op, "name", "") in ("relax.reshape", "relax.broadcast_to")
        if not reshaped:
            return False
        expr = bound.args[0]


def _dtype(expr) -> str | None:
    return getattr(getattr(expr, "ty", None), "dtype", None)


def _with_fp32_accumulator(call):
    from tvm import relax

    name, attrs = call.op.name, call.attrs
    if name == "relax.matmul":
        return relax.op.matmul(*call.args, out_dtype="float32")
    options = {
        "strides": attrs.strides,
        "padding": attrs.padding,
        "dilation": attrs.dilation,
        "groups": attrs.groups,
        "data_layout": attrs.data_layout,
        "kernel_layout": attrs.kernel_layout,
        "out_layout": attrs.out_layout,
        "out_dtype": "float32",
    }
    if name.endswith("_transpose"):
        options["output_padding"] = attrs.output_padding
    return getattr(relax.op.nn, name.rsplit(".", 1)[-1])(*call.args, **options)
