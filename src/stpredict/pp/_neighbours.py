"""k nearest neighbours of every point among the others: exact (three ways), or approximate.

SPCS's pattern neighbours (10-d) and EAGS's expression neighbours (50-d PCA) are all-pairs searches. Which
search is fastest depends on the data (docs/benchmarks.md, 2-core machine, 100,000 spots): on real, clustered
expression a k-d tree (scipy's ``cKDTree``) is 10-100x faster than scanning all pairs; on structureless
Gaussian data of the same covariance the tree degrades: in 10-d it is within 2x of the fused numba scan
(products with all points accumulated in a cache-resident buffer, only a running top list kept), in 50-d
far slower than scikit-learn's BLAS brute force; on small inputs the scan or the brute force often wins; at
a million structureless spots all take far too long. ``exact=None`` therefore times the
three exact searches on a sample of queries (runs of consecutive points, as the full search visits them),
runs the fastest, and switches to pynndescent's approximate index (what scanpy uses for its neighbour
graph) when even that is projected over :data:`EXACT_BUDGET_S`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from numba import njit, prange
from scipy.spatial import cKDTree

from .._logging import logger

#: the exact search is kept when it is projected to take at most this long (``exact=None``); pynndescent
#: itself takes about a minute per million points in 10-d and two to five in 50-d (docs/benchmarks.md), so
#: it is worth switching only when the exact search would take clearly longer
EXACT_BUDGET_S = 120.0
#: queries timed to project the exact search's cost
SAMPLE_QUERIES = 2000


@dataclass
class Neighbours:
    """``index[i]`` are the ``k`` nearest other points of point ``i`` (closest first), ``distance`` theirs."""

    index: np.ndarray
    distance: np.ndarray
    method: str  # 'kdtree', 'brute' or 'scan' (exact), or 'pynndescent' (approximate)


def _drop_self(index: np.ndarray, distance: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """From ``k + 1`` neighbours including (usually) the point itself, keep ``k`` others.

    Duplicated points make the point itself appear anywhere among the distance-0 hits, or not at all.
    """
    keep = index != np.arange(len(index))[:, None]
    no_self = keep.all(axis=1)
    keep[no_self, -1] = False
    return index[keep].reshape(len(index), k), distance[keep].reshape(len(index), k)


@njit(parallel=True, cache=True)
def _all_pairs(
    xt: np.ndarray, norms: np.ndarray, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - numba
    """For each query point, its ``k + 1`` nearest points by a fused scan over all points (self included).

    ``xt`` holds the points as columns (d x n), so the products with all points are accumulated over
    contiguous memory into a per-query buffer of n values, keeping only a running top list: no n x n matrix,
    O(n) memory per thread. Ranks by ``|x_j|² - 2 x_q·x_j`` (the squared distance up to ``|x_q|²``).
    """
    d, n = xt.shape
    m = k + 1
    index = np.full((len(queries), m), -1, dtype=np.int64)
    score = np.full((len(queries), m), np.inf)
    for row in prange(len(queries)):
        q = queries[row]
        r = np.empty(n)
        for j in range(n):
            r[j] = norms[j]
        for c in range(d):
            w = -2.0 * xt[c, q]
            line = xt[c]
            for j in range(n):
                r[j] += w * line[j]
        worst = np.inf
        for j in range(n):
            rj = r[j]
            if rj < worst:
                pos = m - 1
                while pos > 0 and score[row, pos - 1] > rj:
                    score[row, pos] = score[row, pos - 1]
                    index[row, pos] = index[row, pos - 1]
                    pos -= 1
                score[row, pos] = rj
                index[row, pos] = j
                worst = score[row, m - 1]
    return index, score


def _scan(points: np.ndarray, k: int):
    """The fused all-pairs scan as a search returning ``(distances, indices)`` like the others."""
    xt = np.ascontiguousarray(points.T)
    norms = np.einsum("ij,ij->i", points, points)

    def search(queries_index: np.ndarray):
        index, score = _all_pairs(xt, norms, queries_index, k)
        distance = np.sqrt(np.clip(score + norms[queries_index][:, None], 0, None))
        return distance, index

    return search


def _sample(points: np.ndarray, rng) -> np.ndarray:
    """Indices of the timing sample: a few runs of consecutive points at random places.

    The full search visits the points in order, and neighbouring rows are often neighbouring spots with
    similar profiles, which keeps a tree's nodes in cache; scattered queries would not, and overestimate it
    (1,048,576 real profiles: 72 s projected from scattered queries for a 40 s search).
    """
    n_runs, run = 8, SAMPLE_QUERIES // 8
    if len(points) <= SAMPLE_QUERIES:
        return np.arange(len(points))
    slots = np.sort(rng.choice(len(points) // run, size=n_runs, replace=False))  # runs never overlap
    return (slots[:, None] * run + np.arange(run)).ravel()


def _projected_seconds(search, points: np.ndarray, sample: np.ndarray) -> float:
    search(sample[:2])  # warm-up: numba compilation (cached on disk) and index building are not timed
    started = time.perf_counter()
    search(sample)
    return (time.perf_counter() - started) * len(points) / len(sample)


def _projections(searches: dict, points: np.ndarray, sample: np.ndarray) -> dict[str, float]:
    """Projected full-search seconds of each search; clear losers are timed only on the sample's first run.

    Timing every search on the whole sample costs the sample's share of the slowest one: at a million spots
    the numba scan's 2,000 queries alone take ~13 s. Searches over 3x the fastest on the first run of
    consecutive queries are dropped (their projection from that run is kept).
    """
    first_run = sample[: max(2, len(sample) // 8)]
    projected = {name: _projected_seconds(search, points, first_run) for name, search in searches.items()}
    fastest = min(projected.values())
    for name, search in searches.items():
        if projected[name] <= 3.0 * fastest and len(first_run) < len(sample):
            projected[name] = _projected_seconds(search, points, sample)
    return projected


def _tree(points: np.ndarray, k: int, workers: int):
    """Scipy's k-d tree as a search: query indices -> ``(distances, indices)`` of the ``k + 1`` nearest."""
    tree = cKDTree(points)
    return lambda queries: tree.query(points[queries], k + 1, workers=workers)


