from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import stpredict as st


def _top_expressed_by_hand(adata, train, n):
    sub = adata[adata.obs["library_id"].isin(train)]
    counts = sub.layers["counts"].toarray()
    slide = sub.obs["library_id"].astype(str).to_numpy()
    everywhere = np.all([counts[slide == s].sum(axis=0) > 0 for s in train], axis=0)
    frequent = (counts > 0).mean(axis=0) >= 0.1
    totals = pd.Series(counts.sum(axis=0), index=sub.var_names)[everywhere & frequent]
    return totals.sort_values(ascending=False, kind="stable").index[:n].tolist()


def test_top_expressed_matches_definition(crop):
    st.pp.select_genes(crop, n_genes=60, train=["C2", "C4"])
    assert crop.uns["selected"]["genes"] == _top_expressed_by_hand(crop, ["C2", "C4"], 60)
    assert crop.var["selected"].sum() == 60
    assert crop.var.loc[crop.uns["selected"]["genes"][0], "selected_rank"] == 1


@pytest.mark.parametrize("method", ["top_expressed", "hvg", "moran"])
def test_selection_never_looks_at_the_test_slide(crop, method):
    st.pp.normalize(crop)
    kwargs = {"method": method, "n_genes": 40, "train": ["C2", "C3"]}
    reference = st.pp.select_genes(crop, copy=True, **kwargs).uns["selected"]["genes"]
    # scramble the test slide's expression completely: the selection must not move
    test = (crop.obs["library_id"] == "C4").to_numpy()
    rng = np.random.default_rng(0)
    counts = crop.layers["counts"].toarray()
    counts[test] = rng.permutation(counts[test].T).T * 7
    crop.layers["counts"] = counts
    crop.layers["log1p"][test] = rng.normal(size=crop.layers["log1p"][test].shape)
    assert st.pp.select_genes(crop, copy=True, **kwargs).uns["selected"]["genes"] == reference
    # ... while selecting on all slides does see it
    if method == "top_expressed":
        assert st.pp.select_genes(crop, copy=True, method=method, n_genes=40).uns["selected"]["genes"] != reference


def test_moran_ranks_spatially_patterned_genes_first(crop):
    st.pp.normalize(crop)
    rows = crop.obs["array_row"].to_numpy(float)
    crop.layers["log1p"][:, 0] = rows  # a perfect gradient on every slide
    crop.layers["log1p"][:, 1] = np.random.default_rng(0).normal(size=crop.n_obs)  # noise
    st.pp.select_genes(crop, method="moran", n_genes=crop.n_vars, train=["C2", "C3"])
    scores = crop.var["selected_score"]
    assert scores.iloc[0] > 0.8 and abs(scores.iloc[1]) < 0.2
    assert crop.uns["selected"]["genes"][0] == crop.var_names[0]


def test_select_genes_errors(crop):
    with pytest.raises(KeyError, match="Training slide"):
        st.pp.select_genes(crop, train=["Z9"])
    st.pp.normalize(crop)
    with pytest.raises(ValueError, match="raw counts"):
        st.pp.select_genes(crop, layer="log1p")


def test_moran_equals_squidpy_spatial_autocorr(crop):
    import scipy.sparse as sp
    import squidpy as sq

    from stpredict.pp._grid import grid_neighbours

    st.pp.normalize(crop)
    st.pp.select_genes(crop, method="moran", n_genes=50, train=["C3"])
    slide = crop[crop.obs["library_id"] == "C3"].copy()
    graph = grid_neighbours(
        slide.obs["array_row"].to_numpy(), slide.obs["array_col"].to_numpy(), "square", include_self=False
    )
    slide.obsp["spatial_connectivities"] = sp.csr_matrix(graph)
    genes = crop.uns["selected"]["genes"][:20]
    result = sq.gr.spatial_autocorr(slide, genes=genes, mode="moran", layer="log1p", copy=True, show_progress_bar=False)
    np.testing.assert_allclose(crop.var.loc[genes, "selected_score"], result.loc[genes, "I"], rtol=1e-6)
