"""Per-slide smoothing kernels other than SPCS: 8-neighbour mean, adaptive median (SEPAL), EAGS."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numba import njit, prange
from scipy.spatial import cKDTree

from ._grid import Grid, grid_neighbours
from ._neighbours import nearest_neighbours

#: spots per block when collecting adaptive-median neighbourhoods
MEDIAN_BLOCK_ROWS = 65536
#: spots per block when averaging EAGS neighbours (block x k x genes values at a time)
EAGS_BLOCK_ROWS = 16384


def neighbour_mean(x: np.ndarray, rows: np.ndarray, cols: np.ndarray, grid: Grid) -> np.ndarray:
    """ST-Net/TRIPLEX "8n": unweighted mean over the spot and its first ring of grid neighbours.

    Square grid: the 3 x 3 window (|Δrow| ≤ 1 and |Δcol| ≤ 1). Hex grid: the 6 hex neighbours, not
    the 3 x 3 window, which on Visium's doubled columns would hold only 4 diagonal neighbours.
    """
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
    window = grid_neighbours(rows, cols, grid, include_self=True).astype(dtype)  # float32 in, float32 out
    counts = np.asarray(window.sum(axis=1)).ravel()
    summed = np.asarray(window @ x)
    summed *= (1.0 / counts).astype(dtype)[:, None]  # in place: no second spots x genes array
    return summed


def median_rings(rows: np.ndarray, cols: np.ndarray, n_rings: int, *, sample: int = 2000) -> np.ndarray:
    """The ``n_rings`` smallest distinct non-zero Euclidean grid distances that occur between spots.

    Read from the neighbourhoods of up to ``sample`` spots (every spot on small slides): the rings of a
    regular grid are the same everywhere, and all pairs of a million spots would be ~700 million distances.
    """
    points = np.column_stack([rows, cols]).astype(float)
    tree = cKDTree(points)
    chosen = np.random.default_rng(0).choice(len(points), size=min(sample, len(points)), replace=False)
    # distances up to a generous bound: the n_rings-th ring lies well within n_rings grid steps
    near = cKDTree(points[np.sort(chosen)]).sparse_distance_matrix(
        tree, max_distance=float(n_rings) * 2 + 1, output_type="ndarray"
    )
    distances = np.unique(np.round(near["v"][near["v"] > 0], 6))
    return distances[:n_rings]


@njit(parallel=True, cache=True)
def _adaptive_median(
    x: np.ndarray,
    first: int,
    indptr: np.ndarray,
    indices: np.ndarray,
    distances: np.ndarray,
    rings: np.ndarray,
    fallback: np.ndarray,
    out: np.ndarray,
    imputed: np.ndarray,
) -> None:  # pragma: no cover - numba
    """Fill the zero entries of rows ``first .. first + len(indptr) - 2`` of ``out`` (neighbours in CSR form)."""
    g = x.shape[1]
    for b in prange(len(indptr) - 1):
        i = first + b
        start, stop = indptr[b], indptr[b + 1]
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


def adaptive_median(
    x: np.ndarray, rows: np.ndarray, cols: np.ndarray, n_rings: int = 7
) -> tuple[np.ndarray, np.ndarray]:
    """SEPAL's adaptive median filter; only zero entries change.

    For a zero entry, take the median of the gene over the spots within the k-th ring distance (self
    included) for k = 1 .. ``n_rings`` and keep the first non-zero one; if all are zero, use the slide's
    median of the gene's non-zero values. Returns the filtered matrix (in ``x``'s float precision) and a mask
    of imputed entries. Spots are processed in blocks, so the neighbour lists never exist for all spots at once.
    """
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    x = np.ascontiguousarray(x)
    rings = median_rings(rows, cols, n_rings)
    points = np.column_stack([rows, cols]).astype(float)
    tree = cKDTree(points)
    fallback = np.zeros(x.shape[1])
    for c in range(x.shape[1]):
        nonzero = x[:, c][x[:, c] != 0]
        fallback[c] = np.median(nonzero) if len(nonzero) else 0.0
    out, imputed = x.copy(), np.zeros(x.shape, dtype=bool)
    for first in range(0, len(points), MEDIAN_BLOCK_ROWS):
        block = points[first : first + MEDIAN_BLOCK_ROWS]
        within = cKDTree(block).sparse_distance_matrix(
            tree, max_distance=float(rings[-1]) + 1e-6, output_type="coo_matrix"
        )
        within = within.tocsr() + sp.csr_matrix(  # keep self (distance ~0) as an entry
            (np.full(len(block), 1e-12), (np.arange(len(block)), first + np.arange(len(block)))), shape=within.shape
        )
        within.sort_indices()
        _adaptive_median(
            x,
            first,
            within.indptr.astype(np.int64),
            within.indices.astype(np.int64),
            within.data,
            rings.astype(np.float64),
            fallback,
            out,
            imputed,
        )
    return out, imputed


def eags(
    x: np.ndarray,
    spatial: np.ndarray,
    *,
    n_neighbors: int = 10,
    n_pcs: int = 50,
    quantile: float = 90.0,
    weight_at_quantile: float = 0.95,
    exact: bool | None = None,
    random_state: int | None = 0,
    report: dict | None = None,
) -> np.ndarray:
    """EAGS: average over expression-similar spots, weighted by their spatial closeness.

    kNN (``n_neighbors``, self excluded) in the PCA space of gene-wise z-scored ``x`` (exact PCA; the search
    as :func:`~stpredict.pp._neighbours.nearest_neighbours`, ``exact``); each neighbour j of i gets
    ``exp(-d_ij² / (2c²))`` with d the spatial (pixel) distance and c chosen so that the ``quantile``-th
    percentile of those distances gets weight ``weight_at_quantile``. Rows are averaged in blocks, in ``x``'s
    precision, so memory stays at a few times the output whatever the number of spots. The search used is
    written to ``report['neighbour_search']`` when a dict is given.
    """
    from ._spcs import pattern_space

    std = x.std(axis=0, dtype=np.float64)
    n_components = int(min(n_pcs, x.shape[0] - 1, x.shape[1]))
    scores = pattern_space(x, n_components, random_state, scale=std) if n_components >= 2 else _one_component(x, std)
    k = int(min(n_neighbors, len(x) - 1))
    found = nearest_neighbours(scores, k, exact=exact, random_state=random_state)
    if report is not None:
        report["neighbour_search"] = found.method
    index = found.index
    d = np.linalg.norm(spatial[index] - spatial[:, None, :], axis=2)
    d_q = np.percentile(d, quantile)
    c2 = d_q**2 / (2.0 * np.log(1.0 / weight_at_quantile)) if d_q > 0 else 1.0
    w = np.exp(-(d**2) / (2.0 * c2))
    w /= w.sum(axis=1, keepdims=True)
    out = np.empty(x.shape, dtype=x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64)
    for start in range(0, len(x), EAGS_BLOCK_ROWS):
        rows = slice(start, start + EAGS_BLOCK_ROWS)
        out[rows] = np.einsum("nk,nkg->ng", w[rows], x[index[rows]])
    return out


def _one_component(x: np.ndarray, std: np.ndarray) -> np.ndarray:
    """The z-scored values themselves when there is one gene (PCA has nothing to reduce)."""
    return (np.asarray(x, dtype=np.float64) - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