def _brute(points: np.ndarray, k: int, workers: int):
    """scikit-learn's brute force (BLAS) as a search, like :func:`_tree`."""
    from sklearn.neighbors import NearestNeighbors

    index = NearestNeighbors(n_neighbors=k + 1, algorithm="brute", n_jobs=workers).fit(points)
    return lambda queries: index.kneighbors(points[queries])


def nearest_neighbours(
    points: np.ndarray,
    k: int,
    *,
    exact: bool | None = None,
    random_state: int | None = 0,
    workers: int = -1,
) -> Neighbours:
    """The ``k`` nearest other points (Euclidean) of every row of ``points``.

    Parameters
    ----------
    points
        ``(n, d)`` coordinates.
    k
        Neighbours per point (at most ``n - 1``).
    exact
        ``True``: exact, with the fastest of a k-d tree, scikit-learn's brute force and a fused numba scan (timed on a sample of queries;
        ties between equidistant points in the search's order). ``False``: pynndescent, approximate.
        ``None``: exact unless the faster exact search is projected to take over :data:`EXACT_BUDGET_S`.
    random_state
        Seed of the timing sample and of pynndescent.
    workers
        Threads for the exact searches (-1: all cores).

    Examples
    --------
    >>> import numpy as np
    >>> from stpredict.pp._neighbours import nearest_neighbours
    >>> found = nearest_neighbours(np.array([[0.0], [1.0], [3.0], [10.0]]), 1)
    >>> found.index.ravel().tolist(), found.method
    ([1, 0, 1, 2], 'kdtree')
    """
    points = np.ascontiguousarray(points, dtype=np.float64)
    n = len(points)
    if not 1 <= k < n:
        msg = f"Cannot find {k} neighbours per point among {n} points."
        raise ValueError(msg)
    if exact is False:
        return _approximate(points, k, random_state)
    searches = {  # each builds a search mapping query indices to (distances, indices), usually self first
        "kdtree": lambda: _tree(points, k, workers),
        "brute": lambda: _brute(points, k, workers),
        "scan": lambda: _scan(points, k),
    }
    method, search = "kdtree", None
    if len(points) > SAMPLE_QUERIES:  # small inputs: the tree, without building or timing the others
        sample = _sample(points, np.random.default_rng(random_state))
        built = {name: build() for name, build in searches.items()}
        projected = _projections(built, points, sample)
        method = min(projected, key=projected.get)
        logger.debug("neighbours: %d points, projected seconds %s", n, {m: round(t, 1) for m, t in projected.items()})
        search = built.pop(method)
        del built  # the other indexes (a tree, a transposed copy of the points) are freed before the full search
        if exact is None and projected[method] > EXACT_BUDGET_S:
            logger.info(
                "neighbours: exact search projected at %.0f s for %d points; using pynndescent", projected[method], n
            )
            del search
            return _approximate(points, k, random_state)
    search = search or searches[method]()
    distance, index = search(np.arange(n))
    index, distance = _drop_self(np.asarray(index, dtype=np.int64), np.asarray(distance), k)
    return Neighbours(index, distance, method)


def _approximate(points: np.ndarray, k: int, random_state: int | None) -> Neighbours:
    from pynndescent import NNDescent

    # more neighbours than asked while building raises recall (pynndescent's advice); then keep k
    graph = NNDescent(points, n_neighbors=min(len(points) - 1, max(2 * k, k + 10)), random_state=random_state)
    index, distance = graph.neighbor_graph
    index, distance = _drop_self(index[:, : k + 1].astype(np.int64), distance[:, : k + 1], k)
    return Neighbours(index, distance, "pynndescent")
