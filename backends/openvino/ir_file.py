"""What a written model.xml holds: IR version, operator sets, operators, and its ports."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

# OpenVINO 2022.3 LTS, the last release with the MYRIAD plugin (intel-ncs2), reads IR v10 and
# v11 with operators from opset1..opset10 (opset11 came with 2023.0). Checked by loading what
# save_model 2026.4 writes for LeNet-5, MobileNetV2 and PP-LCNet (fp32, fp16, int8) into the
# 2022.3.2 wheel's Core and running them on its CPU plugin.
LTS_2022_3_IR_VERSIONS = (10, 11)
LTS_2022_3_MAX_OPSET = 10
NOT_OPERATORS = ("Parameter", "Result", "Const")
LAYOUTS = {3: "NCW", 4: "NCHW", 5: "NCDHW"}


@dataclass(frozen=True)
class IrFile:
    ir_version: int
    # (type, opset) of every layer that is an operator (not Parameter/Result/Const).
    layers: tuple[tuple[str, str], ...]

    @property
    def operators(self) -> dict[str, int]:
        return dict(sorted(Counter(kind for kind, _ in self.layers).items()))

    @property
    def opsets(self) -> list[str]:
        return sorted({opset for _, opset in self.layers}, key=_opset_number)

    def unreadable_by_2022_3(self) -> list[str]:
        """Layers OpenVINO 2022.3 would not know: from a newer or an internal operator set."""
        return sorted(
            {f"{kind} ({opset})" for kind, opset in self.layers if _opset_number(opset) > LTS_2022_3_MAX_OPSET}
        )


def read(xml_path: Path) -> IrFile:
    root = ElementTree.parse(xml_path).getroot()
    layers = tuple(
        (layer.get("type"), layer.get("version", ""))
        for layer in root.iter("layer")
        if layer.get("type") not in NOT_OPERATORS
    )
    return IrFile(int(root.get("version", "0")), layers)


def _opset_number(opset: str) -> float:
    """opset8 -> 8; anything else (an internal set such as ie_internal_opset) sorts last."""
    found = re.fullmatch(r"opset(\d+)", opset)
    return int(found.group(1)) if found else float("inf")


def port_specs(model, ir_inputs: list[str], ir_outputs: list[str]) -> tuple[list[dict], list[dict]]:
    """Inputs and outputs of an ov.Model as manifest port specs under the IR's names (a port
    may carry more than one tensor name). 4-D ports keep ONNX's channels-first order."""

    def spec(port, name: str) -> dict:
        shape = port.get_partial_shape()
        dims = [d.get_length() if d.is_static else None for d in shape] if shape.rank.is_static else None
        return {
            "name": name,
            "shape": dims,
            "dtype": port.get_element_type().to_dtype().name,
            "layout": LAYOUTS.get(len(dims)) if dims is not None else None,
        }

    return (
        [spec(p, n) for p, n in zip(model.inputs, ir_inputs)],
        [spec(p, n) for p, n in zip(model.outputs, ir_outputs)],
    )
