"""Tensor arena size: the planned activations plus TFLite Micro's own allocations in the arena."""

# TFLM splits the arena into a head (the memory plan: tensors and kernel scratch buffers, which
# overlap in time) and a tail of persistent allocations that live as long as the interpreter.
# The struct sizes below follow tflite-micro's definitions for a given pointer width; the
# per-operator constants were measured with the tflite-micro Python interpreter (64-bit host,
# reference kernels) and serve as upper bounds on 32-bit devices, whose structs are smaller.

from __future__ import annotations

from dataclasses import dataclass, field

from edgec.backends.tflm import planner, scratch
from edgec.backends.tflm.planner import ALIGNMENT, MemoryPlan, align
from edgec.backends.tflm.reader import Graph

# MicroAllocator, its buffer allocator, GreedyMemoryPlanner, MicroBuiltinDataAllocator,
# SubgraphAllocations and the input/output pointer arrays: 488 bytes measured on the 64-bit host
# (with the larger RecordingMicroAllocator), rounded up.
FIXED_BYTES = 512
# A kernel's OpData (AllocatePersistentBuffer, 16-byte aligned) plus its parsed builtin
# options: at most 124 bytes measured per operator for the ops edgec lowers (CONV_2D's, less
# its per-channel arrays, counted apart below), rounded up.
OPERATOR_BYTES = 128
# Scratch-buffer requests live in the head while kernels prepare: kMaxScratchBuffersPerOp.
MAX_SCRATCH_PER_OP = 12
# GreedyMemoryPlanner's working arrays per planned buffer: BufferRequirements (4 ints), two
# sort arrays (int each), ListEntry (3 ints) and the offset (int).
PLANNER_BYTES_PER_BUFFER = 40
# Ops whose Prepare allocates per-output-channel multiplier and shift arrays (int32 each).
PER_CHANNEL_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "FULLY_CONNECTED")


@dataclass(frozen=True)
class Structs:
    """Sizes of TFLM's structs for a pointer width (4 on the Cortex-M and Xtensa targets)."""

    pointer: int

    def _struct(self, size: int) -> int:
        return align(size, self.pointer)

    @property
    def eval_tensor(self) -> int:  # data, dims, type
        return self._struct(2 * self.pointer + 4)

    @property
    def node_and_registration(self) -> int:  # TfLiteNode (6 pointers, an int) + registration
        return self._struct(7 * self.pointer + 4)

    @property
    def tensor(self) -> int:
        """TfLiteTensor under TF_LITE_STATIC_MEMORY: data, dims, params (8), type, allocation
        type, bytes, quantization (an enum and a pointer), is_variable."""
        quantization = align(4, self.pointer) + self.pointer
        return self._struct(3 * self.pointer + 8 + 4 + 4 + quantization + 1)

    @property
    def affine_quantization(self) -> int:  # scale, zero_point, quantized_dimension
        return self._struct(2 * self.pointer + 4)

    @property
    def allocation_info(self) -> int:  # bytes, output_ptr, first, last, offline offset, flag
        return self._struct(2 * self.pointer + 13)

    @property
    def scratch_request(self) -> int:  # bytes, node index, subgraph index
        return self._struct(self.pointer + 8)


@dataclass
class ArenaEstimate:
    plan: MemoryPlan
    kernels: str
    pointer_bytes: int
    head_bytes: int  # the plan, or the planner's own temporaries if those are larger
    persistent: dict[str, int] = field(default_factory=dict)
    margin_bytes: int = 0

    @property
    def persistent_bytes(self) -> int:
        return sum(self.persistent.values())

    @property
    def arena_bytes(self) -> int:
        # + ALIGNMENT: TFLM aligns the arena's start up, which can cost up to 15 bytes.
        return align(self.head_bytes) + align(self.persistent_bytes) + ALIGNMENT + self.margin_bytes

    @property
    def scratch_bytes(self) -> int:
        return sum(b.size for b in self.plan.buffers if b.tensor is None)

    def to_json(self) -> dict:
        return {
            "arena_bytes": self.arena_bytes,
            "kernels": self.kernels,
            "pointer_bytes": self.pointer_bytes,
            "head_bytes": self.head_bytes,
            "persistent_bytes": self.persistent_bytes,
            "persistent": dict(self.persistent),
            "scratch_bytes": self.scratch_bytes,
            "margin_bytes": self.margin_bytes,
            "plan": self.plan.to_json(),
        }


