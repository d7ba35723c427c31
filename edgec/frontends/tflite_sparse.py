"""TFLite's sparse constants (per-level DENSE or CSR, optional blocks) as dense numpy arrays."""

from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as schema


def densify(values: np.ndarray, sparsity: schema.SparsityParametersT, shape) -> np.ndarray:
    """Scatter the stored `values` into zeros of `shape`, walking the levels as LiteRT's
    FormatConverter does: level l traverses expanded dimension traversalOrder[l]; a DENSE level
    visits every index, a CSR level the indices its segments list for the parent position."""
    rank, order = len(shape), [int(d) for d in sparsity.traversalOrder]
    block_map = [] if sparsity.blockMap is None else [int(d) for d in sparsity.blockMap]
    positions, coords = np.zeros(1, np.int64), np.zeros((1, 0), np.int64)
    for level in sparsity.dimMetadata:
        if level.format == schema.DimensionType.DENSE:
            size = int(level.denseSize)
            positions = (positions[:, None] * size + np.arange(size)).ravel()
            column = np.tile(np.arange(size), len(coords))
            coords = np.repeat(coords, size, axis=0)
        else:
            segments = np.asarray(level.arraySegments.values, np.int64)
            indices = np.asarray(level.arrayIndices.values, np.int64)
            starts, counts = segments[positions], segments[positions + 1] - segments[positions]
            offsets = np.cumsum(counts) - counts
            positions = np.arange(counts.sum()) - np.repeat(offsets - starts, counts)
            column = indices[positions]
            coords = np.repeat(coords, counts, axis=0)
        coords = np.concatenate([coords, column[:, None]], axis=1)
    expanded = np.empty_like(coords)
    expanded[:, order] = coords
    index = [expanded[:, d] for d in range(rank)]
    for j, dim in enumerate(block_map):  # a blocked dimension: block number * block size + offset
        block_size = int(sparsity.dimMetadata[order.index(rank + j)].denseSize)
        index[dim] = index[dim] * block_size + expanded[:, rank + j]
    dense = np.zeros(shape, values.dtype)
    dense[tuple(index)] = values[positions]
    return dense
