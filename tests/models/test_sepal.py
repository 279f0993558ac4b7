"""SEPAL (linear stage 1): delta targets from training spots, a frozen stage 1, the stage-2 correction."""

from __future__ import annotations

import numpy as np
import pytest

import stpredict as st

GENES = ["ERBB2", "GNAS", "FASN", "CD24", "KRT19"]


@pytest.fixture(scope="module")
def split(_crop_norm_session):
    adata = _crop_norm_session
    is_test = adata.obs["library_id"] == "C4"
    return adata[~is_test].copy(), adata[is_test].copy()


def _fit(train, **params):
    return st.tl.fit(train, model="sepal", genes=GENES, layer="log1p", model_params={"max_epochs": 5, **params})


def test_deltas_are_from_the_training_mean(split):
    train, test = split
    model = _fit(train, stage2=False).model
    expected = train[:, GENES].layers["log1p"].mean(axis=0)
    np.testing.assert_allclose(model.scale_out_.mean.numpy(), expected, rtol=1e-5)
    assert not _fit(train, stage2=False, deltas=False).model.scale_out_.mean.numpy().any()  # the ablation


def test_stage_one_is_frozen_during_stage_two(split):
    train, _ = split
    local = _fit(train, stage2=False).model.net_.head.state_dict()
    both = _fit(train).model.net_.head.state_dict()
    for name, value in local.items():
        np.testing.assert_array_equal(both[name].numpy(), value.numpy())


def test_stage_two_corrects_stage_one_with_neighbours(split):
    train, test = split
    local = _fit(train, stage2=False).predict(test, copy=True).obsm["pred_sepal"].to_numpy()
    spatial = _fit(train, n_hops=2).predict(test, copy=True).obsm["pred_sepal"].to_numpy()
    assert not np.allclose(local, spatial)
    assert "pred_sepal_grid_connectivities" in _fit(train).predict(test, copy=True).obsp
    with pytest.raises(ValueError, match="positions must be one of"):
        _fit(train, positions="multiply")
