"""Out-of-fold predictions (the ensemble's weights, conformal calibration) never see the spots they predict."""

from __future__ import annotations

import numpy as np
import pytest

from stpredict.models import ModelInputs
from stpredict.models._crossfit import group_folds, out_of_fold


def _inputs(n_slides: int = 5, per_slide: int = 6) -> tuple[ModelInputs, np.ndarray]:
    n = n_slides * per_slide
    library = np.repeat([f"s{i}" for i in range(n_slides)], per_slide).astype(object)
    inputs = ModelInputs(np.arange(n, dtype=np.float32)[:, None], np.zeros((n, 2)), library, library.copy())
    return inputs, library


@pytest.mark.parametrize("n_folds", [2, 3, 5])
def test_folds_are_whole_groups_and_each_spot_is_predicted_by_a_fit_without_its_fold(n_folds):
    inputs, library = _inputs()
    targets = np.arange(inputs.n_spots, dtype=float)[:, None] * np.ones((1, 2))  # each spot's target names it
    folds = group_folds(library, n_folds)
    assert np.sum(folds, axis=0).tolist() == [1] * inputs.n_spots  # every spot in exactly one fold
    for fold in folds:
        assert not set(library[fold]) & set(library[~fold])  # a slide is never split
    seen = []

    def fit_predict(train, train_targets, held):
        seen.append(set(train_targets[:, 0].astype(int)))
        np.testing.assert_array_equal(train.features[:, 0], train_targets[:, 0])  # inputs and targets aligned
        # "predict" each held spot as the training spot nearest to it, so a leak would show as an exact hit
        nearest = np.abs(held.features[:, 0][:, None] - train.features[:, 0][None]).argmin(axis=1)
        return [train_targets[nearest], np.zeros((held.n_spots, 2))]

    predictions = out_of_fold(fit_predict, inputs, targets, folds, "test")
    assert len(predictions) == 2 and len(seen) == len(folds)
    for fold, trained_on in zip(folds, seen, strict=True):
        held = set(np.flatnonzero(fold))
        assert not held & trained_on and trained_on == set(np.flatnonzero(~fold))
    assert (predictions[0][:, 0] != targets[:, 0]).all()  # no spot predicted from its own target


def test_spots_in_no_fold_stay_missing():
    inputs, library = _inputs()
    fold = library == "s0"
    out = out_of_fold(lambda t, y, h: [np.ones((h.n_spots, 1))], inputs, np.zeros((inputs.n_spots, 1)), [fold], "t")
    assert np.isfinite(out[0][fold]).all() and np.isnan(out[0][~fold]).all()
