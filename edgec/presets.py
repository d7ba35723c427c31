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


# Presets that change numerics: the full exact cleanup first (BatchNorm folded before quantizing,
# so one int8 weight tensor stands for Conv+BN), then the lossy pass. The int8 scheme is the
# backend's, so the same -O int8 builds TFLite's int8 for a Pi and TensorRT's for a Jetson.
# Where the target and backend have a measured layer cost table (edgec.quant.op_costs), layers
# whose int8 kernel the table predicts slower than a float island stay float: a prediction, so
# the same command builds the same bytes under any load. `--measure-latency` times the model on
# this machine instead (edgec.quant.speed) and writes its choice into the pipeline text.
LOSSY_PRESETS = {
    "int8": "quantize{{scheme={scheme}{select}}}",
    "fp16": "convert-fp16",
}


# Deep Compression: prune, share, entropy-code.
# With training data (--train) pruning goes in five steps toward 94% of the weights (one global
# magnitude threshold), each followed by distillation from the uncompressed model, then 4-bit
# (fully connected) / 6-bit (conv) codebooks whose centroids are fine-tuned, then Huffman.
# On LeNet-5 the gradual schedule lost 0.42-0.46 points where three steps lost 0.5-0.57, and
# 4/6-bit codebooks bought back the size of the lower final sparsity (bench/compress).
# The schedule and bit widths are where the search starts, not what every model gets: pruning
# stops at the last step that still meets the fidelity budget after fine-tuning, and codebooks
# widen until it holds (a 61k-parameter LeNet-5 missed it at 94%: cosine 0.81 < 0.9).
COMPRESS_TRAINED = ",".join(
    [
        "prune-gradual{sparsities=[0.5,0.7,0.8,0.9,0.94],epochs=[2,2,3,3,6],scope=global}",
        "share-finetune{bits=4,conv_bits=6,epochs=3}",
        "huffman",
    ]
)
# Without it, how far pruning goes is model-specific: the pass searches for the largest global
# sparsity (up to 90%) that keeps 98% of the check samples' decisions.
COMPRESS_UNTRAINED = (
    "prune-magnitude{sparsity=0.9,scope=global,min_agreement=0.98},weight-share{bits=4,conv_bits=6},huffman"
)


def expand(level: str, scheme: str = "onnx", select: str = "all", train: bool = False) -> str:
    """'2', 'O2' and '-O2' all name the same preset; 'int8', 'fp16' and 'compress' build on '2'.
    `select`: the quantize pass's layer selection (all, cost or latency)."""
    key = level.removeprefix("-").removeprefix("O")
    if key in LOSSY_PRESETS:
        select = "" if select == "all" else f",select={select}"
        return PRESETS["2"] + "," + LOSSY_PRESETS[key].format(scheme=scheme, select=select)
    if key == "compress":
        return PRESETS["2"] + "," + (COMPRESS_TRAINED if train else COMPRESS_UNTRAINED)
    if key not in PRESETS:
        names = [f"-O{k}" for k in PRESETS] + [f"-O {k}" for k in (*LOSSY_PRESETS, "compress")]
        raise PipelineError(f"unknown optimization level '{level}' (levels: {', '.join(names)})")
    return PRESETS[key]
