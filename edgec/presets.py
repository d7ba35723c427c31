"""Named pipelines behind -O: each expands to plain pipeline text (see --print-pipeline)."""

from __future__ import annotations

from edgec.errors import PipelineError

_CLEANUP = "remove-identity,fold-constants,eliminate-dead-code"

PRESETS = {
    # Nothing: the model as imported, still checked and lowered.
    "0": "",
    # Structure-only cleanup: what any exporter should have done.
    "1": f"{_CLEANUP},topological-sort",
    # Full exact optimization: shapes folded, BatchNorm and biases fused, layout ops cancelled,
    # weights deduplicated; a second folding round picks up what the fusions exposed.
    "2": ",".join(
        [
            _CLEANUP,
            "simplify-shapes",
            "fold-batchnorm",
            "fuse-bias-add",
            "cancel-transpose-reshape",
            "merge-duplicate-initializers",
            "fold-constants",
            "eliminate-dead-code",
            "topological-sort",
        ]
    ),
}


def expand(level: str) -> str:
    """'2', 'O2' and '-O2' all name the same preset."""
    key = level.removeprefix("-").removeprefix("O")
    if key not in PRESETS:
        raise PipelineError(f"unknown optimization level '{level}' (levels: {', '.join('-O' + k for k in PRESETS)})")
    return PRESETS[key]
