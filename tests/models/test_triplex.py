"""TRIPLEX as a model: per-slide batches sharing the slide's global view, grid cells, the fusion loss in training."""

from __future__ import annotations

import numpy as np
import pytest

import stpredict as st
from stpredict.models import ModelInputs
from stpredict.models._inputs import build_inputs
from stpredict.models.triplex._model import TriplexModel, grid_cells

GENES = ["ERBB2", "GNAS", "FASN", "CD24", "KRT19"]
SMALL = {"dim": 16, "heads": 2, "target_input_size": 32, "tile_size": 64}


@pytest.fixture(scope="module")
def split(_crop_norm_session):
    adata = _crop_norm_session
    is_test = adata.obs["library_id"] == "C4"
    return adata[~is_test].copy(), adata[is_test].copy()


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


def test_batches_come_from_one_slide_with_its_whole_global_view(crop_norm):
    inputs, _ = build_inputs(crop_norm, crop_norm.obsm["X_handcrafted"], needs_grid=True, needs_images=True)
    model = TriplexModel(batch_size=16, **SMALL)
    views = model._views(inputs)
    items = model._items(inputs, views, np.arange(inputs.n_spots), shuffle_seed=0)
    seen = np.concatenate([item["ids"].numpy() for item in items])
    assert sorted(seen.tolist()) == list(range(inputs.n_spots))
    for item in items:
        ids = item["ids"].numpy()
        slide = inputs.library[ids[0]]
        members = np.flatnonzero(inputs.library == slide)
        assert (inputs.library[ids] == slide).all() and len(ids) <= 16
        np.testing.assert_array_equal(members[item["index"].numpy()], ids)  # index points at the batch spots
        assert item["spots"].shape[0] == len(members) and item["cells"].shape == (len(members), 2)


def test_training_loss_decreases_and_views_are_fused(split):
    train, test = split
    params = {**SMALL, "max_epochs": 15, "patience": 15, "lr": 1e-3}
    predictor = st.tl.fit(train, model="triplex", genes=GENES, model_params=params)
    loss = predictor.validation.history["train_loss"].to_numpy()
    assert loss[-3:].mean() < 0.7 * loss[:3].mean()
    with pytest.raises(ValueError, match="dim .* divisible by heads"):
        st.tl.fit(train, model="triplex", genes=GENES, model_params={**SMALL, "heads": 3})
