"""Spatial neighbour graphs of spots, in squidpy's keys (``obsp['spatial_connectivities']`` ...).

Spots of different slides are never joined: every graph is built slide by slide and assembled block-diagonally.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._constants import LIBRARY_KEY, SPATIAL_KEY, graph_keys
from .._docs import doc_params
from .._logging import logger
from .._validate import check_adata, require_grid, require_spatial, spot_libraries
from ._grid import grid_neighbours, infer_grid

GraphKind = Literal["grid", "knn", "radius"]
DEFAULT_KNN = 8


@dataclass(frozen=True)
class SpatialGraph:
    """A graph of :func:`spatial_graph` before it is written into an AnnData."""

    connectivities: sp.csr_matrix
    distances: sp.csr_matrix
    params: dict[str, Any]

    def write(self, adata: AnnData, key_added: str, coords: np.ndarray | None = None) -> None:
        """Store under squidpy's keys (``coords`` is unused: edge lengths are computed already)."""
        write_graph(adata, self.connectivities, self.distances, self.params, key_added)


def _grid_graph(adata: AnnData, libraries: np.ndarray) -> tuple[sp.csr_matrix, dict[str, str]]:
    """First ring of array neighbours of each slide: 8 on legacy ST's square grid, 6 on Visium's hex grid."""
    rows, cols = require_grid(
        adata, "a graph of array neighbours (kind='grid', spot_graph='grid'; 'knn' needs no array)"
    )
    n = adata.n_obs
    blocks_i, blocks_j, grids = [], [], {}
    for lib in pd.unique(libraries):
        positions = np.flatnonzero(libraries == lib)
        grids[str(lib)] = infer_grid(adata, lib, rows[positions], cols[positions])
        adjacency = grid_neighbours(rows[positions], cols[positions], grids[str(lib)], include_self=False).tocoo()
        blocks_i.append(positions[adjacency.row])
        blocks_j.append(positions[adjacency.col])
    i, j = np.concatenate(blocks_i), np.concatenate(blocks_j)
    return sp.csr_matrix((np.ones(len(i)), (i, j)), shape=(n, n)), grids


def _squidpy_graph(adata: AnnData, libraries: np.ndarray, kind: str, n_neighs: int, radius: float | None):
    """KNN or radius graph from ``squidpy.gr.spatial_neighbors`` with ``library_key`` (no cross-slide edges)."""
    from .._imports import import_squidpy

    sq = import_squidpy()

    minimal = AnnData(
        obs=pd.DataFrame({LIBRARY_KEY: pd.Categorical(libraries)}, index=adata.obs_names),
        obsm={SPATIAL_KEY: require_spatial(adata)},
    )
    if hasattr(sq.gr, "spatial_neighbors_knn"):  # squidpy >= 1.8 splits the builder by kind
        build = sq.gr.spatial_neighbors_knn if kind == "knn" else sq.gr.spatial_neighbors_radius
        kwargs: dict[str, Any] = {"library_key": LIBRARY_KEY}
    else:  # pragma: no cover - older squidpy
        build = sq.gr.spatial_neighbors
        kwargs = {"coord_type": "generic", "library_key": LIBRARY_KEY}
    kwargs.update({"n_neighs": n_neighs} if kind == "knn" else {"radius": radius})
    # squidpy's per-call "Creating graph ..." banner (logged through spatialdata's logger since squidpy 1.8)
    loggers = [logging.getLogger(name) for name in ("squidpy", "spatialdata._logging")]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.WARNING)
    try:
        connectivities, _ = build(minimal, copy=True, **kwargs)
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.setLevel(level)
    connectivities = sp.csr_matrix(connectivities)
    if kind == "knn":
        # a kNN relation is not symmetric; a spot's neighbours are those it picks or that pick it
        connectivities = connectivities.maximum(connectivities.T).tocsr()
    return connectivities


def _check_knn_slide_sizes(libraries: np.ndarray, n_neighs: int) -> None:
    """A slide needs more spots than neighbours per spot (scikit-learn's error would not name the slide)."""
    names, counts = np.unique(libraries, return_counts=True)
    small = {str(n): int(c) for n, c in zip(names, counts, strict=True) if c <= n_neighs}
    if small:
        msg = (
            f"A {n_neighs}-nearest-neighbour spot graph needs more than {n_neighs} spots per slide; slide(s) {small} "
            "(spot counts) have fewer. Leave such slides out, or lower the number of neighbours (a model's "
            "model_params={'n_neighbours': ...})."
        )
        raise ValueError(msg)