def estimate(graph: Graph, kernels: str = "reference", pointer_bytes: int = 4, margin: int = 0) -> ArenaEstimate:
    """The arena TFLM needs for `graph` with `kernels` (see scratch.LIBRARIES), plus `margin` bytes."""
    structs = Structs(pointer_bytes)
    requested = scratch.requests(graph, kernels)
    plan = planner.greedy(planner.requests(graph, requested))
    head = max(plan.peak, _planning_bytes(graph, plan, requested, structs), _prepare_bytes(graph, requested, structs))
    return ArenaEstimate(plan, kernels, pointer_bytes, head, _persistent(graph, requested, structs), align(margin))


def _persistent(graph: Graph, requested: dict[int, list[int]], structs: Structs) -> dict[str, int]:
    io = [graph.tensor(i) for i in (*graph.inputs, *graph.outputs)]
    count = sum(len(sizes) for sizes in requested.values())
    return {
        "allocator": FIXED_BYTES,
        "eval_tensors": align(structs.eval_tensor * len(graph.tensors)),
        "nodes": align(structs.node_and_registration * len(graph.operators)),
        "io_tensors": sum(align(structs.tensor) + _quantization_bytes(t, structs) for t in io),
        "operator_state": OPERATOR_BYTES * len(graph.operators) + _per_channel_bytes(graph),
        "scratch_handles": align(structs.pointer * count) if count else 0,
        "variables": sum(align(t.bytes) for t in graph.tensors if t.variable),
    }


def _quantization_bytes(tensor, structs: Structs) -> int:
    """A quantized I/O tensor's TfLiteAffineQuantization and its zero-point array."""
    if tensor.type not in ("INT8", "UINT8", "INT16", "INT4"):
        return 0
    return align(structs.affine_quantization) + align(4 + 4 * tensor.channels)


def _per_channel_bytes(graph: Graph) -> int:
    total = 0
    for op in graph.operators:
        if op.op not in PER_CHANNEL_OPS or len(op.inputs) < 2 or op.inputs[1] < 0:
            continue
        weights = graph.tensor(op.inputs[1])
        if op.op == "FULLY_CONNECTED" and weights.channels == 1:
            continue  # per-tensor: TFLM keeps the one multiplier in OpData
        channels = graph.tensor(op.outputs[0]).shape[-1]
        total += 2 * align(4 * channels)
    return total


def _planning_bytes(graph: Graph, plan: MemoryPlan, requested, structs: Structs) -> int:
    """While the plan is made, the head holds the scratch requests, the AllocationInfo array and
    the planner's arrays at once."""
    count = sum(len(sizes) for sizes in requested.values())
    return (
        align(structs.scratch_request * (count + MAX_SCRATCH_PER_OP))
        + align(structs.allocation_info * (len(graph.tensors) + count) + structs.pointer)
        + align(PLANNER_BYTES_PER_BUFFER * len(plan.buffers))
    )


def _prepare_bytes(graph: Graph, requested, structs: Structs) -> int:
    """While a kernel prepares, the head holds the scratch requests and temporary TfLiteTensors
    (with their quantization) for the operator's inputs and outputs."""
    count = sum(len(sizes) for sizes in requested.values())
    widest = 0
    for op in graph.operators:
        tensors = [graph.tensor(i) for i in (*op.inputs, *op.outputs) if i >= 0]
        widest = max(widest, sum(align(structs.tensor) + _quantization_bytes(t, structs) for t in tensors))
    return align(structs.scratch_request * (count + MAX_SCRATCH_PER_OP)) + widest
