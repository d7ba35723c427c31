"""The TFLite Micro backend: model.tflite plus the C++ sources a TFLM firmware project compiles in."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from edgec import ir
from edgec.backend import Artifact
from edgec.backends.tflite import TfliteBackend
from edgec.backends.tflm import arena, budget, carray, planner, reader, resolver, scratch
from edgec.compress import storage
from edgec.errors import EdgecError

# On top of the estimate: kernel state that the optimized (CMSIS-NN, ESP-NN) builds keep
# beyond the reference kernels the per-operator constants were measured with.
MARGIN_BYTES = 1024
FILES = ("model.tflite", "model_data.cc", "model_data.h", "op_resolver.h", "memory_plan.json")


class TflmBackend(TfliteBackend):
    """TFLM loads the very flatbuffer the TFLite backend writes, so it shares that backend's
    options (keep_layout, io_dtype), validation budget and host runner (LiteRT's interpreter)."""

    name = "tflm"
    summary = "TFLite Micro: model.tflite, model_data.cc/.h, op_resolver.h and the tensor arena size"

    def lower(self, model: ir.Model, target, out_dir: Path) -> Artifact:
        from edgec.backends.tflite.lowering import lower_model

        if storage.METADATA_KEY in model.metadata:
            raise EdgecError(
                "tflm: huffman-coded weights need a decoder TFLite Micro does not have yet: "
                "build without huffman, or with --backend onnx"
            )
        # full_int8: microcontroller kernels (CMSIS-NN, ESP-NN) are int8; no float islands.
        lowering = lower_model(model, self.settings["keep_layout"], self.settings["io_dtype"], full_int8=True)
        flatbuffer = lowering.flatbuffer
        graph = reader.read(flatbuffer)
        op_resolver = resolver.header(graph.ops)  # an op without a TFLM kernel stops the build here
        kernels = scratch.library_for(target.cpu.triple)
        estimate = arena.estimate(graph, kernels, pointer_bytes(target.cpu.triple), MARGIN_BYTES)
        notes = [budget.summary(target, len(flatbuffer), estimate.arena_bytes, kernels)]
        notes += budget.check(target, len(flatbuffer), estimate.arena_bytes)
        if lowering.left_float:
            notes.append(f"io_dtype int8: {', '.join(lowering.left_float)} stayed float (no int8 tensor there)")
        notes += _idle_tensors(estimate.plan)
        if graph.subgraphs > 1:
            notes.append(f"the memory plan covers the main subgraph only ({graph.subgraphs} subgraphs)")
        sizes = {
            "arena_size": estimate.arena_bytes,
            "flash_bytes": len(flatbuffer),
            "peak_activation_bytes": planner.greedy(planner.requests(graph)).peak,
            "kernels": kernels,
            "ram_budget_bytes": target.ram_bytes,
            "external_ram_budget_bytes": target.external_ram_bytes,
            "flash_budget_bytes": target.flash_bytes,
        }
        (out_dir / "model.tflite").write_bytes(flatbuffer)
        (out_dir / "model_data.cc").write_text(carray.source(flatbuffer))
        (out_dir / "model_data.h").write_text(carray.header(arena_size=estimate.arena_bytes))
        (out_dir / "op_resolver.h").write_text(op_resolver)
        plan = {"target": target.name, **sizes, "arena": estimate.to_json()}
        (out_dir / "memory_plan.json").write_text(json.dumps(plan, indent=1) + "\n")
        info = {
            "precision": lowering.precision,
            "inputs": [p.to_json() for p in lowering.inputs],
            "outputs": [p.to_json() for p in lowering.outputs],
            "operators": dict(sorted(Counter(op.op for op in graph.operators).items())),
            "ops": list(graph.ops),
            **sizes,
            "notes": notes,
        }
        return Artifact(self.name, Path("model.tflite"), [Path(f) for f in FILES], info=info)


def _idle_tensors(plan: planner.MemoryPlan) -> list[str]:
    """Tensors no operator touches (a lowering left them behind) still get arena in TFLM."""
    idle = [b for b in plan.buffers if b.tensor is not None and b.first == -1]
    if not idle:
        return []
    names = ", ".join(b.name for b in idle[:3]) + (", ..." if len(idle) > 3 else "")
    count = (
        "1 tensor that no operator uses takes" if len(idle) == 1 else f"{len(idle)} tensors that no operator uses take"
    )
    return [f"{count} {sum(b.size for b in idle):,} bytes of the arena all the same: {names}"]


def pointer_bytes(triple: str) -> int:
    """4 on the 32-bit microcontrollers TFLM targets (Cortex-M, Xtensa, RV32), else 8."""
    return 4 if triple.startswith(("thumb", "arm", "xtensa", "riscv32", "i686")) else 8
