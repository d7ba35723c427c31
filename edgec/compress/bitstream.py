"""Fixed-width and canonical Huffman codes for integer symbol streams, vectorized with numpy.

Huffman codes are canonical, so a stream's table is just one code length per symbol. Decoding
needs no per-symbol Python loop: every bit position is looked up in a 2^L table at once, and
the chain of code starts (p -> p + length(p)) is followed by pointer doubling.
"""

from __future__ import annotations

import heapq

import numpy as np

from edgec.errors import EdgecError

# Lengths are stored in 4 bits, and decoding looks up a table of 2^MAX_CODE_LENGTH entries.
MAX_CODE_LENGTH = 15
_CHUNK = 1 << 20  # symbols encoded per step: bounds the per-bit temporaries


class CorruptStream(EdgecError):
    """A stream does not decode to what its header promises."""


# --- fixed width --------------------------------------------------------------------------------


def width_for(max_value: int) -> int:
    """Bits needed for integers in [0, max_value]."""
    return max(1, int(max_value).bit_length())


def pack_fixed(values: np.ndarray, width: int) -> bytes:
    values = np.asarray(values, np.uint64).ravel()
    if values.size == 0:
        return b""
    if width < 64 and int(values.max()) >> width:
        raise ValueError(f"a value does not fit in {width} bits")
    shifts = np.arange(width - 1, -1, -1, dtype=np.uint64)
    bits = ((values[:, None] >> shifts) & np.uint64(1)).astype(np.uint8)
    return np.packbits(bits.ravel()).tobytes()


def unpack_fixed(data: bytes, width: int, count: int) -> np.ndarray:
    if count == 0:
        return np.zeros(0, np.int64)
    need = (width * count + 7) // 8
    if len(data) < need:
        raise CorruptStream(f"fixed-width stream holds {len(data)} bytes, {need} needed")
    bits = np.unpackbits(np.frombuffer(data, np.uint8, need))[: width * count].reshape(count, width)
    weights = np.left_shift(np.uint64(1), np.arange(width - 1, -1, -1, dtype=np.uint64))
    return (bits.astype(np.uint64) @ weights).astype(np.int64)


# --- canonical Huffman --------------------------------------------------------------------------


def code_lengths(counts: np.ndarray, max_length: int = MAX_CODE_LENGTH) -> np.ndarray:
    """Huffman code lengths for symbol counts (0 for unused symbols), at most `max_length` bits.

    A lone symbol gets a 1-bit code. Past the limit the counts are halved (rounding up, so no
    used symbol disappears) until the tree is shallow enough: slightly longer streams in
    pathological cases, a bounded decoding table always.
    """
    counts = np.asarray(counts, np.int64)
    lengths = np.zeros(len(counts), np.uint8)
    used = np.flatnonzero(counts)
    if len(used) > 1 << max_length:
        raise ValueError(f"{len(used)} symbols cannot have codes of at most {max_length} bits")
    if len(used) == 1:
        lengths[used] = 1
    elif len(used) > 1:
        weights = counts[used]
        depths = _tree_depths(weights)
        while depths.max() > max_length:
            weights = (weights + 1) // 2
            depths = _tree_depths(weights)
        lengths[used] = depths
    return lengths


def _tree_depths(weights: np.ndarray) -> np.ndarray:
    n = len(weights)
    heap = [(int(w), i) for i, w in enumerate(weights)]  # ties broken by id: deterministic codes
    heapq.heapify(heap)
    parent = np.zeros(2 * n - 1, np.int64)
    next_id = n
    while len(heap) > 1:
        (wa, a), (wb, b) = heapq.heappop(heap), heapq.heappop(heap)
        parent[a] = parent[b] = next_id
        heapq.heappush(heap, (wa + wb, next_id))
        next_id += 1
    depth = np.zeros(2 * n - 1, np.int64)
    for node in range(2 * n - 3, -1, -1):  # parents are created after their children
        depth[node] = depth[parent[node]] + 1
    return depth[:n]


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """The canonical code of every symbol: shorter codes first, then by symbol value."""
    lengths = np.asarray(lengths, np.int64)
    codes = np.zeros(len(lengths), np.uint64)
    code, previous = 0, 0
    for symbol in sorted(np.flatnonzero(lengths), key=lambda s: (lengths[s], s)):
        code <<= int(lengths[symbol]) - previous
        previous = int(lengths[symbol])
        codes[symbol] = code
        code += 1
    return codes


