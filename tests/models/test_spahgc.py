"""SpaHGC: exact retrieval, the bank (training slides only, frozen), masks, the contrastive term, training."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import stpredict as st
from stpredict.models.spahgc import ReferenceBank, cosine_topk, hetero_graph
from stpredict.models.spahgc._module import contrastive_loss, feature_masks, pearson_loss

GENES = ["ERBB2", "GNAS", "FASN", "CD24", "KRT19"]
SMALL = {"hidden": 16, "heads": 2, "n_layers": 2, "max_epochs": 3, "k": 3}


def _brute_force_topk(queries, keys, k):
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    kk = keys / np.linalg.norm(keys, axis=1, keepdims=True)
    sim = q @ kk.T
    return np.argsort(-sim, axis=1, kind="stable")[:, :k], np.sort(sim, axis=1)[:, ::-1][:, :k]


def test_blocked_top_k_equals_brute_force_cosine():
    rng = np.random.default_rng(0)
    queries, keys = rng.normal(size=(37, 6)), rng.normal(size=(501, 6))
    idx, sim = cosine_topk(queries, keys, k=7, query_block=8, key_block=50)  # many blocks on both sides
    expected_idx, expected_sim = _brute_force_topk(queries, keys, 7)
    np.testing.assert_array_equal(idx, expected_idx)
    np.testing.assert_allclose(sim, expected_sim, rtol=1e-5, atol=1e-6)
    allowed = np.arange(501) % 3 == 0
    idx, _ = cosine_topk(queries, keys, k=4, allowed=allowed, key_block=64)
    assert allowed[idx].all()
    expected = np.flatnonzero(allowed)[_brute_force_topk(queries, keys[allowed], 4)[0]]
    np.testing.assert_array_equal(idx, expected)
    with pytest.raises(ValueError, match="Only 2 reference spot"):
        cosine_topk(queries, keys[:2], k=3)


def test_hetero_graph_edges_and_reference_features():
    rng = np.random.default_rng(1)
    bank = ReferenceBank(
        embeddings=rng.normal(size=(40, 4)),
        expression=rng.normal(size=(40, 3)),
        slide=np.repeat(["a", "b"], 20),
        spot=np.arange(40).astype(str),
    )
    targets = rng.normal(size=(6, 4))
    near = sp.csr_matrix(np.eye(6, k=1) + np.eye(6, k=-1))
    data, (matched, similarity) = hetero_graph(targets, near, bank, k=5, allowed=bank.slide == "b")
    assert (bank.slide[matched] == "b").all() and similarity.shape == (6, 5)
    refer = data["reference", "refer", "target"].edge_index.numpy()
    nodes = data["reference"].bank_index.numpy()
    # every target's incoming reference edges are exactly its matches
    for t in range(6):
        np.testing.assert_array_equal(np.sort(nodes[refer[0, refer[1] == t]]), np.sort(matched[t]))
    np.testing.assert_allclose(data["reference"].x.numpy(), np.hstack([bank.embeddings, bank.expression])[nodes])
    close = data["reference", "close", "reference"].edge_index.numpy()
    assert (close[0] != close[1]).all() and np.bincount(close[1], minlength=len(nodes)).tolist() == [3] * len(nodes)
    np.testing.assert_array_equal(data["target", "referred_by", "reference"].edge_index.numpy(), refer[::-1])
    assert data["target", "near", "target"].edge_index.shape == (2, 10)


def test_complementary_masks_and_the_contrastive_term():
    generator = torch.Generator().manual_seed(0)
    keep1, keep2 = feature_masks((50, 20), 0.8, generator=generator)
    assert (keep1 ^ keep2).all()  # exact complements
    assert (keep1.sum(1) == 4).all() and (keep2.sum(1) == 16).all()  # 80 % masked out of view 1
    random1, random2 = feature_masks((50, 20), 0.8, complementary=False, generator=generator)
    assert (random1.sum(1) == 4).all() and (random2.sum(1) == 4).all() and not (random1 ^ random2).all()
    x = torch.randn(8, 5)
    assert contrastive_loss(x, x).abs().item() < 1e-6
    assert contrastive_loss(x, -x).item() == pytest.approx(4.0, abs=1e-5)
    assert pearson_loss(x, 2 * x + 1).abs().item() < 1e-5


def test_fit_predict_bank_holds_training_slides_only_and_is_frozen(split, tmp_path):
    train, test = split
    predictor = st.tl.fit(train, model="spahgc", genes=GENES, model_params=SMALL)
    bank = predictor.model.bank_
    assert set(bank.slide) == set(train.obs["library_id"]) and len(bank) == train.n_obs
    assert not bank.embeddings.flags.writeable and not bank.expression.flags.writeable
    before = bank.expression.copy()
    st.tl.predict(predictor, test, key_added="pred")
    assert predictor.model.bank_ is bank and np.array_equal(bank.expression, before)
    assert not set(bank.slide) & set(test.obs["library_id"])  # the test slide never enters the bank
    refs = test.obsm["pred_references"]
    assert refs.shape == (test.n_obs, 3 * 3) and refs["slide_1"].isin(train.obs["library_id"]).all()
    assert refs["spot_1"].isin(train.obs_names).all()
    assert (refs["similarity_1"] >= refs["similarity_2"]).all()
    assert "pred_spatial_connectivities" in test.obsp
    path = tmp_path / "spahgc.safetensors"
    predictor.save(path)
    loaded = st.models.Predictor.load(path)
    np.testing.assert_array_equal(loaded.model.bank_.spot, bank.spot)
    again = st.tl.predict(loaded, test, key_added="pred", copy=True)
    np.testing.assert_allclose(again.obsm["pred"].to_numpy(), test.obsm["pred"].to_numpy(), rtol=1e-5, atol=1e-6)


def _spied_fit(adata):
    """Fit on ``adata``, recording for every graph built: the targets' slides and names, and what they retrieved."""
    from stpredict.models._inputs import build_inputs
    from stpredict.models.spahgc._model import SpahgcModel

    inputs, _ = build_inputs(adata, adata.obsm["X_handcrafted"], graphs={"spatial": {"kind": "knn", "n_neighs": 5}})
    model = SpahgcModel(**SMALL)
    seen, original = [], model._graph

    def spy(inputs_, spots, embeddings, bank, allowed):
        data, matches = original(inputs_, spots, embeddings, bank, allowed)
        retrieved = matches[0].ravel()
        seen.append((set(inputs_.library[spots]), set(inputs_.spot_names[spots]), bank, retrieved))
        return data, matches

    model._graph = spy
    layer = adata[:, GENES].layers["log1p"]
    model.fit(inputs, layer.toarray() if sp.issparse(layer) else np.asarray(layer))
    return model, seen


