"""One-dimensional k-means (Lloyd), the clustering behind weight sharing."""

from __future__ import annotations

from typing import Literal

import numpy as np

Init = Literal["linear", "density", "random"]


def initial_centroids(values: np.ndarray, k: int, init: Init, seed: int = 0) -> np.ndarray:
    """Deep Compression compares three: linear (evenly spaced over [min, max]: keeps the rare
    large weights, which matter most, and is the paper's choice), density (evenly spaced over the
    CDF) and random (k of the weights)."""
    if init == "linear":
        return np.linspace(values.min(), values.max(), k)
    if init == "density":
        return np.quantile(values, (np.arange(k) + 0.5) / k)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(values, size=k, replace=values.size < k))


def assign(values: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest of the sorted `centroids` for every value."""
    boundaries = (centroids[1:] + centroids[:-1]) / 2
    return np.searchsorted(boundaries, values)


def kmeans(values: np.ndarray, k: int, init: Init = "linear", iterations: int = 100, seed: int = 0):
    """(centroids, assignment) for 1-D `values`. With at most k distinct values the centroids are
    those values, so sharing loses nothing."""
    values = np.asarray(values, np.float64).ravel()
    distinct = np.unique(values)
    if distinct.size <= k:
        return distinct, np.searchsorted(distinct, values)
    centroids = np.sort(initial_centroids(values, k, init, seed).astype(np.float64))
    labels = assign(values, centroids)
    for _ in range(iterations):
        counts = np.bincount(labels, minlength=k)
        sums = np.bincount(labels, weights=values, minlength=k)
        # An empty cluster keeps its centroid; 1-D means of ordered cells stay ordered.
        centroids = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        centroids = np.sort(centroids)
        updated = assign(values, centroids)
        if np.array_equal(updated, labels):
            break
        labels = updated
    return centroids, labels
