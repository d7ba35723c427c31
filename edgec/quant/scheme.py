"""Quantization schemes: what each backend's int8 kernels expect, as data.

onnx           activations uint8 (or int8) asymmetric per tensor; weights int8 symmetric per
               output channel; bias int32 (the Q/DQ patterns onnxruntime fuses: a layer's inputs
               and its output).
openvino       as onnx, with Q/DQ on the inputs of the int8 layers and residual Adds only
               (FakeQuantize placement as NNCF's), depthwise inputs per channel, float bias.
tflite         the TFLite int8 spec: activations int8 asymmetric; weights int8 in [-127, 127]
               symmetric, per channel; bias int32 with scale s_in * s_w; fixed output parameters
               for Softmax/Sigmoid (1/256, -128) and Tanh (1/128, 0); Concat, pooling, Reshape,
               Pad, Transpose keep their input's scale and zero point.
tensorrt       symmetric int8 everywhere (zero point 0); Q/DQ only where TensorRT fuses them: on
               the inputs of Conv/ConvTranspose/Gemm/MatMul (and residual Adds).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from edgec.errors import EdgecError

COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# Ops whose output is a rearrangement (or a max) of the input: same scale and zero point.
SHARED_OPS = (
    "Reshape",
    "Flatten",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "MaxPool",
    "Concat",
    "Pad",
    "Slice",
    "Split",
    "Resize",
    "DepthToSpace",
    "SpaceToDepth",
    "Gather",
)
# Activations a producer's requantization can absorb (onnxruntime drops them when Q clamps alike).
ABSORBED_ACTIVATIONS = ("Relu", "Clip")


@dataclass(frozen=True)
class Scheme:
    name: str
    activation_dtype: str  # "uint8" or "int8"
    symmetric_activations: bool
    quantized_ops: tuple[str, ...]  # ops whose activation inputs and outputs get Q/DQ
    output_qdq: bool = True  # False: Q/DQ only on inputs (TensorRT's explicit quantization)
    fixed_outputs: dict = field(default_factory=dict)  # op -> (scale, zero point)
    # False: the model's outputs are quantized too (a fully int8 TFLite model has int8 outputs);
    # the IR still returns float through a final DequantizeLinear.
    float_outputs: bool = True
    # Depthwise Conv inputs. A depthwise layer mixes no channels, yet one per-tensor scale lets
    # the widest channel set every channel's step (PP-LCNet's HardSwish outputs span 0.4 to 12
    # by channel; its real-image SQNR: 13.6 dB per tensor, 27.9 per channel, in NNCF's model).
    # "per-channel": quantized per channel, NNCF's CPU placement (OpenVINO's FakeQuantize takes
    #   per-channel ranges; the dequantization moves past the depthwise layer).
    # "float-if-unfused": where the input's quantizer stands alone (its producer runs in float,
    #   e.g. a HardSwish) the depthwise layer stays float. onnxruntime fuses per-tensor scales
    #   only; PP-LCNet with its depthwise layers float ran as fast as with them int8 (3.86 vs
    #   3.88 ms, 15.0 -> 18.6 dB on real images), per-channel DequantizeLinear slowly (9.6 ms).
    # "per-tensor": the runtime's int8 kernels take one scale per activation (TFLite, TensorRT).
    depthwise_inputs: str = "per-tensor"
    # An Add is quantized only when both operands are computed (a residual join), not a constant.
    residual_adds_only: bool = False
    # Spelled-out LayerNorms stay float (edgec.quant.normalization): runtimes whose int8 kernels
    # end at the Conv/Gemm/MatMul and run the rest in float. TFLite's are int8 end to end; the
    # openvino scheme quantizes neither a Mul nor an Add of a constant anyway.
    float_normalizations: bool = False

    @property
    def qrange(self) -> tuple[int, int]:
        if self.activation_dtype == "uint8":
            return 0, 255
        return (-127, 127) if self.symmetric_activations else (-128, 127)

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.activation_dtype)


_ORT_OPS = (
    COMPUTE_OPS
    + ("Add", "Mul", "AveragePool", "GlobalAveragePool", "Sigmoid", "LeakyRelu", "Softmax")
    + SHARED_OPS
    + ABSORBED_ACTIVATIONS
)

SCHEMES = {
    "onnx": Scheme("onnx", "uint8", False, _ORT_OPS, depthwise_inputs="float-if-unfused", float_normalizations=True),
    # NNCF's placement: Q/DQ on the inputs of the layers OpenVINO runs in int8 and of residual
    # Adds. Quantizing each Conv's output as well (onnxruntime's fusion pattern) rounds the
    # pre-activation: PP-LCNet on held-out real images 19.2 dB that way, 30.6 this way (run by
    # OpenVINO; NNCF's model 27.9), at NNCF's latency (1.58 ms; 2.44 before). A Mul, or an Add
    # of a constant, gains OpenVINO no int8 kernel and only rounds (LSTM gates, LayerNorm, SiLU:
    # ddddocr's recognizer 19.1 -> 29.8 dB held out, magika 15.9 -> 26.5, nudenet 37.9 -> 41.3
    # without them). Moving the quantizers up through Concat/Split as NNCF does was measured
    # too: nudenet 40.5 dB, no faster in OpenVINO.
    "openvino": Scheme(
        "openvino",
        "uint8",
        False,
        COMPUTE_OPS + ("Add", "AveragePool", "GlobalAveragePool"),
        output_qdq=False,
        depthwise_inputs="per-channel",
        residual_adds_only=True,
    ),
    "tflite": Scheme(
        "tflite",
        "int8",
        False,
        COMPUTE_OPS
        + (
            "Add",
            "Mul",
            "AveragePool",
            "GlobalAveragePool",
            "Sigmoid",
            "Tanh",
            "Softmax",
            "LeakyRelu",
            "HardSwish",
            "ReduceMean",
        )
        + SHARED_OPS
        + ABSORBED_ACTIVATIONS,
        fixed_outputs={"Softmax": (1 / 256, -128), "Sigmoid": (1 / 256, -128), "Tanh": (1 / 128, 0)},
        float_outputs=False,
    ),
    "tensorrt": Scheme("tensorrt", "int8", True, COMPUTE_OPS + ("Add",), output_qdq=False, float_normalizations=True),
}


def get(name: str, activation_dtype: str | None = None, symmetric: bool = False) -> Scheme:
    """`symmetric`: activations with negative values quantized zero-centred (see activation_params)."""
    if name not in SCHEMES:
        raise EdgecError(f"unknown quantization scheme '{name}' (schemes: {', '.join(SCHEMES)})")
    scheme = SCHEMES[name]
    if activation_dtype and activation_dtype != scheme.activation_dtype:
        if name in ("tflite", "tensorrt"):
            raise EdgecError(f"scheme {name} requires {scheme.activation_dtype} activations")
        scheme = dataclasses.replace(scheme, activation_dtype=activation_dtype)
    if symmetric and not scheme.symmetric_activations:
        scheme = dataclasses.replace(scheme, symmetric_activations=True)
    return scheme


# --- parameters ---------------------------------------------------------------------------------


def activation_params(lo: float, hi: float, scheme: Scheme) -> tuple[np.float32, np.integer]:
    """(scale, zero point) for a range; the range always contains 0, so 0 is exact."""
    qmin, qmax = scheme.qrange
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo < 1e-12:  # an (all but) constant-zero tensor: any scale represents it exactly
        return np.float32(1.0), scheme.np_dtype.type(0 if scheme.symmetric_activations else qmin)
    if scheme.symmetric_activations and scheme.activation_dtype == "uint8":
        # Zero-centred on the unsigned grid: a tensor with negative values gets zero point 128
        # (the range [-128, 127] steps, what OpenVINO reads as signed int8 without a zero point),
        # one without keeps [0, 255] from 0.
        if lo >= 0:
            return np.float32(hi / qmax), scheme.np_dtype.type(0)
        return np.float32(max(-lo, hi) / 127), scheme.np_dtype.type(128)
    if scheme.symmetric_activations:
        return np.float32(max(-lo, hi) / qmax), scheme.np_dtype.type(0)
    scale = (hi - lo) / (qmax - qmin)
    zero_point = int(np.clip(round(qmin - lo / scale), qmin, qmax))
    return np.float32(scale), scheme.np_dtype.type(zero_point)


def channel_activation_params(lo: np.ndarray, hi: np.ndarray, scheme: Scheme) -> tuple[np.ndarray, np.ndarray]:
    """(scales, zero points) per channel: activation_params of each channel's range."""
    pairs = [activation_params(float(a), float(b), scheme) for a, b in zip(lo, hi)]
    return np.array([p[0] for p in pairs], np.float32), np.array([p[1] for p in pairs], scheme.np_dtype)