def test_training_slides_never_retrieve_from_themselves_nor_validation_slides(crop_norm):
    model, seen = _spied_fit(crop_norm)  # 3 slides: 1 held out for validation, 2 that retrieve from each other
    assert len(seen) == 3
    for own_slides, _, bank, retrieved in seen:
        assert not own_slides & set(bank.slide[retrieved])
        assert not set(bank.slide[retrieved]) & set(model.validation_.held_out)


def test_a_lone_training_slide_retrieves_from_its_other_spatial_blocks(split):
    train, _ = split  # 2 slides: 1 held out, so the other is split into spatial blocks
    model, seen = _spied_fit(train)
    for _, own_spots, bank, retrieved in seen:
        assert not own_spots & set(bank.spot[retrieved])


def test_training_loss_decreases_and_ablations_run(split):
    train, _ = split
    params = {**SMALL, "max_epochs": 40, "patience": 40, "lr": 3e-3}
    predictor = st.tl.fit(train, model="spahgc", genes=GENES, model_params=params)
    loss = predictor.validation.history["train_loss"].to_numpy()
    assert loss[-5:].mean() < 0.8 * loss[:5].mean()
    for ablation in ({"cnda": False}, {"cnap": False}, {"masking": "none"}, {"masking": "random"}):
        st.tl.fit(train, model="spahgc", genes=GENES, model_params={**SMALL, "max_epochs": 1, **ablation})
    with pytest.raises(ValueError, match="masking must be one of"):
        st.tl.fit(train, model="spahgc", genes=GENES, model_params={**SMALL, "masking": "edges"})
