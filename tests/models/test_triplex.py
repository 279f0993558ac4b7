"""TRIPLEX as a model: per-slide batches sharing the slide's global view, grid cells, the fusion loss in training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import sparse

import stpredict as st
from stpredict.models import ModelInputs
from stpredict.models._inputs import build_inputs
from stpredict.models.triplex._model import TriplexModel, grid_cells

GENES = ["ERBB2", "GNAS", "FASN", "CD24", "KRT19"]
SMALL = {"dim": 16, "heads": 2, "target_input_size": 32, "tile_size": 64, "target_pretrain_epochs": 1}


def test_grid_cells_start_at_zero_and_halve_visium_columns():
    rows = np.array([0, 0, 1, 1, 5, 5])
    cols = np.array([0, 2, 1, 3, 10, 11])  # slide a: hex (row + col even); slide b: square
    inputs = ModelInputs(
        features=np.zeros((6, 1), np.float32),
        spatial=np.zeros((6, 2)),
        library=np.array(["a"] * 4 + ["b"] * 2, dtype=object),
        patient=np.full(6, None),
        array_row=rows,
        array_col=cols,
    )
    np.testing.assert_array_equal(grid_cells(inputs), [[0, 0], [0, 1], [1, 0], [1, 1], [0, 0], [0, 1]])


def test_batches_come_from_one_slide_with_its_whole_global_view(crop_views):
    inputs, _ = build_inputs(crop_views, crop_views.obsm["X_handcrafted"], needs_grid=True, needs_images=True)
    model = TriplexModel(batch_size=16, **SMALL)
    model._fit_read = model._read_once(inputs)
    items = model._items(inputs, np.arange(inputs.n_spots), stage="train")  # shuffled within each slide
    assert sorted(items.order.tolist()) == list(range(inputs.n_spots))
    assert items.order.tolist() != list(range(inputs.n_spots))
    start = 0
    for item in items.batches:
        ids = items.order[start : start + len(item["index"])]
        start += len(ids)
        slide = inputs.library[ids[0]]
        members = np.flatnonzero(inputs.library == slide)
        assert (inputs.library[ids] == slide).all() and len(ids) <= 16
        np.testing.assert_array_equal(members[item["index"].numpy()], ids)  # index points at the batch spots
        assert item["spots"].shape[0] == len(members) and item["cells"].shape == (len(members), 2)


def test_training_loss_decreases_and_views_are_fused(split_views):
    train, test = split_views
    params = {**SMALL, "max_epochs": 15, "patience": 15, "lr": 1e-3}
    predictor = st.tl.fit(train, model="triplex", genes=GENES, model_params=params)
    loss = predictor.validation.history["train_loss"].to_numpy()
    assert loss[-3:].mean() < 0.8 * loss[:3].mean()
    with pytest.raises(ValueError, match="dim .* divisible by heads"):
        st.tl.fit(train, model="triplex", genes=GENES, model_params={**SMALL, "heads": 3})


def test_ablations_read_only_what_their_views_need(split_views):
    train, test = split_views
    without_global = TriplexModel(views=["target", "neighbour"], **SMALL)
    assert not without_global.reads_representation() and without_global.reads_pixels()
    only_global = TriplexModel(views=["global"], **SMALL)
    assert only_global.reads_representation() and not only_global.reads_pixels()
    params = {**SMALL, "max_epochs": 2, "views": ["target", "neighbour"]}
    predictor = st.tl.fit(train, model="triplex", genes=GENES, model_params=params)
    assert predictor.use_rep is None
    out = st.tl.predict(predictor, test, key_added="pred", copy=True)
    assert np.isfinite(np.asarray(out.obsm["pred"], dtype=float)).all()
    with pytest.raises(ValueError, match="fusion must be one of"):
        TriplexModel(fusion="attention_pooling")
    with pytest.raises(ValueError, match="target_checkpoint"):
        TriplexModel(views=["global"], target_checkpoint="x.pt")


def test_without_fusion_loss_the_view_heads_are_not_trained(crop_views):
    inputs, _ = build_inputs(crop_views, crop_views.obsm["X_handcrafted"], needs_grid=True, needs_images=True)
    layer = crop_views[:, GENES].layers["log1p"]
    targets = layer.toarray() if sparse.issparse(layer) else np.asarray(layer)
    params = {**SMALL, "max_epochs": 2, "views": ["neighbour", "global"], "dropout": 0.0}
    states = {}
    for use_fusion_loss in (True, False):
        model = TriplexModel(fusion_loss=use_fusion_loss, **params)
        model.fit(inputs, targets)
        initial = TriplexModel(fusion_loss=use_fusion_loss, **params)
        initial.n_tile_features_ = model.n_tile_features_
        initial._begin_fit(inputs, targets)  # the same seed: the weights training started from
        states[use_fusion_loss] = (model.net_.net.heads, initial.net_.net.heads)
    for use_fusion_loss, (trained, initial) in states.items():
        changed = not torch.allclose(trained["global"].weight, initial["global"].weight)
        assert changed == use_fusion_loss
        assert not torch.allclose(trained["fusion"].weight, initial["fusion"].weight)
