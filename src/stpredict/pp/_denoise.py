"""Per-slide smoothing kernels other than SPCS: 8-neighbour mean, adaptive median (SEPAL), EAGS."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numba import njit, prange
from scipy.spatial import cKDTree

from ._grid import Grid, grid_neighbours


def neighbour_mean(x: np.ndarray, rows: np.ndarray, cols: np.ndarray, grid: Grid) -> np.ndarray:
    """ST-Net/TRIPLEX "8n": unweighted mean over the spot and its first ring of grid neighbours.

    Square grid: the 3 x 3 window (|Δrow| ≤ 1 and |Δcol| ≤ 1). Hex grid: the 6 hex neighbours, not
    the 3 x 3 window, which on Visium's doubled columns would hold only 4 diagonal neighbours.
    """
    window = grid_neighbours(rows, cols, grid, include_self=True)
    counts = np.asarray(window.sum(axis=1)).ravel()
    return np.asarray(sp.diags(1.0 / counts) @ (window @ x))


def median_rings(rows: np.ndarray, cols: np.ndarray, n_rings: int) -> np.ndarray:
    """The ``n_rings`` smallest distinct non-zero Euclidean grid distances that occur between spots."""
    points = np.column_stack([rows, cols]).astype(float)
    tree = cKDTree(points)
    # distances up to a generous bound: the n_rings-th ring lies well within n_rings grid steps
    pairs = tree.sparse_distance_matrix(tree, max_distance=float(n_rings) * 2 + 1, output_type="ndarray")
    distances = np.unique(np.round(pairs["v"][pairs["v"] > 0], 6))
    return distances[:n_rings]


@njit(parallel=True, cache=True)
def _adaptive_median(
    x: np.ndarray,
    indptr: np.ndarray,
    indices: np.ndarray,
    distances: np.ndarray,
    rings: np.ndarray,
    fallback: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - numba
    n, g = x.shape
    out = x.copy()
    imputed = np.zeros((n, g), dtype=np.bool_)
    for i in prange(n):
        start, stop = indptr[i], indptr[i + 1]
        for c in range(g):
            if x[i, c] != 0:
                continue
            value = fallback[c]
            for r in rings:
                window = []
                for e in range(start, stop):
                    if distances[e] <= r + 1e-9:
                        window.append(x[indices[e], c])
                median = np.median(np.array(window))
                if median != 0:
                    value = median
                    break
            out[i, c] = value
            imputed[i, c] = True
    return out, imputed


def adaptive_median(
    x: np.ndarray, rows: np.ndarray, cols: np.ndarray, n_rings: int = 7
) -> tuple[np.ndarray, np.ndarray]:
    """SEPAL's adaptive median filter; only zero entries change.

    For a zero entry, take the median of the gene over the spots within the k-th ring distance (self
    included) for k = 1 .. ``n_rings`` and keep the first non-zero one; if all are zero, use the slide's
    median of the gene's non-zero values. Returns the filtered matrix and a mask of imputed entries.
    """
    x = np.ascontiguousarray(x, dtype=np.float64)
    rings = median_rings(rows, cols, n_rings)
    points = np.column_stack([rows, cols]).astype(float)
    tree = cKDTree(points)
    within = tree.sparse_distance_matrix(tree, max_distance=float(rings[-1]) + 1e-6, output_type="coo_matrix").tocsr()
    within = within + sp.identity(len(points), format="csr") * 1e-12  # keep self (distance ~0) as an entry
    within.sort_indices()
    fallback = np.zeros(x.shape[1])
    for c in range(x.shape[1]):
        nonzero = x[:, c][x[:, c] != 0]
        fallback[c] = np.median(nonzero) if len(nonzero) else 0.0
    return _adaptive_median(
        x,
        within.indptr.astype(np.int64),
        within.indices.astype(np.int64),
        within.data,
        rings.astype(np.float64),
        fallback,
    )


def eags(
    x: np.ndarray,
    spatial: np.ndarray,
    *,
    n_neighbors: int = 10,
    n_pcs: int = 50,
    quantile: float = 90.0,
    weight_at_quantile: float = 0.95,
    random_state: int | None = 0,
) -> np.ndarray:
    """EAGS: average over expression-similar spots, weighted by their spatial closeness.

    kNN (``n_neighbors``, self excluded) in the PCA space of gene-wise z-scored ``x``; each neighbour j of
    i gets ``exp(-d_ij² / (2c²))`` with d the spatial (pixel) distance and c chosen so that the
    ``quantile``-th percentile of those distances gets weight ``weight_at_quantile``.
    """
    from sklearn.decomposition import PCA
    from sklearn.neighbors import NearestNeighbors

    std = x.std(axis=0)
    z = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    n_components = int(min(n_pcs, z.shape[0] - 1, z.shape[1]))
    scores = PCA(n_components=n_components, random_state=random_state).fit_transform(z)
    k = int(min(n_neighbors, len(x) - 1))
    _, index = NearestNeighbors(n_neighbors=k + 1).fit(scores).kneighbors(scores)
    index = np.array([row[row != i][:k] for i, row in enumerate(index)])
    d = np.linalg.norm(spatial[index] - spatial[:, None, :], axis=2)
    d_q = np.percentile(d, quantile)
    c2 = d_q**2 / (2.0 * np.log(1.0 / weight_at_quantile)) if d_q > 0 else 1.0
    w = np.exp(-(d**2) / (2.0 * c2))
    w /= w.sum(axis=1, keepdims=True)
    return np.einsum("nk,nkg->ng", w, x[index])
