"""Activation statistics in bounded memory, and the ranges calibration methods derive from them.

Each observed tensor keeps its exact min and max and a 2048-bin histogram over [-R, R]. When a
batch exceeds R, R doubles (neighbouring bins merge) until it fits, so memory stays constant
however many samples pass through. min-max, percentile, entropy (KL, as TensorRT's calibrator)
and MSE ranges are all read off the same statistics.
"""

from __future__ import annotations

import math

import numpy as np

BINS = 2048
METHODS = ("minmax", "percentile", "entropy", "mse")
# Samples are binned in bulk, this many values at a time.
PENDING = 1 << 18


class HistogramObserver:
    def __init__(self, bins: int = BINS):
        self.bins = bins
        self.min = math.inf
        self.max = -math.inf
        self.limit = 0.0  # R: the histogram covers [-R, R]
        self.hist = np.zeros(bins, np.float64)
        self.count = 0
        # Per-channel (axis 1) extremes, for tensors quantized per channel (qdq.channelwise_params).
        self.channel_min: np.ndarray | None = None
        self.channel_max: np.ndarray | None = None
        self._pending: list[np.ndarray] = []
        self._pending_size = 0
        self._pending_weight = 1.0
        self._pending_extreme = 0.0
        self._ranges: dict[tuple, tuple[float, float]] = {}  # memo: calib=auto asks every method twice

    def update(self, values: np.ndarray) -> None:
        """Observe every value of a tensor."""
        x = np.asarray(values, np.float32).ravel()
        if x.size:
            self.update_summary(float(x.min()), float(x.max()), x, x.size)

    def update_summary(self, lo: float, hi: float, sample: np.ndarray, size: int) -> None:
        """Observe a tensor of `size` values through its extremes and a uniform sample of it
        (collect.observe has onnxruntime sample large tensors in the graph). Samples are binned
        in bulk: one bincount per ~256K values instead of one per tensor per batch."""
        sample = np.asarray(sample, np.float32).ravel()
        if size == 0 or sample.size == 0:
            return
        self.min, self.max = min(self.min, lo), max(self.max, hi)
        self.count += size
        weight = size / sample.size
        if self._pending and (weight != self._pending_weight or self._pending_size > PENDING):
            self._flush()
        self._pending.append(sample)
        self._pending_size += sample.size
        self._pending_weight = weight
        # The histogram spans the sample, not the exact extremes: one rare peak doubling R coarsens
        # the bins every other method reads (PP-LCNet on document pages: mse fell from 27.5 to 21.7 dB).
        self._pending_extreme = max(self._pending_extreme, float(np.abs(sample).max()))

    def update_channels(self, lo: np.ndarray, hi: np.ndarray) -> None:
        """Observe one run's per-channel minimums and maximums."""
        lo, hi = np.asarray(lo, np.float64).ravel(), np.asarray(hi, np.float64).ravel()
        if self.channel_min is None:
            self.channel_min, self.channel_max = lo.copy(), hi.copy()
        else:
            np.minimum(self.channel_min, lo, out=self.channel_min)
            np.maximum(self.channel_max, hi, out=self.channel_max)

    def _flush(self) -> None:
        if not self._pending:
            return
        samples, weight, needed = np.concatenate(self._pending), self._pending_weight, self._pending_extreme
        self._pending, self._pending_size, self._pending_extreme = [], 0, 0.0
        if needed > self.limit:
            self._grow(needed)
        if self.limit == 0.0:  # every value so far is exactly 0
            self.hist[self.bins // 2] += samples.size * weight
            return
        # x + R >= 0, so truncation is floor; int32 halves the memory traffic of int64.
        index = ((samples + np.float32(self.limit)) * np.float32(self.bins / (2 * self.limit))).astype(np.int32)
        np.minimum(index, self.bins - 1, out=index)
        np.clip(index, 0, None, out=index)  # a value just below -R rounds out of range
        self.hist += np.bincount(index, minlength=self.bins) * weight

    def _grow(self, needed: float) -> None:
        if self.limit == 0.0:
            zeros = self.hist.sum()
            self.limit = needed
            self.hist[:] = 0
            if zeros:
                self.hist[self.bins // 2] = zeros
            return
        factor = 2 ** math.ceil(math.log2(needed / self.limit))
        # Old bin i (centre c_i) lands in the new bin that contains c_i.
        old_width = 2 * self.limit / self.bins
        centres = -self.limit + (np.arange(self.bins) + 0.5) * old_width
        new_limit = self.limit * factor
        target = np.floor((centres + new_limit) / (2 * new_limit / self.bins)).astype(np.int64)
        merged = np.zeros(self.bins)
        np.add.at(merged, np.clip(target, 0, self.bins - 1), self.hist)
        self.hist, self.limit = merged, new_limit

    # --- ranges -------------------------------------------------------------------------------

    @property
    def histogram(self) -> np.ndarray:
        self._flush()
        return self.hist

    def edges(self) -> np.ndarray:
        return np.linspace(-self.limit, self.limit, self.bins + 1)

    def range(self, method: str, percentile: float = 99.99, levels: int = 256) -> tuple[float, float]:
        """(lo, hi) for a calibration method; always within [min, max] and containing 0."""
        self._flush()
        key = (method, percentile, levels, self.count)
        if key not in self._ranges:
            self._ranges[key] = self._range(method, percentile, levels)
        return self._ranges[key]

    def _range(self, method: str, percentile: float, levels: int) -> tuple[float, float]:
        if self.count == 0:
            return 0.0, 0.0
        if method == "minmax":
            lo, hi = self.min, self.max
        elif method == "percentile":
            lo, hi = self._percentiles(percentile)
        elif method == "entropy":
            lo, hi = self._entropy()
        elif method == "mse":
            lo, hi = self._symmetric(_mse_threshold(self._abs_hist(), self.limit, levels))
        else:
            raise ValueError(f"unknown calibration method {method!r} (methods: {', '.join(METHODS)})")
        return min(lo, 0.0), max(hi, 0.0)

    def _symmetric(self, threshold: float) -> tuple[float, float]:
        return max(self.min, -threshold), min(self.max, threshold)

    def _entropy(self) -> tuple[float, float]:
        """KL thresholds for each sign separately. Folding |x| (TensorRT's choice, made for
        post-ReLU tensors) lets the sign with more mass set the range for both: on a normalized
        image input with a dark background it clipped every bright pixel (LeNet-5 fell to 6.6 dB)."""
        half = self.bins // 2
        positive, negative = self.hist[half:].copy(), self.hist[:half][::-1].copy()
        # Exact zeros (half of a post-ReLU tensor) are exact at any scale; left in, their spike
        # dominates the divergence and drags the threshold down (LeNet-5's fc1: 2.5 of 19.5).
        positive[0] = negative[0] = 0.0
        hi = _kl_threshold(positive, self.limit) if positive.sum() else 0.0
        lo = -_kl_threshold(negative, self.limit) if negative.sum() else 0.0
        return max(self.min, lo), min(self.max, hi)

    def _abs_hist(self) -> np.ndarray:
        half = self.bins // 2
        return self.hist[half:] + self.hist[:half][::-1]

    def _percentiles(self, percentile: float) -> tuple[float, float]:
        cdf = np.cumsum(self.hist) / self.hist.sum()
        edges = self.edges()
        tail = (100.0 - percentile) / 100.0
        lo = edges[int(np.searchsorted(cdf, tail, side="left"))]
        hi = edges[int(np.searchsorted(cdf, 1.0 - tail, side="left")) + 1]
        return max(self.min, float(lo)), min(self.max, float(hi))


def _kl_threshold(abs_hist: np.ndarray, limit: float, target_bins: int = 128) -> float:
    """TensorRT's entropy calibration: the |x| threshold whose clipped, 128-level quantized
    distribution has the least KL divergence from the observed one."""
    bins = abs_hist.size
    width = limit / bins
    if abs_hist.sum() == 0:
        return limit
    best_divergence, best_i = math.inf, bins
    total = abs_hist.sum()
    for i in range(target_bins, bins + 1, 16):  # a stride of 16 bins: ~60 candidates per sign
        reference = abs_hist[:i].astype(np.float64).copy()
        reference[i - 1] += abs_hist[i:].sum()  # clipped mass lands in the last bin
        # Merge the first i bins into target_bins levels, then spread each level's mass evenly
        # over the bins of that level that were non-empty.
        level = (np.arange(i) * target_bins) // i
        occupied = abs_hist[:i] > 0
        sums = np.bincount(level, weights=abs_hist[:i], minlength=target_bins)
        filled = np.bincount(level, weights=occupied, minlength=target_bins)
        candidate = np.where(occupied, sums[level] / np.maximum(filled[level], 1), 0.0)
        if candidate.sum() == 0:  # every observed value lies beyond this threshold
            continue
        p = reference / total
        q = candidate / candidate.sum()
        mask = p > 0
        divergence = float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-12))))
        if divergence < best_divergence:
            best_divergence, best_i = divergence, i
    return (best_i + 0.5) * width


def _mse_threshold(abs_hist: np.ndarray, limit: float, levels: int) -> float:
    """The |x| clipping threshold that minimizes expected squared error: uniform rounding noise
    (step^2 / 12) inside the range plus the clipping error of the values beyond it."""
    bins = abs_hist.size
    width = limit / bins
    centres = (np.arange(bins) + 0.5) * width
    total = abs_hist.sum()
    if total == 0:
        return limit
    best_error, best_t = math.inf, limit
    for i in range(16, bins + 1, 4):
        t = i * width
        step = 2 * t / (levels - 1)
        inside = abs_hist[:i].sum() * step * step / 12.0
        outside = float(np.sum(abs_hist[i:] * (centres[i:] - t) ** 2))
        error = (inside + outside) / total
        if error < best_error:
            best_error, best_t = error, t
    return best_t
