"""Newer OpenVINO operators rewritten to the versions OpenVINO 2022.3 reads, where they mean the same.

Current OpenVINO's ONNX frontend writes Pad-12 (negative pads), Interpolate-11 (one input for
scales or sizes), AvgPool-16/MaxPool-14 (ceil_torch rounding) and TopK-11 (stable sort) even
where the model uses none of what those versions added; OpenVINO 2022.3, the last release with
the MYRIAD plugin, knows only opset1..opset10 and refuses the whole file. Each rule below
returns the older operator, or None where the newer version's extra meaning is in use.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np


def downgrade(model) -> dict[str, int]:
    """Rewrite in place; returns {"Pad-12 -> Pad-1": count, ...}."""
    done: Counter = Counter()
    for node in model.get_ordered_ops():
        rule = RULES.get((node.get_type_name(), node.get_type_info().version_id))
        older = rule(node) if rule else None
        if older is not None:
            _replace(node, older)
            done[f"{node.get_type_name()}-{_number(node)} -> {older.get_type_name()}-{_number(older)}"] += 1
    if done:
        model.validate_nodes_and_infer_types()
    return dict(sorted(done.items()))


def _number(node) -> str:
    return node.get_type_info().version_id.removeprefix("opset")


def _replace(node, older) -> None:
    older.set_friendly_name(node.get_friendly_name())
    for i in range(older.get_output_size()):
        names = node.output(i).get_names()
        node.output(i).replace(older.output(i))
        older.output(i).get_tensor().set_names(names)


def _constant(output) -> np.ndarray | None:
    producer = output.get_node()
    return producer.get_data() if producer.get_type_name() == "Constant" else None


def _static_shape(output) -> list[int] | None:
    shape = output.get_partial_shape()
    return [d.get_length() for d in shape] if shape.is_static else None


def _pad(node):
    """Pad-12 added negative pads (cropping)."""
    import openvino.opset1 as opset1

    begin, end = _constant(node.input_value(1)), _constant(node.input_value(2))
    if begin is None or end is None or (begin < 0).any() or (end < 0).any():
        return None
    value = node.input_value(3) if node.get_input_size() > 3 else None
    args = [node.input_value(i) for i in range(3)]
    return opset1.pad(*args, node.get_attributes()["pad_mode"], value)


def _interpolate(node):
    """Interpolate-11 takes scales or sizes as one input and added the Pillow modes; v4 takes
    both (computed here from the static input shape)."""
    import openvino.opset10 as opset10  # its interpolate builds Interpolate-4

    attrs = node.get_attributes()
    shape = _static_shape(node.input_value(0))
    given = _constant(node.input_value(1))
    axes = _constant(node.input_value(2)) if node.get_input_size() > 2 else np.arange(len(shape or ()))
    if "pillow" in attrs["mode"] or shape is None or given is None or axes is None:
        return None
    sizes_in = np.array([shape[a] for a in axes], np.float64)
    if attrs["shape_calculation_mode"] == "scales":
        scales = given.astype(np.float32)
        sizes = np.floor(sizes_in * scales + 1e-5).astype(np.int64)  # Interpolate-4's own rounding
    else:
        sizes = given.astype(np.int64)
        scales = (sizes / sizes_in).astype(np.float32)
    return opset10.interpolate(
        node.input_value(0),
        sizes,
        scales,
        attrs["mode"],
        attrs["shape_calculation_mode"],
        attrs["pads_begin"],
        attrs["pads_end"],
        attrs["coordinate_transformation_mode"],
        attrs["nearest_mode"],
        attrs["antialias"],
        attrs["cube_coeff"],
        axes.astype(np.int64),
    )


def _pool_rounding(node, attrs) -> str | None:
    """ceil_torch (v14) is ceil that drops a last window starting in the right padding: the
    same as v1's ceil wherever no such window exists."""
    rounding = attrs["rounding_type"]
    if rounding != "ceil_torch":
        return rounding
    shape = _static_shape(node.input_value(0))
    if shape is None:
        return None
    dilations = attrs.get("dilations", [1] * len(attrs["kernel"]))
    spatial = zip(shape[2:], attrs["kernel"], attrs["strides"], attrs["pads_begin"], attrs["pads_end"], dilations)
    for size, kernel, stride, begin, end, dilation in spatial:
        windows = math.ceil((size + begin + end - (kernel - 1) * dilation - 1) / stride) + 1
        if (windows - 1) * stride >= size + begin:
            return None
    return "ceil"


def _avg_pool(node):
    """AvgPool-14 added ceil_torch, AvgPool-16 dilations."""
    import openvino.opset1 as opset1

    attrs = node.get_attributes()
    rounding = _pool_rounding(node, attrs)
    if rounding is None or any(d != 1 for d in attrs.get("dilations", [])):
        return None
    return opset1.avg_pool(
        node.input_value(0),
        attrs["strides"],
        attrs["pads_begin"],
        attrs["pads_end"],
        attrs["kernel"],
        attrs["exclude-pad"],
        rounding,
        attrs["auto_pad"],
    )


def _max_pool(node):
    """MaxPool-14 added ceil_torch."""
    import openvino.opset8 as opset8

    attrs = node.get_attributes()
    rounding = _pool_rounding(node, attrs)
    if rounding is None:
        return None
    return opset8.max_pool(
        node.input_value(0),
        attrs["strides"],
        attrs["dilations"],
        attrs["pads_begin"],
        attrs["pads_end"],
        attrs["kernel"],
        rounding,
        attrs["auto_pad"],
        attrs["index_element_type"],
        attrs["axis"],
    )


def _topk(node):
    """TopK-11 added stable sorting."""
    import openvino.opset3 as opset3

    attrs = node.get_attributes()
    if attrs["stable"]:
        return None
    return opset3.topk(
        node.input_value(0),
        node.input_value(1),
        attrs["axis"],
        attrs["mode"],
        attrs["sort"],
        attrs["index_element_type"],
    )


RULES = {
    ("Pad", "opset12"): _pad,
    ("Interpolate", "opset11"): _interpolate,
    ("AvgPool", "opset14"): _avg_pool,
    ("AvgPool", "opset16"): _avg_pool,
    ("MaxPool", "opset14"): _max_pool,
    ("TopK", "opset11"): _topk,
}
