"""MERGE: the network of the paper, training on slide graphs, and the graph stored with predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import stpredict as st
from stpredict.models.merge import PAPER_PARAMS, MergeGAT
from stpredict.pp._hierarchical import EDGE_TYPES

GENES = ["ERBB2", "GNAS", "FASN", "CD24", "KRT19", "ACTB"]
SMALL = {"hidden": [16, 16], "heads": 2, "input_dim": 16}


def test_paper_configuration_is_the_papers_network():
    net = MergeGAT(256, 250, hidden=PAPER_PARAMS["hidden"], heads=PAPER_PARAMS["heads"])
    assert isinstance(net.project, torch.nn.Identity)  # 256-d embeddings go in unprojected
    widths = [(conv.in_channels, conv.out_channels, conv.heads) for conv in [*net.convs, net.out]]
    assert widths == [(256, 448, 8), (3584, 384, 8), (3072, 256, 8), (2048, 250, 1)]
    assert [norm.in_channels for norm in net.norms] == [3584, 3072, 2048]
    assert all(norm.mode == "graph" for norm in net.norms)  # torch-geometric's default, as the public code
    assert 17e6 < sum(p.numel() for p in net.parameters()) < 19e6
    assert isinstance(MergeGAT(44, 10).project, torch.nn.Linear)  # other widths are projected to 256


def test_drop_edge_only_while_training():
    torch.manual_seed(0)
    net = MergeGAT(5, 3, hidden=[8], heads=2, input_dim=8, drop_edge=0.5)
    batch = {"x": torch.randn(30, 5), "edge_index": torch.randint(0, 30, (2, 200))}
    net.eval()
    torch.testing.assert_close(net(batch), net(batch))
    net.train()
    assert not torch.allclose(net(batch), net(batch))
    with pytest.raises(ValueError, match="drop_edge"):
        MergeGAT(5, 3, drop_edge=1.0)


def test_training_loss_decreases_and_validation_is_recorded(split):
    train, _ = split
    predictor = st.tl.fit(train, model="merge", genes=GENES, model_params={**SMALL, "max_epochs": 40, "patience": 40})
    history = predictor.validation.history
    assert len(history) == 40
    assert history["train_loss"].iloc[-5:].mean() < 0.8 * history["train_loss"].iloc[:5].mean()
    assert predictor.validation.groups == "slide" and len(predictor.validation.held_out) == 1
    assert np.isfinite(predictor.validation.gene_pearson).all()


def test_predictions_carry_the_test_slides_own_graph(split):
    train, test = split
    params = {**SMALL, "max_epochs": 3, "spots_per_cluster": 20}
    predictor = st.tl.fit(train, model="merge", genes=GENES, model_params=params)
    out = predictor.predict(test, copy=True)
    stored = out.obsp["pred_merge_hierarchical_connectivities"]
    expected = st.pp.hierarchical_graph(test, spots_per_cluster=20, copy=True)
    assert (stored != expected.obsp["merge_connectivities"]).nnz == 0
    np.testing.assert_array_equal(
        out.obs["pred_merge_hierarchical_centroid"].to_numpy(), expected.obs["merge_centroid"].to_numpy()
    )
    ax = st.pl.hierarchical_graph(out, key="pred_merge_hierarchical", show=False)
    assert "C4" in ax.get_title()


def test_one_hop_ablation_trains_on_spatial_edges_only(split):
    train, test = split
    predictor = st.tl.fit(train, model="merge", genes=GENES, model_params={**SMALL, "max_epochs": 3, "clusterings": []})
    out = predictor.predict(test, copy=True)
    codes = out.obsp["pred_merge_hierarchical_edge_type"]
    assert set(np.unique(codes.data)) == {EDGE_TYPES["spatial"]}
    assert not out.obs["pred_merge_hierarchical_centroid"].any()


def test_a_lone_training_slide_validates_on_spatial_blocks(split):
    train, test = split
    lone = train[train.obs["library_id"] == "C3"].copy()
    predictor = st.tl.fit(lone, model="merge", genes=GENES, model_params={**SMALL, "max_epochs": 3})
    assert predictor.validation.groups == "spatial block"
    assert predictor.predict(test, copy=True).obsm["pred_merge"].shape == (test.n_obs, len(GENES))


def test_bad_graph_parameter_is_a_clear_error(split):
    train, _ = split
    with pytest.raises(ValueError, match="centroid must be one of"):
        st.tl.fit(train, model="merge", genes=GENES, model_params={**SMALL, "centroid": "medoid"})
