"""Resize of H, W (4-D NCHW) -> RESIZE_NEAREST_NEIGHBOR / RESIZE_BILINEAR, where TFLite's flags
(align_corners, half_pixel_centers) sample exactly the pixels ONNX samples.

Both ops are separable, so equality is decided per axis at compile time: ONNX's source
coordinate (its coordinate_transformation_mode with the scale ONNX uses, which is the `scales`
value, not output/input) against TFLite's (which always derives the scale from the sizes). For
nearest, the picked source indices must be identical (nearest_mode included); for linear the
coordinates must agree within COORDINATE_ATOL pixels (both clamp to the edge). Anything else is
refused, naming the node and the attribute.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
from ai_edge_litert import schema_py_generated as schema

from edgec.backends.tflite.ops.common import present, refuse

COORDINATE_ATOL = 1e-5  # pixels, times max(1, input size): float rounding only
# (align_corners, half_pixel_centers); TFLite rejects both at once.
FLAGS = ((False, False), (False, True), (True, False))
COORDINATE_MODES = (
    "half_pixel",
    "pytorch_half_pixel",
    "half_pixel_symmetric",
    "align_corners",
    "asymmetric",
    "tf_half_pixel_for_nn",
)
ROUNDING = {
    "round_prefer_floor": lambda x: np.ceil(x - 0.5),
    "round_prefer_ceil": lambda x: np.floor(x + 0.5),
    "floor": np.floor,
    "ceil": np.ceil,
}


def _text(node, attr: str, default: str) -> str:
    value = node.attrs.get(attr, default)
    return value.decode() if isinstance(value, bytes) else value


def onnx_coordinates(mode: str, size_in: int, size_out: int, scale: float, dtype=np.float64) -> np.ndarray:
    """Source coordinate of every output index under ONNX's coordinate_transformation_mode."""
    o, scale = np.arange(size_out, dtype=dtype), dtype(scale)
    if mode == "half_pixel":
        return (o + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (o + 0.5) / scale - 0.5 if size_out > 1 else np.zeros(1, dtype)
    if mode == "half_pixel_symmetric":
        offset = size_in / 2 * (1 - size_out / (scale * size_in))
        return offset + (o + 0.5) / scale - 0.5
    if mode == "align_corners":
        # The resized length is scale * input (not the floored output size) in the ONNX reference
        # and its test data; onnxruntime uses the output size. They agree when the two are equal.
        length = scale * size_in
        return o * (size_in - 1) / (length - 1) if size_out > 1 else np.zeros(1, dtype)
    if mode == "asymmetric":
        return o / scale
    if mode == "tf_half_pixel_for_nn":
        return (o + 0.5) / scale
    raise ValueError(mode)


def _tflite_scale(size_in: int, size_out: int, align: bool) -> np.float32:
    if align and size_out > 1:
        return np.float32(size_in - 1) / np.float32(size_out - 1)
    return np.float32(size_in) / np.float32(size_out)


def tflite_coordinates(size_in: int, size_out: int, align: bool, half: bool) -> np.ndarray:
    """RESIZE_BILINEAR's source coordinate (float32, as its kernel computes it)."""
    o = np.arange(size_out, dtype=np.float32)
    scale = _tflite_scale(size_in, size_out, align)
    return (o + 0.5) * scale - np.float32(0.5) if half else o * scale


def tflite_nearest(size_in: int, size_out: int, align: bool, half: bool) -> np.ndarray:
    """RESIZE_NEAREST_NEIGHBOR's source index (GetNearestNeighbor in TFLite's reference kernel)."""
    scale = _tflite_scale(size_in, size_out, align)
    value = (np.arange(size_out, dtype=np.float32) + np.float32(0.5 if half else 0.0)) * scale
    index = np.sign(value) * np.floor(np.abs(value) + 0.5) if align else np.floor(value)  # TfLiteRound
    return np.clip(index, 0, size_in - 1).astype(np.int64)


def _matches(kind: str, rounding, ctm: str, axes, flags) -> bool:
    for size_in, size_out, scale in axes:
        if kind == "nearest":
            want = [
                np.clip(rounding(onnx_coordinates(ctm, size_in, size_out, scale, dtype)), 0, size_in - 1)
                for dtype in (np.float64, np.float32)
            ]
            # equal in float32 and float64 too: a tie that rounding error could flip is not claimed
            if not np.array_equal(want[0], want[1]):
                return False
            if not np.array_equal(want[0], tflite_nearest(size_in, size_out, *flags)):
                return False
        else:
            want = np.clip(onnx_coordinates(ctm, size_in, size_out, scale), 0, size_in - 1)
            got = np.clip(tflite_coordinates(size_in, size_out, *flags).astype(np.float64), 0, size_in - 1)
            if np.max(np.abs(want - got)) > COORDINATE_ATOL * max(1, size_in):
                return False
    return True


def _scales(node, shape_in) -> list[float]:
    """The scale ONNX's coordinate transform uses on each axis."""
    rank = len(shape_in)
    axes = [int(a) % rank for a in node.attrs.get("axes", range(rank))]
    if present(node, 2) and np.size(node.inputs[2].values):
        given = dict(zip(axes, np.asarray(node.inputs[2].values, np.float64).ravel(), strict=True))
        return [float(given.get(a, 1.0)) for a in range(rank)]
    sizes = dict(zip(axes, np.asarray(node.inputs[3].values).ravel(), strict=True))
    ratios = {a: sizes[a] / shape_in[a] for a in axes}
    policy = _text(node, "keep_aspect_ratio_policy", "stretch")
    if policy != "stretch":  # one scale for every listed axis
        common = min(ratios.values()) if policy == "not_larger" else max(ratios.values())
        ratios = dict.fromkeys(axes, common)
    return [float(ratios.get(a, 1.0)) for a in range(rank)]


def _listed(values) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


def lower_resize(ctx, node) -> None:
    x = ctx.get(node.inputs[0])
    out_shape = tuple(int(d) for d in node.outputs[0].shape)
    if len(x.shape) != 4:
        refuse(node, f"input of rank {len(x.shape)}: only 4-D NCHW inputs are resized")
    for position, what in ((2, "scales"), (3, "sizes")):
        if present(node, position) and not isinstance(node.inputs[position], gs.Constant):
            refuse(node, f"{what} computed at run time: TFLite needs the output size when it is built")
    kind = _text(node, "mode", "nearest")
    ctm = _text(node, "coordinate_transformation_mode", "half_pixel")
    nearest_mode = _text(node, "nearest_mode", "round_prefer_floor")
    if kind not in ("nearest", "linear"):
        refuse(node, f"mode={kind}: TFLite resizes nearest or bilinear only")
    if ctm not in COORDINATE_MODES:
        refuse(node, f"coordinate_transformation_mode={ctm}: TFLite has no such resize (e.g. no crop-and-resize)")
    if kind == "nearest" and nearest_mode not in ROUNDING:
        refuse(node, f"nearest_mode={nearest_mode} is not an ONNX rounding mode")
    scales = _scales(node, x.shape)
    if out_shape[:2] != tuple(x.shape[:2]) or scales[:2] != [1.0, 1.0]:
        refuse(node, f"scales {_listed(scales[:2])} resize the batch or channel axis: TFLite resizes H and W only")
    if int(node.attrs.get("antialias", 0)) and kind == "linear" and min(scales[2:]) < 1:
        refuse(node, "antialias=1 when downsampling: TFLite's bilinear resize does not filter")
    axes = [(x.shape[a], out_shape[a], scales[a]) for a in (2, 3)]
    rounding = ROUNDING.get(nearest_mode)
    flags = next((f for f in FLAGS if _matches(kind, rounding, ctm, axes, f)), None)
    if flags is None:
        detail = f", nearest_mode={nearest_mode}" if kind == "nearest" else ""
        refuse(
            node,
            f"coordinate_transformation_mode={ctm}{detail} with scales {_listed(scales[2:])} and sizes "
            f"{list(x.shape[2:])} -> {list(out_shape[2:])} samples other pixels than any TFLite {kind} resize",
        )
    if kind == "nearest":
        builtin, options = schema.BuiltinOperator.RESIZE_NEAREST_NEIGHBOR, schema.ResizeNearestNeighborOptionsT()
        options_type = schema.BuiltinOptions.ResizeNearestNeighborOptions
    else:
        builtin, options = schema.BuiltinOperator.RESIZE_BILINEAR, schema.ResizeBilinearOptionsT()
        options_type = schema.BuiltinOptions.ResizeBilinearOptions
    options.alignCorners, options.halfPixelCenters = flags
    size = ctx.builder.constant(ctx.name("size"), np.array(out_shape[2:], np.int32))
    out = ctx.new(node.outputs[0], nhwc=True)
    version = 3 if flags[1] else 1  # half_pixel_centers came with version 3
    ctx.builder.operator(builtin, [ctx.as_nhwc(x), size], [out.index], options, options_type, version=version)


LOWERINGS = {"Resize": lower_resize}
