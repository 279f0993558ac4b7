"""k nearest neighbours of every point among the others: exact (k-d tree or brute force), or approximate.

SPCS's pattern neighbours (10-d) and EAGS's expression neighbours (50-d PCA) are all-pairs searches. Which
search is fastest depends on the data (docs/benchmarks.md, 2-core machine, 100,000 spots): on real, clustered
expression a k-d tree (scipy's ``cKDTree``) is 10x faster than a brute-force scan; on structureless Gaussian
data of the same covariance the tree degrades and the brute-force scan (scikit-learn, BLAS) wins; at a
million structureless spots both take far too long. ``exact=None`` therefore times both exact searches on a
sample of queries, runs the faster one, and switches to pynndescent's approximate index (what scanpy uses for
its neighbour graph) when even that is projected to take longer than :data:`EXACT_BUDGET_S`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from .._logging import logger

#: the exact search is kept when it is projected to take at most this long (``exact=None``)
EXACT_BUDGET_S = 60.0
#: queries timed to project the exact search's cost
SAMPLE_QUERIES = 2000


@dataclass
class Neighbours:
    """``index[i]`` are the ``k`` nearest other points of point ``i`` (closest first), ``distance`` theirs."""

    index: np.ndarray
    distance: np.ndarray
    method: str  # 'kdtree' or 'brute' (exact), or 'pynndescent' (approximate)


def _drop_self(index: np.ndarray, distance: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """From ``k + 1`` neighbours including (usually) the point itself, keep ``k`` others.

    Duplicated points make the point itself appear anywhere among the distance-0 hits, or not at all.
    """
    keep = index != np.arange(len(index))[:, None]
    no_self = keep.all(axis=1)
    keep[no_self, -1] = False
    return index[keep].reshape(len(index), k), distance[keep].reshape(len(index), k)


def _sample(points: np.ndarray, rng) -> np.ndarray:
    return points[rng.choice(len(points), size=min(SAMPLE_QUERIES, len(points)), replace=False)]


def _projected_seconds(search, points: np.ndarray, sample: np.ndarray) -> float:
    started = time.perf_counter()
    search(sample)
    return (time.perf_counter() - started) * len(points) / len(sample)


def _brute(points: np.ndarray, k: int, workers: int):
    from sklearn.neighbors import NearestNeighbors

    index = NearestNeighbors(n_neighbors=k + 1, algorithm="brute", n_jobs=workers).fit(points)
    return lambda queries: index.kneighbors(queries)


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
        ``True``: exact, with the faster of a k-d tree and a brute-force scan (timed on a sample of queries;
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
    tree = cKDTree(points)
    searches = {  # each returns (distances, indices) of the k + 1 nearest, the point itself usually first
        "kdtree": lambda queries: tree.query(queries, k + 1, workers=workers),
        "brute": _brute(points, k, workers),
    }
    method = "kdtree"
    if len(points) > SAMPLE_QUERIES:  # small inputs: the tree, without timing anything
        sample = _sample(points, np.random.default_rng(random_state))
        projected = {name: _projected_seconds(search, points, sample) for name, search in searches.items()}
        method = min(projected, key=projected.get)
        if exact is None and projected[method] > EXACT_BUDGET_S:
            logger.info(
                "neighbours: exact search projected at %.0f s for %d points; using pynndescent", projected[method], n
            )
            return _approximate(points, k, random_state)
    distance, index = searches[method](points)
    index, distance = _drop_self(np.asarray(index, dtype=np.int64), np.asarray(distance), k)
    return Neighbours(index, distance, method)


def _approximate(points: np.ndarray, k: int, random_state: int | None) -> Neighbours:
    from pynndescent import NNDescent

    # more neighbours than asked while building raises recall (pynndescent's advice); then keep k
    graph = NNDescent(points, n_neighbors=min(len(points) - 1, max(2 * k, k + 10)), random_state=random_state)
    index, distance = graph.neighbor_graph
    index, distance = _drop_self(index[:, : k + 1].astype(np.int64), distance[:, : k + 1], k)
    return Neighbours(index, distance, "pynndescent")
