"""Neighbourhoods on the spot array (square legacy-ST grid or Visium's hexagonal grid).

Visium indexes its hex grid with "doubled columns": spots of one row sit 2 columns apart and the 6
neighbours of (r, c) are (r, c±2) and (r±1, c±1). Legacy ST uses a square grid with 8 neighbours.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp
from anndata import AnnData
from scipy.spatial import cKDTree

from .._constants import GRID_KEY
from .._logging import logger
from .._validate import spatial_entry

Grid = Literal["square", "hex"]


def infer_grid(adata: AnnData, library_id: str, rows: np.ndarray, cols: np.ndarray) -> Grid:
    """Grid type of one slide: from ``uns['spatial'][lib]['metadata']['grid']``, else from the coordinates.

    In Visium's doubled-column indexing ``row + col`` has the same parity for every spot; on a square
    grid both parities occur.
    """
    meta = (spatial_entry(adata, library_id) or {}).get("metadata", {})
    grid = meta.get(GRID_KEY)
    if grid in ("square", "hex"):
        return grid
    parities = np.unique((rows + cols) % 2)
    grid = "hex" if len(rows) > 1 and len(parities) == 1 else "square"
    logger.info("slide %s: no grid type recorded, inferred %r from array coordinates", library_id, grid)
    return grid


def _grid_points(rows: np.ndarray, cols: np.ndarray, grid: Grid) -> np.ndarray:
    """Coordinates in which grid neighbours are at distance 1 (square: Chebyshev; hex: Euclidean)."""
    if grid == "hex":
        # doubled columns: neighbours at (0, ±2) and (±1, ±1) -> scale rows by sqrt(3), then halve
        return np.column_stack([rows * np.sqrt(3.0), cols.astype(float)]) / 2.0
    return np.column_stack([rows, cols]).astype(float)


def grid_neighbours(rows: np.ndarray, cols: np.ndarray, grid: Grid, *, include_self: bool) -> sp.csr_matrix:
    """Binary adjacency of the first ring of grid neighbours (8 on a square grid, 6 on a hex grid)."""
    points = _grid_points(rows, cols, grid)
    tree = cKDTree(points)
    p = np.inf if grid == "square" else 2.0
    pairs = tree.query_pairs(r=1.0 + 1e-6, p=p, output_type="ndarray")
    n = len(points)
    i = np.concatenate([pairs[:, 0], pairs[:, 1]])
    j = np.concatenate([pairs[:, 1], pairs[:, 0]])
    adjacency = sp.csr_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
    if include_self:
        adjacency = adjacency + sp.identity(n, format="csr")
    adjacency.sum_duplicates()
    return adjacency.tocsr()


def manhattan_neighbours(rows: np.ndarray, cols: np.ndarray, max_distance: int) -> sp.csr_matrix:
    """Grid Manhattan distances ``|Δrow| + |Δcol|`` up to ``max_distance`` (self excluded), as a sparse matrix."""
    points = np.column_stack([rows, cols]).astype(float)
    tree = cKDTree(points)
    distances = tree.sparse_distance_matrix(tree, max_distance=max_distance + 1e-6, p=1, output_type="coo_matrix")
    distances = distances.tocsr()
    distances.setdiag(0)
    distances.eliminate_zeros()
    return distances