def encode(symbols: np.ndarray, lengths: np.ndarray) -> tuple[bytes, int]:
    """The concatenated codes of `symbols` (MSB first), packed into bytes; returns (bytes, bit count)."""
    symbols = np.asarray(symbols, np.int64).ravel()
    lengths = np.asarray(lengths, np.int64)
    if symbols.size and lengths[symbols].min() == 0:
        raise ValueError("a symbol has no code")
    codes = canonical_codes(lengths)
    pieces = []
    for start in range(0, symbols.size, _CHUNK):
        chunk = symbols[start : start + _CHUNK]
        sizes = lengths[chunk]
        owner = np.repeat(np.arange(chunk.size), sizes)
        offset = np.arange(owner.size) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        shift = (sizes[owner] - 1 - offset).astype(np.uint64)
        pieces.append(((codes[chunk][owner] >> shift) & np.uint64(1)).astype(np.uint8))
    bits = np.concatenate(pieces) if pieces else np.zeros(0, np.uint8)
    return np.packbits(bits).tobytes(), int(bits.size)


def decode(data: bytes, nbits: int, count: int, lengths: np.ndarray) -> np.ndarray:
    """The `count` symbols coded in the first `nbits` bits of `data`."""
    lengths = np.asarray(lengths, np.int64)
    if count == 0:
        if nbits:
            raise CorruptStream(f"{nbits} bits for no symbols")
        return np.zeros(0, np.int64)
    if len(data) * 8 < nbits or not lengths.any():
        raise CorruptStream("stream shorter than its bit count, or no codes")
    longest = int(lengths.max())
    bits = np.unpackbits(np.frombuffer(data, np.uint8))[:nbits]
    bits = np.concatenate([bits, np.zeros(longest, np.uint8)]).astype(np.uint32)
    window = np.zeros(nbits, np.uint32)  # the next `longest` bits at every position
    for j in range(longest):
        window = (window << 1) | bits[j : j + nbits]
    table_symbol, table_length = _lookup_tables(lengths, longest)
    step = table_length[window].astype(np.int64)
    follow = np.minimum(np.arange(nbits, dtype=np.int64) + step, nbits)
    follow = np.append(follow, nbits)  # position nbits: past the end, stays there
    starts, jump = np.zeros(1, np.int64), follow
    while starts.size < count:  # starts[i] = follow^i(0), doubling the known prefix each round
        starts = np.concatenate([starts, jump[starts]])
        if starts.size < count:
            jump = jump[jump]
    starts = starts[:count]
    if starts[-1] >= nbits or starts[-1] + step[starts[-1]] != nbits or (step[starts] == 0).any():
        raise CorruptStream(f"{nbits} bits do not hold {count} codes")
    return table_symbol[window[starts]].astype(np.int64)


def _lookup_tables(lengths: np.ndarray, longest: int) -> tuple[np.ndarray, np.ndarray]:
    size = 1 << longest
    symbol_at = np.zeros(size, np.int64)
    length_at = np.zeros(size, np.uint8)  # 0: no code starts with these bits
    codes = canonical_codes(lengths)
    for s in np.flatnonzero(lengths):
        span = longest - int(lengths[s])
        first = int(codes[s]) << span
        symbol_at[first : first + (1 << span)] = s
        length_at[first : first + (1 << span)] = lengths[s]
    return symbol_at, length_at


def pack_lengths(lengths: np.ndarray) -> bytes:
    return pack_fixed(np.asarray(lengths, np.int64), 4)


def unpack_lengths(data: bytes, alphabet: int) -> np.ndarray:
    return unpack_fixed(data, 4, alphabet)
