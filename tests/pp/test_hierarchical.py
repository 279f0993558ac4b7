"""MERGE's hierarchical graph: kNN, internal and shortcut edges, per slide, and its ablations."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import stpredict as st
from stpredict.pp._hierarchical import EDGE_TYPES, hierarchical_edges


def _edges(adata, kind, key="merge"):
    codes = adata.obsp[f"{key}_edge_type"].tocoo()
    keep = (codes.data.astype(int) & EDGE_TYPES[kind]) > 0
    return sp.csr_matrix((np.ones(keep.sum()), (codes.row[keep], codes.col[keep])), shape=codes.shape)


def _standardized(values):
    std = values.std(axis=0)
    return (values - values.mean(axis=0)) / np.where(std > 1e-12, std, 1.0)


@pytest.fixture(scope="module")
def graph(_crop_norm_session):
    adata = _crop_norm_session.copy()
    st.pp.hierarchical_graph(adata, spots_per_cluster=25)
    return adata


def test_spatial_part_is_symmetric_knn_on_x_and_y(graph):
    knn = _edges(graph, "spatial")
    assert (knn != knn.T).nnz == 0
    xy = graph.obsm["spatial"]
    lib = graph.obs["library_id"].to_numpy()
    for i in range(graph.n_obs):
        same = np.flatnonzero((lib == lib[i]) & (np.arange(graph.n_obs) != i))
        d = np.linalg.norm(xy[same] - xy[i], axis=1)
        eighth = np.sort(d)[7]
        nearer = same[d < eighth - 1e-9]  # unambiguous nearest neighbours (ties at the 8th may go either way)
        assert knn[i, nearer].toarray().all()
        assert knn[i].nnz >= 8
    # the public code's bug read x twice; spots in one column differ in y only and must still be neighbours
    x_only = hierarchical_edges(np.zeros((9, 2)), np.column_stack([np.zeros(9), np.arange(9.0)]), np.zeros(9))
    assert x_only.edges_of("spatial")[0].indices.tolist() == list(range(1, 9))


def test_internal_edges_join_each_spot_to_its_two_centroids(graph):
    lib = graph.obs["library_id"].to_numpy()
    centroid = graph.obs["merge_centroid"].to_numpy()
    features = graph.obsm["X_handcrafted"]
    for name in ("spatial", "feature"):
        internal = _edges(graph, f"internal_{name}")
        labels = graph.obs[f"merge_{name}_cluster"].astype(int).to_numpy()
        for slide in np.unique(lib):
            on_slide = np.flatnonzero(lib == slide)
            embedding = _standardized(features[on_slide])
            for cluster in np.unique(labels[on_slide]):
                members = on_slide[labels[on_slide] == cluster]
                mean = embedding[labels[on_slide] == cluster].mean(axis=0)
                expected = members[np.argmin(np.linalg.norm(embedding[labels[on_slide] == cluster] - mean, axis=1))]
                assert centroid[expected]
                for spot in members:
                    neighbours = internal[spot].indices
                    if spot == expected:
                        assert set(neighbours) == set(members) - {spot}
                    else:  # exactly one internal edge of this clustering: to the cluster's centroid
                        assert neighbours.tolist() == [expected]


def test_centroids_form_a_clique_per_slide_and_no_edge_joins_slides(graph):
    lib = graph.obs["library_id"].to_numpy()
    shortcut = _edges(graph, "shortcut")
    for slide in np.unique(lib):
        hubs = np.flatnonzero(graph.obs["merge_centroid"].to_numpy() & (lib == slide))
        assert len(hubs) >= 3
        block = shortcut[hubs][:, hubs].toarray()
        np.testing.assert_array_equal(block, 1 - np.eye(len(hubs)))
    shortcut_spots = np.unique(shortcut.tocoo().row)
    assert graph.obs["merge_centroid"].to_numpy()[shortcut_spots].all()
    coo = graph.obsp["merge_connectivities"].tocoo()
    assert (lib[coo.row] == lib[coo.col]).all()
    assert (coo.row != coo.col).all()
    conn = graph.obsp["merge_connectivities"]
    assert (conn != conn.T).nnz == 0 and (graph.obsp["merge_edge_type"] > 0).nnz == conn.nnz


def test_cluster_counts_follow_spots_per_cluster(graph, _crop_norm_session):
    sizes = graph.obs.groupby("library_id", observed=True).size()
    for slide, counts in graph.uns["merge"]["n_clusters"].items():
        assert counts == {"spatial": round(sizes[slide] / 25), "feature": round(sizes[slide] / 25)}
    # the default 100 spots per cluster on a ~70-spot slide still gives 2 clusters, never 1
    default = st.pp.hierarchical_graph(_crop_norm_session, copy=True)
    assert all(c == {"spatial": 2, "feature": 2} for c in default.uns["merge"]["n_clusters"].values())
    fixed = st.pp.hierarchical_graph(_crop_norm_session, n_spatial_clusters=5, n_feature_clusters=4, copy=True)
    assert all(c == {"spatial": 5, "feature": 4} for c in fixed.uns["merge"]["n_clusters"].values())


@pytest.mark.parametrize(
    ("clusterings", "present"),
    [
        ((), {"spatial"}),
        (("spatial",), {"spatial", "internal_spatial", "shortcut"}),
        (("feature",), {"spatial", "internal_feature", "shortcut"}),
    ],
)
def test_ablations_remove_exactly_their_edges(graph, _crop_norm_session, clusterings, present):
    ablated = st.pp.hierarchical_graph(_crop_norm_session, spots_per_cluster=25, clusterings=clusterings, copy=True)
    for kind in EDGE_TYPES:
        edges = _edges(ablated, kind)
        if kind not in present:
            assert edges.nnz == 0, kind
        elif kind in ("spatial", f"internal_{clusterings[0] if clusterings else ''}"):
            assert (edges != _edges(graph, kind)).nnz == 0, kind  # untouched by dropping the other clustering
    if not clusterings:
        assert not ablated.obs["merge_centroid"].any()
        assert "merge_spatial_cluster" not in ablated.obs


def test_spatial_and_random_centroids(_crop_norm_session):
    spatial = st.pp.hierarchical_graph(_crop_norm_session, spots_per_cluster=25, centroid="spatial", copy=True)
    xy = spatial.obsm["spatial"]
    internal = _edges(spatial, "internal_spatial")
    labels = spatial.obs["merge_spatial_cluster"].astype(int).to_numpy()
    lib = spatial.obs["library_id"].to_numpy()
    for slide in np.unique(lib):
        for cluster in np.unique(labels[lib == slide]):
            members = np.flatnonzero((lib == slide) & (labels == cluster))
            nearest = members[np.argmin(np.linalg.norm(xy[members] - xy[members].mean(axis=0), axis=1))]
            assert internal[nearest].nnz == len(members) - 1
    one = st.pp.hierarchical_graph(_crop_norm_session, centroid="random", random_state=1, copy=True)
    again = st.pp.hierarchical_graph(_crop_norm_session, centroid="random", random_state=1, copy=True)
    other = st.pp.hierarchical_graph(_crop_norm_session, centroid="random", random_state=2, copy=True)
    np.testing.assert_array_equal(one.obs["merge_centroid"], again.obs["merge_centroid"])
    assert (one.obs["merge_centroid"] != other.obs["merge_centroid"]).any()


def test_tiny_slides_and_bad_parameters():
    graph = hierarchical_edges(np.arange(10.0).reshape(5, 2), np.random.default_rng(0).random((5, 2)), np.zeros(5))
    knn = graph.edges_of("spatial")
    assert (knn.sum(axis=1) == 4).all()  # 5 spots: every other spot is a neighbour
    lone = hierarchical_edges(np.ones((1, 3)), np.zeros((1, 2)), np.zeros(1))
    assert lone.connectivities.nnz == 0 and lone.centroid.tolist() == [True]
    with pytest.raises(ValueError, match="clusterings must be"):
        hierarchical_edges(np.ones((4, 2)), np.ones((4, 2)), np.zeros(4), clusterings=("spatial", "morphology"))
    with pytest.raises(ValueError, match="centroid must be one of"):
        hierarchical_edges(np.ones((4, 2)), np.ones((4, 2)), np.zeros(4), centroid="medoid")


def test_missing_representation_is_a_clear_error(crop):
    with pytest.raises(KeyError, match="X_handcrafted.*st.pp.image_features"):
        st.pp.hierarchical_graph(crop)
    assert "merge_connectivities" not in crop.obsp


def test_plot_draws_clusters_centroids_and_shortcuts(graph, tmp_path):
    ax = st.pl.hierarchical_graph(graph, library_id="C3", color="feature", show=False, save=tmp_path / "g.png")
    assert (tmp_path / "g.png").stat().st_size > 0
    hubs = int((graph.obs["merge_centroid"] & (graph.obs["library_id"] == "C3")).sum())
    assert len(ax.collections) >= 3  # spots, centroids, shortcut edges
    segments = [c for c in ax.collections if c.__class__.__name__ == "LineCollection"]
    assert sum(len(c.get_segments()) for c in segments) == hubs * (hubs - 1) // 2
    with pytest.raises(KeyError, match="hierarchical_graph"):
        st.pl.hierarchical_graph(st.datasets.her2st_crop(), show=False)
