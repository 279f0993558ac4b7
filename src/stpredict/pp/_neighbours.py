"""k nearest neighbours of every point among the others: exact with a k-d tree, approximate with pynndescent.

SPCS's pattern neighbours (10-d) and EAGS's expression neighbours (50-d PCA) are all-pairs searches. Measured
on the 2-core machine (docs/benchmarks.md): a k-d tree (scipy's ``cKDTree``) finds the same neighbours as an
all-pairs scan 50x faster on real, clustered expression and 2x faster on structureless Gaussian data of the
same covariance at 100,000 spots, but its cost grows much faster on structureless data. ``exact=None``
therefore times the tree on a sample of queries and switches to pynndescent's approximate index (what scanpy
uses for its neighbour graph) when the full exact search would take longer than :data:`EXACT_BUDGET_S`.
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
    method: str  # 'kdtree' (exact) or 'pynndescent' (approximate)


def _drop_self(index: np.ndarray, distance: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """From ``k + 1`` neighbours including (usually) the point itself, keep ``k`` others.

    Duplicated points make the point itself appear anywhere among the distance-0 hits, or not at all.
    """
    keep = index != np.arange(len(index))[:, None]
    no_self = keep.all(axis=1)
    keep[no_self, -1] = False
    return index[keep].reshape(len(index), k), distance[keep].reshape(len(index), k)


def _projected_exact_seconds(tree: cKDTree, points: np.ndarray, k: int, workers: int, rng) -> float:
    sample = points[rng.choice(len(points), size=min(SAMPLE_QUERIES, len(points)), replace=False)]
    started = time.perf_counter()
    tree.query(sample, k + 1, workers=workers)
    return (time.perf_counter() - started) * len(points) / len(sample)


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
        ``True``: k-d tree, exact (ties between equidistant points in the tree's order). ``False``:
        pynndescent, approximate. ``None``: exact unless it is projected to take over :data:`EXACT_BUDGET_S`.
    random_state
        Seed of the timing sample and of pynndescent.
    workers
        Threads for the tree queries (-1: all cores).

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
    rng = np.random.default_rng(random_state)
    tree = cKDTree(points) if exact is not False else None
    if exact is None:
        projected = _projected_exact_seconds(tree, points, k, workers, rng)
        exact = projected <= EXACT_BUDGET_S
        if not exact:
            logger.info("neighbours: exact search projected at %.0f s for %d points; using pynndescent", projected, n)
    if exact:
        distance, index = tree.query(points, k + 1, workers=workers)
        index, distance = _drop_self(index.astype(np.int64), distance, k)
        return Neighbours(index, distance, "kdtree")
    return _approximate(points, k, random_state)


def _approximate(points: np.ndarray, k: int, random_state: int | None) -> Neighbours:
    from pynndescent import NNDescent

    # more neighbours than asked while building raises recall (pynndescent's advice); then keep k
    graph = NNDescent(points, n_neighbors=min(len(points) - 1, max(2 * k, k + 10)), random_state=random_state)
    index, distance = graph.neighbor_graph
    index, distance = _drop_self(index[:, : k + 1].astype(np.int64), distance[:, : k + 1], k)
    return Neighbours(index, distance, "pynndescent")
