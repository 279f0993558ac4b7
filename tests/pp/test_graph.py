"""Spatial neighbour graphs in squidpy's keys."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData

import stpredict as st


def _cross_slide_edges(adata, graph):
    lib = adata.obs["library_id"].to_numpy()
    coo = graph.tocoo()
    return int((lib[coo.row] != lib[coo.col]).sum())


def _hex_slides():
    """Two Visium-like slides on a doubled-column hex grid (neighbours at (0, ±2) and (±1, ±1))."""
    rows, cols = np.meshgrid(np.arange(8), np.arange(16), indexing="ij")
    keep = (rows + cols) % 2 == 0
    rows, cols = rows[keep], cols[keep]
    frames = []
    for lib in ("v1", "v2"):
        frames.append(pd.DataFrame({"array_row": rows, "array_col": cols, "library_id": lib}))
    obs = pd.concat(frames, ignore_index=True)
    obs.index = obs.index.astype(str)
    xy = np.column_stack([obs["array_col"] * 50.0, obs["array_row"] * 50.0 * np.sqrt(3)])
    adata = AnnData(obs=obs, obsm={"spatial": xy})
    adata.uns["spatial"] = {lib: {"metadata": {"grid": "hex"}} for lib in ("v1", "v2")}
    return adata


def test_grid_legacy_st_has_8_neighbours_and_no_cross_slide_edges(crop):
    st.pp.spatial_graph(crop)
    graph = crop.obsp["spatial_connectivities"]
    degree = np.asarray(graph.sum(axis=1)).ravel()
    assert degree.max() == 8 and (degree >= 1).all()
    assert (graph != graph.T).nnz == 0 and graph.diagonal().sum() == 0
    assert _cross_slide_edges(crop, graph) == 0
    # interior spots (all 8 array neighbours present on the same slide) have exactly those 8
    rows, cols, lib = (
        crop.obs["array_row"].to_numpy(),
        crop.obs["array_col"].to_numpy(),
        crop.obs["library_id"].to_numpy(),
    )
    position = {(lib[j], rows[j], cols[j]): j for j in range(crop.n_obs)}
    for i in range(crop.n_obs):
        ring = {(lib[i], rows[i] + dr, cols[i] + dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if dr or dc}
        assert set(graph[i].indices) == {position[spot] for spot in ring if spot in position}
    assert crop.uns["spatial_neighbors"]["connectivities_key"] == "spatial_connectivities"
    distances = crop.obsp["spatial_distances"]
    coo = distances.tocoo()
    xy = crop.obsm["spatial"]
    np.testing.assert_allclose(coo.data, np.linalg.norm(xy[coo.row] - xy[coo.col], axis=1), rtol=1e-5)


def test_grid_visium_hex_has_6_neighbours():
    adata = _hex_slides()
    st.pp.spatial_graph(adata)
    degree = np.asarray(adata.obsp["spatial_connectivities"].sum(axis=1)).ravel()
    assert degree.max() == 6 and _cross_slide_edges(adata, adata.obsp["spatial_connectivities"]) == 0


def test_knn_and_radius_are_symmetric_and_per_slide(crop):
    out = st.pp.spatial_graph(crop, kind="knn", n_neighs=4, key_added="knn", copy=True)
    assert "knn_connectivities" not in crop.obsp  # copy=True leaves the input alone
    graph = out.obsp["knn_connectivities"]
    degree = np.asarray(graph.sum(axis=1)).ravel()
    assert degree.min() >= 4 and (graph != graph.T).nnz == 0 and _cross_slide_edges(out, graph) == 0
    st.pp.spatial_graph(crop, kind="radius", radius=300, key_added="r")
    coo = crop.obsp["r_distances"].tocoo()
    assert coo.data.max() <= 300 and _cross_slide_edges(crop, crop.obsp["r_connectivities"]) == 0
    assert crop.uns["r_neighbors"]["params"]["radius"] == 300


def test_graph_errors(crop):
    with pytest.raises(ValueError, match="positive `radius`"):
        st.pp.spatial_graph(crop, kind="radius")
    with pytest.raises(ValueError, match="Unknown graph kind"):
        st.pp.spatial_graph(crop, kind="delaunay")
    no_grid = crop.copy()
    del no_grid.obs["array_row"]
    with pytest.raises(KeyError, match="array_row"):
        st.pp.spatial_graph(no_grid)
    st.pp.spatial_graph(no_grid, kind="knn")  # kNN needs only the spot centres
    assert sp.issparse(no_grid.obsp["spatial_connectivities"])
