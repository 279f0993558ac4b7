"""SPCS smoothing (Liu et al. 2022, Brief. Bioinform. bbac116): spatial + expression-pattern neighbours.

Why hand-written numba: the pattern neighbours are searched over the whole slide, which is an
all-pairs problem. Holding the n x n similarity matrix is impossible for Visium HD (100k+ spots), and
kd-trees degrade in the 10-d pattern space, and a blocked BLAS product is memory-bound here (it writes
n² correlations only to read them back). The numba kernel fuses both steps: per spot it accumulates the
correlations with all spots in a cache-resident buffer and keeps only the running top-``tau_p`` list
(O(n * tau_p) memory, parallel over spots).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numba import njit, prange

from ._grid import Grid, manhattan_neighbours


def pattern_space(x: np.ndarray, n_pcs: int = 10, random_state: int | None = 0) -> np.ndarray:
    """Spots' PCA scores (centred, not scaled), as SPCS's pattern space.

    Exact PCA from the eigen-decomposition of the smaller Gram matrix (genes x genes for the usual
    few hundred genes): much faster than an SVD of the spots x genes matrix for large slides. The sign of
    each component is fixed as in scikit-learn (largest loading positive), which matters because SPCS
    correlates spots across components. ``random_state`` is accepted for API symmetry; the result is exact.
    """
    from scipy.linalg import eigh

    n_components = int(min(n_pcs, x.shape[0] - 1, x.shape[1]))
    if n_components < 2:
        msg = f"SPCS needs at least 3 spots and 2 genes for its pattern space, got {x.shape[0]} x {x.shape[1]}."
        raise ValueError(msg)
    centred = x - x.mean(axis=0)
    if x.shape[1] <= x.shape[0]:
        _, loadings = eigh(centred.T @ centred, subset_by_index=(x.shape[1] - n_components, x.shape[1] - 1))
    else:
        _, left = eigh(centred @ centred.T, subset_by_index=(x.shape[0] - n_components, x.shape[0] - 1))
        loadings = centred.T @ left
        loadings /= np.linalg.norm(loadings, axis=0, keepdims=True)
    loadings = loadings[:, ::-1]  # descending variance
    signs = np.sign(loadings[np.abs(loadings).argmax(axis=0), np.arange(n_components)])
    return centred @ (loadings * signs)


def unit_centred(scores: np.ndarray) -> np.ndarray:
    """Rows centred and scaled to unit norm, so that a dot product is a Pearson correlation.

    Rows with no variance (correlation undefined) become all-zero and get no pattern neighbours.
    """
    centred = scores - scores.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    return np.divide(centred, norms, out=np.zeros_like(centred), where=norms > 1e-12)


@njit(parallel=True, cache=True)
def _top_correlated(
    zt: np.ndarray, valid: np.ndarray, k: int, rows_per_task: int
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - numba
    """For every valid spot, the ``k`` most correlated other valid spots (ties: lower index first).

    ``zt`` holds the unit-norm centred pattern vectors as columns (p x n), so one spot's correlations with
    all spots are accumulated component by component over contiguous memory (SIMD-friendly) into a
    per-task buffer of n values; only the running top-k list is kept.
    """
    p, n = zt.shape
    index = np.full((n, k), -1, dtype=np.int64)
    value = np.full((n, k), -np.inf)
    n_tasks = (n + rows_per_task - 1) // rows_per_task
    for task in prange(n_tasks):
        r = np.empty(n)
        for i in range(task * rows_per_task, min(n, (task + 1) * rows_per_task)):
            if not valid[i]:
                continue
            r[:] = 0.0
            for c in range(p):
                w = zt[c, i]
                row = zt[c]
                for j in range(n):
                    r[j] += w * row[j]
            worst = -np.inf
            for j in range(n):
                rj = r[j]
                if rj > worst and j != i and valid[j]:
                    pos = k - 1
                    while pos > 0 and value[i, pos - 1] < rj:
                        value[i, pos] = value[i, pos - 1]
                        index[i, pos] = index[i, pos - 1]
                        pos -= 1
                    value[i, pos] = rj
                    index[i, pos] = j
                    worst = value[i, k - 1]
    return index, value


def top_correlated(z: np.ndarray, valid: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each valid row's ``k`` most correlated other valid rows of ``z`` (unit-norm, centred), exactly."""
    return _top_correlated(np.ascontiguousarray(z.T), valid, k, 64)