def _edge_distances(connectivities: sp.csr_matrix, coords: np.ndarray) -> sp.csr_matrix:
    """Euclidean distance (full-resolution pixels) on every edge of ``connectivities``."""
    coo = connectivities.tocoo()
    lengths = np.linalg.norm(coords[coo.row] - coords[coo.col], axis=1)
    return sp.csr_matrix((lengths, (coo.row, coo.col)), shape=connectivities.shape)


def compute_spatial_graph(
    adata: AnnData,
    *,
    kind: GraphKind = "grid",
    n_neighs: int | None = None,
    radius: float | None = None,
    library_key: str = LIBRARY_KEY,
) -> tuple[sp.csr_matrix, sp.csr_matrix, dict[str, Any]]:
    """The graph of :func:`spatial_graph` as ``(connectivities, distances, params)``, without writing."""
    if kind not in ("grid", "knn", "radius"):
        msg = f"Unknown graph kind {kind!r}; choose 'grid' (array neighbours), 'knn' or 'radius'."
        raise ValueError(msg)
    if kind == "radius" and (radius is None or not radius > 0):
        msg = "kind='radius' needs a positive `radius` in full-resolution pixels (e.g. 1.5 x the spot pitch)."
        raise ValueError(msg)
    if kind == "grid" and (n_neighs is not None or radius is not None):
        msg = "kind='grid' takes its neighbours from the array (8 on a square grid, 6 on a hex grid); drop n_neighs/radius."
        raise ValueError(msg)
    if kind == "knn" and n_neighs is not None and n_neighs < 1:
        msg = f"n_neighs must be a positive integer, got {n_neighs}."
        raise ValueError(msg)
    libraries = spot_libraries(adata, library_key)
    coords = require_spatial(adata)
    params: dict[str, Any] = {"kind": kind, "library_key": library_key}
    if kind == "grid":
        connectivities, grids = _grid_graph(adata, libraries)
        params["grid"] = grids
    else:
        n_neighs = DEFAULT_KNN if (kind == "knn" and n_neighs is None) else n_neighs
        if kind == "knn":
            _check_knn_slide_sizes(libraries, n_neighs)
        connectivities = _squidpy_graph(adata, libraries, kind, n_neighs or DEFAULT_KNN, radius)
        params.update({"n_neighs": n_neighs, "radius": radius})
    connectivities.setdiag(0)
    connectivities.eliminate_zeros()
    connectivities = connectivities.astype(np.float32).tocsr()
    return connectivities, _edge_distances(connectivities, coords).astype(np.float32), params


