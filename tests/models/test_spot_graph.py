"""``spot_graph``: MERGE, SpaHGC and M2TGLGO read the paper's kNN graph or the array's grid ring (not in the papers)."""

from __future__ import annotations

import numpy as np
import pytest

import stpredict as st
from stpredict.models import get_model

SMALL = {
    "spahgc": {"hidden": 16, "n_layers": 1, "heads": 2, "max_epochs": 1},
    "m2tglgo": {"modalities": ["deep"], "go_prior": False, "hidden": [16, 16], "max_epochs": 1},
}


@pytest.mark.parametrize("model", sorted(SMALL))
def test_grid_spot_graph_is_the_arrays_ring_and_knn_is_not(model, split):
    train, test = split
    reference = st.pp.spatial_graph(test, kind="grid", copy=True).obsp["spatial_connectivities"]
    graphs = {}
    for spot_graph in ("grid", "knn"):
        predictor = st.tl.fit(
            train, model=model, genes=list(train.var_names[:3]), device="cpu",
            model_params={**SMALL[model], "spot_graph": spot_graph},
        )  # fmt: skip
        out = predictor.predict(test, copy=True, key_added="p")
        graphs[spot_graph] = (out.obsp["p_spatial_connectivities"] > 0).astype(int)
        assert np.isfinite(out.obsm["p"].to_numpy()).all()
    ring = (reference > 0).astype(int)
    assert (graphs["grid"] != ring).nnz == 0  # exactly the array's neighbours (8 inside legacy ST's square grid)
    assert (graphs["knn"] != ring).nnz > 0  # the paper's 5/6 nearest centres are another graph
    assert np.asarray(ring.sum(axis=1)).max() == 8


def test_paper_params_keep_the_papers_knn_graph():
    from stpredict.models.m2tglgo import PAPER_PARAMS as M2TGLGO_PAPER
    from stpredict.models.spahgc import PAPER_PARAMS as SPAHGC_PAPER

    assert SPAHGC_PAPER["spot_graph"] == M2TGLGO_PAPER["spot_graph"] == "knn"
    with pytest.raises(ValueError, match="spot_graph must be one of"):
        get_model("spahgc")(spot_graph="ring")


def test_merge_grid_spot_graph_joins_array_neighbours_and_keeps_the_hierarchy(split):
    train, test = split
    adata = st.pp.image_features(test, show_progress_bar=False, copy=True)
    ring = (st.pp.spatial_graph(adata, kind="grid", copy=True).obsp["spatial_connectivities"] > 0).astype(int)
    for spot_graph in ("grid", "knn"):
        st.pp.hierarchical_graph(adata, spot_graph=spot_graph, spots_per_cluster=25, key_added=spot_graph)
        edge_type = adata.obsp[f"{spot_graph}_edge_type"]
        spatial = edge_type.copy()
        spatial.data = (spatial.data & 1).astype(int)  # the spatial-edge flag
        spatial.eliminate_zeros()
        assert ((edge_type.data & 2) > 0).any()  # the clusters' internal edges are still there
        if spot_graph == "grid":
            assert (spatial != ring).nnz == 0
        else:
            assert (spatial != ring).nnz > 0
    assert adata.uns["grid"]["spot_graph"] == "grid"


def test_merge_grid_spot_graph_on_one_training_slide(split):
    """One slide: validation holds out spatial blocks, whose graphs MERGE rebuilds from the stored grid ring."""
    train, test = split
    one = train[train.obs["library_id"] == train.obs["library_id"].iloc[0]].copy()
    predictor = st.tl.fit(
        one, model="merge", genes=list(one.var_names[:3]), device="cpu",
        model_params={"hidden": [16], "heads": 2, "input_dim": 16, "max_epochs": 2, "spot_graph": "grid"},
    )  # fmt: skip
    out = predictor.predict(test, copy=True, key_added="p")
    assert np.isfinite(out.obsm["p"].to_numpy()).all()
    ring = st.pp.spatial_graph(test, kind="grid", copy=True).obsp["spatial_connectivities"]
    hierarchical = out.obsp["p_hierarchical_connectivities"]
    assert (((ring > 0).astype(int) - (hierarchical > 0).astype(int)) > 0).nnz == 0  # every ring edge is in it


def test_ridge_spatial_on_knn_needs_no_array_and_reads_the_knn_mean(split):
    train, test = split
    genes = list(train.var_names[:3])
    no_array = [a.copy() for a in (train, test)]
    for a in no_array:
        del a.obs["array_row"], a.obs["array_col"]
    with pytest.raises(KeyError, match="spot_graph='knn'"):
        st.tl.fit(no_array[0], model="ridge_spatial", genes=genes)
    knn = st.tl.fit(no_array[0], model="ridge_spatial", genes=genes, model_params={"spot_graph": "knn"})
    out = knn.predict(no_array[1], copy=True, key_added="p")
    graph = out.obsp["p_grid_connectivities"]
    assert np.asarray((graph > 0).sum(axis=1)).min() >= 6  # symmetrised 6 nearest centres
    # the same fit on the grid gives other predictions: the option changes the design, not just a label
    grid = st.tl.fit(train, model="ridge_spatial", genes=genes).predict(test, copy=True, key_added="p")
    assert not np.allclose(out.obsm["p"].to_numpy(), grid.obsm["p"].to_numpy())