@njit(parallel=True, cache=True)
def _combine(
    x: np.ndarray,
    s_indptr: np.ndarray,
    s_indices: np.ndarray,
    s_weights: np.ndarray,
    p_index: np.ndarray,
    p_weights: np.ndarray,
    alpha: float,
    beta: float,
) -> np.ndarray:  # pragma: no cover - numba
    """X'_i = (1-α) X_i + α [β Σ_s w X_j + (1-β) Σ_p w X_j]; a missing neighbour kind gives its share to the other."""
    n, g = x.shape
    out = np.empty_like(x)
    for i in prange(n):
        has_s = s_indptr[i + 1] > s_indptr[i]
        has_p = False
        for m in range(p_index.shape[1]):
            if p_index[i, m] >= 0 and p_weights[i, m] > 0:
                has_p = True
        if not has_s and not has_p:
            out[i] = x[i]
            continue
        b = beta if (has_s and has_p) else (1.0 if has_s else 0.0)
        acc = np.zeros(g)
        for e in range(s_indptr[i], s_indptr[i + 1]):
            w = b * s_weights[e]
            j = s_indices[e]
            for c in range(g):
                acc[c] += w * x[j, c]
        for m in range(p_index.shape[1]):
            j = p_index[i, m]
            if j < 0:
                continue
            w = (1.0 - b) * p_weights[i, m]
            for c in range(g):
                acc[c] += w * x[j, c]
        for c in range(g):
            out[i, c] = (1.0 - alpha) * x[i, c] + alpha * acc[c]
    return out


def pattern_weights(correlation: np.ndarray) -> np.ndarray:
    """SPCS pattern kernel exp(-4.5 d²) with d = 1 - r, zero for d > 1, rows normalised to sum 1."""
    d = 1.0 - correlation
    weights = np.where(np.isfinite(d) & (d <= 1.0), np.exp(-4.5 * d**2), 0.0)
    totals = weights.sum(axis=1, keepdims=True)
    return np.divide(weights, totals, out=np.zeros_like(weights), where=totals > 0)


def spatial_weights(rows: np.ndarray, cols: np.ndarray, grid: Grid, tau_s: int) -> sp.csr_matrix:
    """Spots within grid Manhattan distance tau_s (2 tau_s in Visium's doubled columns), weight 1/d, rows sum 1."""
    distances = manhattan_neighbours(rows, cols, tau_s * (2 if grid == "hex" else 1))
    weights = distances.copy()
    weights.data = 1.0 / weights.data
    totals = np.asarray(weights.sum(axis=1)).ravel()
    scale = np.divide(1.0, totals, out=np.zeros_like(totals), where=totals > 0)
    return sp.csr_matrix(sp.diags(scale) @ weights)


def spcs(
    x: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    grid: Grid,
    *,
    tau_p: int = 16,
    tau_s: int = 2,
    alpha: float = 0.6,
    beta: float = 0.4,
    n_pcs: int = 10,
    random_state: int | None = 0,
) -> np.ndarray:
    """SPCS-smooth one slide's log-expression ``x`` (spots x genes)."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    if alpha == 0:
        return x.copy()
    z = unit_centred(pattern_space(x, n_pcs, random_state))
    k = int(min(tau_p, len(x) - 1))
    valid = np.abs(z).sum(axis=1) > 0
    p_index, p_corr = top_correlated(np.ascontiguousarray(z), valid, k)
    p_weights = pattern_weights(p_corr)
    s = spatial_weights(rows, cols, grid, tau_s)
    return _combine(
        x, s.indptr.astype(np.int64), s.indices.astype(np.int64), s.data, p_index, p_weights, float(alpha), float(beta)
    )
