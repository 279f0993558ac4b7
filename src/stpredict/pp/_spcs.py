"""SPCS smoothing (Liu et al. 2022, Brief. Bioinform. bbac116): spatial + expression-pattern neighbours.

A spot's pattern neighbours are the ``tau_p`` spots of the slide whose PCA pattern vectors correlate best with
its own. Pearson correlation of centred unit-norm vectors is ``1 - d²/2`` in Euclidean distance ``d``, so
this all-pairs search is a k-nearest-neighbour search, done by :func:`~stpredict.pp._neighbours.nearest_neighbours`
(the fastest of three exact searches, timed on a sample; pynndescent when all would be too slow, or with
``exact=False``). The weighted combination of neighbours is a numba kernel, parallel over spots, in the
input's precision.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numba import njit, prange

from ._grid import Grid, manhattan_neighbours
from ._neighbours import nearest_neighbours

#: rows per block when centring: bounds float64 temporaries for a million spots
BLOCK_ROWS = 65536


def pattern_space(
    x: np.ndarray, n_pcs: int = 10, random_state: int | None = 0, scale: np.ndarray | None = None
) -> np.ndarray:
    """Spots' PCA scores (centred; columns divided by ``scale`` when given), as SPCS's pattern space.

    Exact PCA from the eigen-decomposition of the smaller Gram matrix (genes x genes for the usual
    few hundred genes), accumulated over row blocks so that no centred float64 copy of ``x`` is made:
    much faster and lighter than an SVD of the spots x genes matrix. The sign of each component is fixed as
    in scikit-learn (largest loading positive), which matters because SPCS correlates spots across
    components. ``random_state`` is accepted for API symmetry; the result is exact.
    """
    from scipy.linalg import eigh

    n, g = x.shape
    n_components = int(min(n_pcs, n - 1, g))
    if n_components < 2:
        msg = f"SPCS needs at least 3 spots and 2 genes for its pattern space, got {n} x {g}."
        raise ValueError(msg)
    scale = np.ones(g) if scale is None else np.where(scale > 0, scale, 1.0)
    mean = x.mean(axis=0, dtype=np.float64)

    def block(start: int) -> np.ndarray:
        return (np.asarray(x[start : start + BLOCK_ROWS], dtype=np.float64) - mean) / scale

    if g <= n:
        gram = np.zeros((g, g))
        for start in range(0, n, BLOCK_ROWS):
            centred = block(start)
            gram += centred.T @ centred
        _, loadings = eigh(gram, subset_by_index=(g - n_components, g - 1))
    else:
        centred = block(0) if n <= BLOCK_ROWS else np.vstack([block(s) for s in range(0, n, BLOCK_ROWS)])
        _, left = eigh(centred @ centred.T, subset_by_index=(n - n_components, n - 1))
        loadings = centred.T @ left
        loadings /= np.linalg.norm(loadings, axis=0, keepdims=True)
    loadings = loadings[:, ::-1]  # descending variance
    signs = np.sign(loadings[np.abs(loadings).argmax(axis=0), np.arange(n_components)])
    loadings = loadings * signs
    scores = np.empty((n, n_components))
    for start in range(0, n, BLOCK_ROWS):
        scores[start : start + BLOCK_ROWS] = block(start) @ loadings
    return scores


def unit_centred(scores: np.ndarray) -> np.ndarray:
    """Rows centred and scaled to unit norm, so that a dot product is a Pearson correlation.

    Rows with no variance (correlation undefined) become all-zero and get no pattern neighbours.
    """
    centred = scores - scores.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    return np.divide(centred, norms, out=np.zeros_like(centred), where=norms > 1e-12)


def top_correlated(
    z: np.ndarray, valid: np.ndarray, k: int, *, exact: bool | None = None, random_state: int | None = 0
) -> tuple[np.ndarray, np.ndarray, str]:
    """Each valid row's ``k`` most correlated other valid rows of ``z`` (unit-norm, centred rows).

    Returns ``(index, correlation, method)``; rows that are not valid (no variance) get index -1.
    """
    n = len(z)
    index = np.full((n, k), -1, dtype=np.int64)
    correlation = np.full((n, k), -np.inf)
    rows = np.flatnonzero(valid)
    k_found = min(k, len(rows) - 1)
    if k_found < 1:
        return index, correlation, "none"
    found = nearest_neighbours(z[rows], k_found, exact=exact, random_state=random_state)
    index[rows, :k_found] = rows[found.index]
    correlation[rows, :k_found] = 1.0 - found.distance**2 / 2.0
    return index, correlation, found.method


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
    exact: bool | None = None,
    random_state: int | None = 0,
    report: dict | None = None,
) -> np.ndarray:
    """SPCS-smooth one slide's log-expression ``x`` (spots x genes), in ``x``'s float precision.

    ``exact`` chooses the pattern-neighbour search (see :func:`~stpredict.pp._neighbours.nearest_neighbours`);
    the one used is written to ``report['neighbour_search']`` when a dict is given.
    """
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    x = np.ascontiguousarray(x)
    if alpha == 0:
        return x.copy()
    z = unit_centred(pattern_space(x, n_pcs, random_state))
    k = int(min(tau_p, len(x) - 1))
    valid = np.abs(z).sum(axis=1) > 0
    p_index, p_corr, search = top_correlated(z, valid, k, exact=exact, random_state=random_state)
    if report is not None:
        report["neighbour_search"] = search
    p_weights = pattern_weights(p_corr)
    s = spatial_weights(rows, cols, grid, tau_s)
    return _combine(
        x, s.indptr.astype(np.int64), s.indices.astype(np.int64), s.data, p_index, p_weights, float(alpha), float(beta)
    )
