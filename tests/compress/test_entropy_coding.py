"""Huffman and the tensor codec round-trip bit for bit; a damaged container is an error, never wrong weights."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgec.compress import bitstream, container, tensor_codec
from edgec.errors import EdgecError


def huffman_round_trip(symbols: np.ndarray) -> np.ndarray:
    counts = np.bincount(symbols) if symbols.size else np.zeros(1, np.int64)
    lengths = bitstream.code_lengths(counts)
    data, nbits = bitstream.encode(symbols, lengths)
    table = bitstream.unpack_lengths(bitstream.pack_lengths(lengths), len(lengths))
    return bitstream.decode(data, nbits, symbols.size, table)


@st.composite
def skewed_streams(draw):
    """Symbols drawn from a random histogram: some alphabets near-uniform, some very skewed."""
    alphabet = draw(st.integers(1, 300))
    weights = np.array(draw(st.lists(st.floats(0.0, 1.0), min_size=alphabet, max_size=alphabet))) ** 4 + 1e-9
    size = draw(st.integers(0, 5000))
    seed = draw(st.integers(0, 2**32 - 1))
    return np.random.default_rng(seed).choice(alphabet, size, p=weights / weights.sum())


@given(skewed_streams())
def test_huffman_round_trip_on_random_histograms(symbols):
    assert np.array_equal(huffman_round_trip(symbols), symbols)


@pytest.mark.parametrize(
    "symbols",
    [
        np.zeros(0, np.int64),  # empty tensor
        np.zeros(1, np.int64),  # one symbol
        np.full(1000, 7, np.int64),  # all equal: a single code of one bit
        np.arange(256, dtype=np.int64),  # all distinct, equally likely
    ],
    ids=["empty", "one", "all-equal", "uniform"],
)
def test_huffman_edge_cases(symbols):
    assert np.array_equal(huffman_round_trip(symbols), symbols)


def test_code_lengths_are_bounded_and_prefix_free():
    # Fibonacci counts give the deepest possible Huffman tree: 40 symbols would need 39 bits.
    counts = np.array([1, 1] + [0] * 38, np.int64)
    for i in range(2, 40):
        counts[i] = counts[i - 1] + counts[i - 2]
    lengths = bitstream.code_lengths(counts).astype(np.int64)
    assert lengths.max() == bitstream.MAX_CODE_LENGTH and lengths.min() >= 1
    assert np.sum(2.0**-lengths) <= 1.0  # Kraft: a prefix code exists
    symbols = np.repeat(np.arange(40), np.minimum(counts, 50))
    assert np.array_equal(huffman_round_trip(symbols), symbols)


def test_huffman_beats_fixed_width_on_skewed_data_and_matches_entropy():
    rng = np.random.default_rng(0)
    p = np.array([0.7, 0.1, 0.05, 0.05, 0.04, 0.03, 0.02, 0.01])
    symbols = rng.choice(8, 100_000, p=p)
    lengths = bitstream.code_lengths(np.bincount(symbols))
    _, nbits = bitstream.encode(symbols, lengths)
    entropy = -(p * np.log2(p)).sum() * symbols.size
    # Huffman's redundancy is below p_max + 0.086 bits per symbol (Gallager 1978).
    assert entropy <= nbits <= entropy + (p.max() + 0.086) * symbols.size
    assert nbits < 0.6 * 3 * symbols.size  # fixed width needs 3 bits


def sparse_indices(shape, density, bits, seed=0):
    rng = np.random.default_rng(seed)
    values = rng.integers(1, 2**bits, shape).astype(np.uint8)
    return np.where(rng.random(shape) < density, values, 0).astype(np.uint8)


@pytest.mark.parametrize("layout", tensor_codec.LAYOUTS)
@pytest.mark.parametrize(
    "array",
    [
        sparse_indices((300, 784), 0.05, 5),
        sparse_indices((16, 6, 5, 5), 0.6, 8),
        np.zeros((10, 10), np.uint8),
        np.zeros((0, 4), np.float32),
        np.array([0.0, -0.0, 1.5, np.nan, np.inf, 0.0], np.float32),  # -0.0 and NaN bits survive
        np.random.default_rng(1).standard_normal((64, 33)).astype(np.float32),
        np.arange(70_000, dtype=np.int64).reshape(700, 100),  # beyond the symbol alphabet: raw
    ],
    ids=["fc-5bit", "conv-8bit", "zeros", "empty", "specials", "dense-float", "wide-int"],
)
def test_every_layout_restores_every_bit(array, layout):
    sparse = array.size and not np.all(array.view(f"u{array.itemsize}"))
    if layout == "relative" and not sparse or layout == "csr" and not (sparse and array.ndim >= 2):
        with pytest.raises(ValueError, match="does not apply"):
            tensor_codec.encode(array, layout=layout)
        return
    encoded = tensor_codec.encode(array, layout=layout)
    decoded = tensor_codec.decode(encoded.header, encoded.payload)
    assert decoded.dtype == array.dtype and decoded.shape == array.shape
    assert decoded.tobytes() == array.tobytes()


def test_smallest_layout_is_chosen_and_sparse_pays_off():
    pruned = sparse_indices((300, 784), 0.05, 5)
    chosen = tensor_codec.encode(pruned)
    sizes = {layout: len(tensor_codec.encode(pruned, layout=layout).payload) for layout in tensor_codec.LAYOUTS}
    assert len(chosen.payload) == min(sizes.values())
    assert chosen.header["layout"] != "dense"
    # 5% of uniform 5-bit indices: values and gaps take about 11 bits per nonzero, where
    # dense fixed-width storage would take 5 bits per entry (100 per nonzero).
    assert len(chosen.payload) < 1.5 * np.count_nonzero(pruned)
    assert len(chosen.payload) < len(tensor_codec.encode(pruned, "fixed", layout="dense").payload) / 6
    dense = tensor_codec.encode(sparse_indices((64, 64), 0.95, 4))
    assert dense.header["layout"] == "dense"


def test_relative_layout_bridges_long_gaps_with_fillers():
    array = np.zeros(100_000, np.uint8)
    array[[3, 50_000, 99_999]] = [1, 2, 3]
    encoded = tensor_codec.encode(array, layout="relative")
    assert encoded.header["gaps"]["count"] > 3  # fillers between far-apart nonzeros
    assert np.array_equal(tensor_codec.decode(encoded.header, encoded.payload), array)


def test_container_round_trip_and_damage(tmp_path):
    tensors = {"a_idx": sparse_indices((300, 784), 0.05, 5), "b": np.linspace(-1, 1, 500, dtype=np.float32)}
    path = tmp_path / "model.ecw"
    summary = container.write(path, tensors)
    assert [entry["name"] for entry in summary] == ["a_idx", "b"]
    restored = container.read(path)
    for name, array in tensors.items():
        assert restored[name].tobytes() == array.tobytes()

    data = path.read_bytes()
    damaged = {
        "magic": b"XXXX" + data[4:],
        "truncated": data[: len(data) // 2],
        "header": data[:8] + b"[" + data[9:],
        "length": data[:4] + (10**6).to_bytes(4, "little") + data[8:],
        "empty": b"",
    }
    for why, bad in damaged.items():
        with pytest.raises(EdgecError, match="corrupt weight container"):
            container.unpack(bad, "model.ecw")
        print(why, "refused")
    with pytest.raises(EdgecError, match="cannot read"):
        container.read(tmp_path / "missing.ecw")