@doc_params("copy", "library_key")
def spatial_graph(
    adata: AnnData,
    *,
    kind: GraphKind = "grid",
    n_neighs: int | None = None,
    radius: float | None = None,
    library_key: str = LIBRARY_KEY,
    key_added: str = "spatial",
    copy: bool = False,
) -> AnnData | None:
    """Join every spot to its spatial neighbours on the same slide.

    - ``'grid'``: the first ring of the spot array (``obs['array_row']``/``['array_col']``): 8 neighbours on
      legacy ST's square grid, 6 on Visium's hexagonal grid (type read from
      ``uns['spatial'][lib]['metadata']['grid']``, else inferred from the coordinates). Exact on the array,
      unlike distances between slightly jittered pixel positions.
    - ``'knn'``: the ``n_neighs`` nearest spot centres (default 8), symmetrised (``squidpy.gr.spatial_neighbors``).
    - ``'radius'``: every spot centre within ``radius`` full-resolution pixels (squidpy).

    Parameters
    ----------
    adata
        Slides with ``obsm['spatial']`` (and array coordinates for ``'grid'``).
    kind
        Neighbourhood rule (above).
    n_neighs
        Neighbours per spot for ``'knn'``.
    radius
        Radius for ``'radius'``, in full-resolution pixels.
    {library_key}
    key_added
        squidpy's naming: ``obsp[f'{key_added}_connectivities']``, ``obsp[f'{key_added}_distances']`` and
        ``uns[f'{key_added}_neighbors']``.
    {copy}

    Returns
    -------
    ``None`` or the modified copy, with binary connectivities, Euclidean edge lengths in pixels and the
    parameters (squidpy's ``connectivities_key``/``distances_key``/``params``).

    Examples
    --------
    >>> import stpredict as st
    >>> adata = st.datasets.her2st_crop()
    >>> st.pp.spatial_graph(adata)
    >>> float(adata.obsp["spatial_connectivities"].sum(axis=1).max())  # legacy ST: 8 neighbours (square grid)
    8.0
    >>> adata.uns["spatial_neighbors"]["params"]["grid"]["C3"]
    'square'
    """
    check_adata(adata)
    started = time.perf_counter()
    connectivities, distances, params = compute_spatial_graph(
        adata, kind=kind, n_neighs=n_neighs, radius=radius, library_key=library_key
    )
    adata = adata.copy() if copy else adata
    write_graph(adata, connectivities, distances, params, key_added)
    logger.info(
        "spatial_graph: added obsp[%r] (%s, %.1f neighbours per spot on average, %.2f s)",
        f"{key_added}_connectivities",
        kind,
        connectivities.nnz / max(adata.n_obs, 1),
        time.perf_counter() - started,
    )
    return adata if copy else None


def write_graph(
    adata: AnnData, connectivities: sp.spmatrix, distances: sp.spmatrix | None, params: dict[str, Any], key_added: str
) -> None:
    """Store a graph under squidpy's keys (the one writer of spot graphs)."""
    conn_key, dist_key = graph_keys(key_added)
    adata.obsp[conn_key] = sp.csr_matrix(connectivities)
    entry: dict[str, Any] = {"connectivities_key": conn_key, "params": params}
    if distances is not None:
        adata.obsp[dist_key] = sp.csr_matrix(distances)
        entry["distances_key"] = dist_key
    adata.uns[f"{key_added}_neighbors"] = entry


#: the spot graph of a model that offers the choice: its paper's nearest centres, or the array's neighbours
SpotGraph = Literal["knn", "grid"]


def check_spot_graph(spot_graph: str) -> None:
    """Raise a clear error unless ``spot_graph`` is one of :data:`SpotGraph`'s choices."""
    if spot_graph not in get_args(SpotGraph):
        msg = f"spot_graph must be 'knn' (nearest spot centres) or 'grid' (array neighbours), got {spot_graph!r}."
        raise ValueError(msg)


def spot_graph_spec(spot_graph: SpotGraph, n_neighbours: int) -> dict[str, Any]:
    """The spot graph a graph model reads: ``'knn'`` (its paper's, ``n_neighbours`` nearest spots) or ``'grid'``.

    ``'grid'`` joins each spot to its array neighbours (6 on Visium's hex grid, 8 on legacy ST's square
    grid), the graph ``ridge_spatial`` reads; it needs ``array_row``/``array_col``.

    Examples
    --------
    >>> spot_graph_spec("knn", 6), spot_graph_spec("grid", 6)
    ({'kind': 'knn', 'n_neighs': 6}, {'kind': 'grid'})
    """
    check_spot_graph(spot_graph)
    if spot_graph == "grid":
        return {"kind": "grid"}
    return {"kind": "knn", "n_neighs": int(n_neighbours)}


#: builders of graph kinds other than st.pp.spatial_graph's, ``{kind: builder(spots, features, **spec)}``;
#: the module that owns a kind registers it (``pp._hierarchical``: ``'hierarchical'``)
GRAPH_BUILDERS: dict[str, Any] = {}


def build_graph(spots: AnnData, features: np.ndarray, spec: Mapping[str, Any]):
    """A graph for these spots (``SpatialGraph``, or a registered kind's); every graph offers ``connectivities``."""
    spec = dict(spec)
    builder = GRAPH_BUILDERS.get(spec.get("kind"))
    if builder is not None:
        spec.pop("kind")
        return builder(spots, features, **spec)
    return SpatialGraph(*compute_spatial_graph(spots, **spec))
