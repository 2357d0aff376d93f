"""Spectral clustering of one class's pooled attribution maps (numpy and scipy only).

The affinity is a symmetric k-nearest-neighbour graph of the maps (an edge of weight 1 where either map is among
the other's ``k`` nearest by Euclidean distance, ``k = clamp(round(sqrt(n)), 3, 10)``), as SpRAy uses. Its
normalised Laplacian ``I - D^-1/2 A D^-1/2`` has eigenvalues ``0 = λ1 ≤ λ2 ≤ ...``; the *eigengap* after ``k``
eigenvalues is ``λ(k+1) - λk``, and ``auto`` picks the ``k`` in 2..8 with the largest gap. The clusters are
k-means (seeded, k-means++, several restarts) of the row-normalised first ``K`` eigenvectors; the 2-D embedding
for the plot is eigenvectors 2 and 3. Everything is deterministic: the same maps give the same clusters.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import eigh
from scipy.spatial.distance import cdist

MAX_CLUSTERS = 8


@dataclass(frozen=True)
class Clustering:
    labels: np.ndarray       # (n,) int, cluster id per map, ids 0..K-1 by decreasing size
    eigengap: np.ndarray     # (m,) λ(k+1) - λk for k = 1..m, m ≤ MAX_CLUSTERS
    embedding: np.ndarray    # (n, 2) spectral embedding for the plot


def knn_affinity(x: np.ndarray, k: int | None = None) -> np.ndarray:
    """Symmetric 0/1 k-nearest-neighbour affinity (n, n) of rows ``x`` (n, d); no self edges."""
    n = len(x)
    k = k or int(np.clip(round(np.sqrt(n)), 3, 10))
    k = max(1, min(k, n - 1))
    d = cdist(x, x)
    np.fill_diagonal(d, np.inf)
    nearest = np.argsort(d, axis=1, kind="stable")[:, :k]
    a = np.zeros((n, n))
    a[np.repeat(np.arange(n), k), nearest.ravel()] = 1.0
    return np.maximum(a, a.T)


def spectral(x: np.ndarray, clusters: int | str = "auto", *, seed: int = 0) -> Clustering:
    """Cluster rows ``x`` (n, d); ``clusters`` a count (clamped to n) or ``"auto"`` (the eigengap, 2..8)."""
    n = len(x)
    if n < 3:
        return Clustering(np.zeros(n, dtype=int), np.zeros(0), np.zeros((n, 2)))
    a = knn_affinity(x)
    deg = a.sum(1)
    inv = 1.0 / np.sqrt(np.maximum(deg, 1e-12))
    lap = np.eye(n) - inv[:, None] * a * inv[None, :]
    values, vectors = eigh(lap)
    values = np.clip(values, 0.0, None)
    m = min(MAX_CLUSTERS, n - 1)
    gaps = np.diff(values[:m + 1])
    if clusters == "auto":
        k = int(np.argmax(gaps[1:]) + 2) if m >= 2 else 1
    else:
        k = max(1, min(int(clusters), n))
    vectors = vectors * np.where(vectors[np.abs(vectors).argmax(0), np.arange(n)] < 0, -1.0, 1.0)  # fixed signs
    u = vectors[:, :k]
    u = u / np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-12)
    labels = kmeans(u, k, seed=seed)
    order = np.argsort(-np.bincount(labels, minlength=k), kind="stable")  # id 0 = largest
    labels = np.argsort(order)[labels]
    emb = vectors[:, 1:3] if n >= 3 else np.zeros((n, 2))
    return Clustering(labels.astype(int), gaps, emb)


def kmeans(x: np.ndarray, k: int, *, seed: int = 0, restarts: int = 10, iters: int = 100) -> np.ndarray:
    """Labels (n,) of k-means on rows ``x`` (n, d): k-means++ starts from a seeded generator, best of
    ``restarts`` by inertia."""
    n = len(x)
    if k <= 1:
        return np.zeros(n, dtype=int)
    rng = np.random.default_rng(seed)
    best, best_inertia = None, np.inf
    for _ in range(restarts):
        centres = [x[rng.integers(n)]]
        for _ in range(1, k):
            d2 = cdist(x, np.array(centres), "sqeuclidean").min(1)
            p = d2 / d2.sum() if d2.sum() > 0 else np.full(n, 1.0 / n)
            centres.append(x[rng.choice(n, p=p)])
        c = np.array(centres)
        for _ in range(iters):
            labels = cdist(x, c, "sqeuclidean").argmin(1)
            new = np.array([x[labels == j].mean(0) if (labels == j).any() else c[j] for j in range(k)])
            if np.allclose(new, c):
                break
            c = new
        inertia = cdist(x, c, "sqeuclidean").min(1).sum()
        if inertia < best_inertia - 1e-12:
            best, best_inertia = labels, inertia
    return best
