"""M2TGLGO: SONRM and reconstruction losses, hop neighbourhoods, the GO prior, nuclei inputs, ablations."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import stpredict as st
from stpredict.models.m2tglgo._graph import hop_pairs
from stpredict.models.m2tglgo._module import (
    M2TGLGORegressor,
    neighbourhood_quartiles,
    ranking_loss,
    reconstruction_loss,
)
from stpredict.models.m2tglgo._params import M2tglgoParams

GENES = ["ERBB2", "GNAS", "FASN", "CD24", "KRT19", "KRT8", "ACTB", "MUCL1"]
SMALL = {"max_epochs": 3, "hidden": [16, 32], "gene_dim": 8, "patch_size": 64}


def _pairs(spot, others):
    return torch.tensor([[spot] * len(others), others])


def test_ranking_loss_is_zero_only_when_similarity_falls_with_the_hop():
    e = torch.eye(3)
    # spot 0's 1-hop neighbour is most alike (cos 1), its 2-hop one orthogonal, its 3-hop one opposite
    h = torch.stack([e[0], e[0], e[1], -e[0]])
    hops = [_pairs(0, [1]), _pairs(0, [2]), _pairs(0, [3])]
    assert ranking_loss(h, hops, margin=0.01).item() == 0.0
    # swapped: the 3-hop neighbour is the most alike; every quartile violates the order
    swapped = torch.stack([e[0], -e[0], e[1], e[0]])
    loss = ranking_loss(swapped, hops, margin=0.01).item()
    s = torch.sigmoid(torch.tensor([-1.0, 0.0, 1.0]))  # σ(cos) at hops 1, 2, 3
    expected = 4 * (max(0, s[1] - s[0] + 0.01) + max(0, s[2] - s[1] + 0.01))
    assert loss == pytest.approx(float(expected), rel=1e-5)
    # equal similarities still cost the margin at every quartile
    flat = torch.stack([e[0], e[1], e[1], e[1]])
    assert ranking_loss(flat, hops, margin=0.01).item() == pytest.approx(4 * 2 * 0.01, rel=1e-4)


def test_quartiles_match_numpy_per_spot():
    rng = np.random.default_rng(0)
    spot = torch.from_numpy(np.sort(rng.integers(0, 5, size=40)))
    values = torch.from_numpy(rng.random(40))
    quartiles, present = neighbourhood_quartiles(values, spot, 6)
    for s in range(6):
        own = values.numpy()[spot.numpy() == s]
        assert bool(present[s]) == (len(own) > 0)
        if len(own):
            np.testing.assert_allclose(quartiles[s].numpy(), np.quantile(own, [0.25, 0.5, 0.75, 1.0]), rtol=1e-6)


def test_reconstruction_loss_dense_by_hand_and_sampled_estimate():
    h = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    edges = torch.tensor([[0, 1], [1, 0]])  # 0 - 1
    s1, s0 = torch.sigmoid(torch.tensor(1.0)), torch.sigmoid(torch.tensor(0.0))
    # pairs: diagonal (A=0, cos 1) x3, (0,1)/(1,0) edges with cos 1, the 4 pairs with spot 2 at cos 0
    expected = (3 * s1**2 + 2 * (1 - s1) ** 2 + 4 * s0**2) / 9
    assert reconstruction_loss(h, edges).item() == pytest.approx(float(expected), rel=1e-6)
    rng = np.random.default_rng(0)
    coords = rng.random((600, 2))
    from sklearn.neighbors import kneighbors_graph

    adjacency = kneighbors_graph(coords, 6)
    adjacency = ((adjacency + adjacency.T) > 0).astype(float)
    coo = sp.coo_matrix(adjacency)
    big_edges = torch.tensor(np.vstack([coo.col, coo.row]), dtype=torch.long)
    embedding = torch.from_numpy(rng.normal(size=(600, 8))).float()
    dense = reconstruction_loss(embedding, big_edges, dense_limit=10_000).item()
    torch.manual_seed(0)
    sampled = reconstruction_loss(embedding, big_edges, dense_limit=100).item()
    assert sampled == pytest.approx(dense, rel=0.05)


def test_hop_neighbourhoods_are_exact_rings():
    grid = sp.diags([1, 1], [-1, 1], shape=(7, 7)).tocsr()  # path 0-1-...-6
    hop1, hop2, hop3 = hop_pairs(grid, 3)
    middle = 3
    assert sorted(hop1[1, hop1[0] == middle]) == [2, 4]
    assert sorted(hop2[1, hop2[0] == middle]) == [1, 5]
    assert sorted(hop3[1, hop3[0] == middle]) == [0, 6]


@pytest.fixture(scope="module")
def nuclei_split(split):
    train, test = (a.copy() for a in split)
    for adata in (train, test):
        st.pp.image_features(adata, method="nuclei", size=64, show_progress_bar=False)
    return train, test


def _fit(train, **params):
    return st.tl.fit(train, model="m2tglgo", genes=GENES, device="cpu", model_params={**SMALL, **params})


def test_training_loss_decreases(nuclei_split):
    train, _ = nuclei_split
    predictor = _fit(train, max_epochs=30, patience=30, lr=1e-3, dropout=0.0)
    history = predictor.validation.history
    assert history["train_loss"].iloc[-5:].mean() < history["train_loss"].iloc[:3].mean() - 0.05


def test_stored_nuclei_features_are_read_and_equal_the_computed_ones(nuclei_split, split):
    train, test = nuclei_split
    from_obsm = _fit(train).predict(test, copy=True, key_added="p").obsm["p"]
    plain_train, plain_test = split  # no X_nuclei: computed from the pixels with the same recipe
    computed = _fit(plain_train).predict(plain_test, copy=True, key_added="p").obsm["p"]
    np.testing.assert_allclose(from_obsm.to_numpy(), computed.to_numpy(), rtol=1e-5, atol=1e-5)


def test_go_prior_is_saved_with_the_model(nuclei_split, tmp_path, monkeypatch):
    train, test = nuclei_split
    predictor = _fit(train)
    edges = predictor.model.gene_edges_
    assert edges.shape[0] == 2 and edges.shape[1] > 0 and predictor.model.gene_features_.shape[0] == len(GENES)
    path = predictor.save(tmp_path / "m2t.stpredict")

    def no_go(*args, **kwargs):
        raise AssertionError("prediction must not read the Gene Ontology")

    monkeypatch.setattr(st.datasets, "gene_ontology", no_go)
    loaded = st.tl.load_model(path)
    np.testing.assert_array_equal(loaded.model.gene_edges_, edges)
    np.testing.assert_array_equal(
        loaded.predict(test, copy=True, key_added="p").obsm["p"].to_numpy(),
        predictor.predict(test, copy=True, key_added="p").obsm["p"].to_numpy(),
    )


def test_non_human_genes_need_their_own_go_or_no_prior(nuclei_split):
    train, _ = nuclei_split
    mouse = train[:, GENES].copy()
    mouse.var_names = [g.capitalize() for g in GENES]  # mouse-style symbols: unknown to the human GO
    with pytest.raises(ValueError, match="go_prior': False"):
        st.tl.fit(mouse, model="m2tglgo", device="cpu", model_params=SMALL)
    predictor = st.tl.fit(mouse, model="m2tglgo", device="cpu", model_params={**SMALL, "go_prior": False})
    assert predictor.model.validation_ is not None and not hasattr(predictor.model, "gene_edges_")


def test_ablations_change_what_is_read_and_built(nuclei_split):
    from stpredict.models import get_model

    model = get_model("m2tglgo")
    assert model(modalities=["deep"]).reads_pixels() is False
    assert model(modalities=["morphology", "topology"]).reads_representation() is False
    with pytest.raises(ValueError, match="modalities must be"):
        model(modalities=["colour"])
    train, test = nuclei_split
    nuclei_only = _fit(train, modalities=["morphology", "topology"])
    assert nuclei_only.use_rep is None
    out = nuclei_only.predict(test, copy=True, key_added="p")
    assert np.isfinite(out.obsm["p"].to_numpy()).all()
    net = _fit(train, go_prior=False).model.net_.net
    assert hasattr(net, "predictors") and not hasattr(net, "gene_gat")


def test_regressor_objective_terms_can_be_switched_off():
    torch.manual_seed(0)
    n = 12
    batch = {
        "x": torch.randn(n, 4),
        "nuclei": torch.randn(n, 18),
        "edge_index": torch.tensor([[i, (i + 1) % n] for i in range(n)] + [[(i + 1) % n, i] for i in range(n)]).T,
        "y": torch.randn(n, 3),
    }
    ring = sp.csr_matrix(
        (np.ones(2 * n), (batch["edge_index"][1].numpy(), batch["edge_index"][0].numpy())), shape=(n, n)
    )
    for r, pairs in enumerate(hop_pairs(ring, 3), start=1):
        batch[f"hop{r}"] = torch.from_numpy(pairs)
    small = M2tglgoParams(hidden=(8,), dropout=0.0)
    full = M2TGLGORegressor(4, 3, small).eval()
    mse_only = M2TGLGORegressor(4, 3, replace(small, reconstruction_weight=0, ranking_weight=0)).eval()
    mse_only.load_state_dict(full.state_dict())
    with torch.no_grad():
        h = full.net.embed(full._modalities(batch), batch["edge_index"])
        extra = reconstruction_loss(h, batch["edge_index"]) + ranking_loss(h, [batch[f"hop{r}"] for r in (1, 2, 3)])
        assert full.training_loss(batch).item() == pytest.approx(
            mse_only.training_loss(batch).item() + extra.item(), rel=1e-5
        )