def range_of(scale, zero_point, scheme: Scheme) -> tuple[float, float]:
    """The real interval a per-tensor (scale, zero point) represents."""
    qmin, qmax = scheme.qrange
    return float((qmin - int(zero_point)) * float(scale)), float((qmax - int(zero_point)) * float(scale))


INT32_MAX = 2**31 - 1


TINY_SCALE = float(np.finfo(np.float32).tiny)


# Full-range int8 weights, and the reduced range for CPUs whose int8 kernels saturate 16-bit pair
# sums (Target.int8_pair_sums_saturate; onnxruntime's reduce_range, NNCF's overflow fix).
WEIGHT_QMAX = 127
REDUCED_WEIGHT_QMAX = 64


def quantize_weights(
    weights: np.ndarray, axis: int | None, min_scale=None, qmax: int = WEIGHT_QMAX
) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 in [-qmax, qmax] per slice along `axis` (per tensor when None): (q, scale).
    `min_scale` (per slice) widens a scale where the bias would not fit int32 otherwise."""
    w = np.asarray(weights).astype(np.float64)
    if axis is None:
        bound = np.abs(w).max(initial=0.0)
        floor = 0.0 if min_scale is None else float(np.max(min_scale, initial=0.0))
        # Subnormal weights: bound / 127 would round to a zero float32 scale.
        scale = np.float32(max(bound / qmax if bound > 0 else 1.0, floor, TINY_SCALE))
        return np.clip(np.round(w / scale), -qmax, qmax).astype(np.int8), np.asarray(scale, np.float32)
    moved = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    bound = np.abs(moved).max(axis=1, initial=0.0)
    scale = np.where(bound > 0, bound / qmax, 1.0)
    if min_scale is not None:
        scale = np.maximum(scale, min_scale)
    scale = np.maximum(scale, TINY_SCALE).astype(np.float32)  # never a zero float32 scale
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.round(w / scale.reshape(shape)), -qmax, qmax).astype(np.int8)
    return q, scale


def bias_safe_weight_scale(bias: np.ndarray, input_scale: float) -> np.ndarray:
    """The smallest weight scale per channel that keeps bias / (s_in * s_w) inside int32 (with a
    margin for rounding): a tiny s_in * s_w would otherwise saturate a large bias silently."""
    return np.abs(bias.astype(np.float64)) / (float(input_scale) * INT32_MAX * 0.999)


def quantize_bias(bias: np.ndarray, input_scale: np.float32, weight_scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int32 bias with scale s_in * s_w (per output channel), zero point 0. The caller widens the
    weight scale first (bias_safe_weight_scale) so nothing saturates."""
    scale = (np.float32(input_scale) * weight_scale.astype(np.float32)).astype(np.float32)
    q = np.clip(np.round(bias.astype(np.float64) / scale.astype(np.float64)), -(2**31), 2**31 - 1)
    return q.astype(np.int32), scale
