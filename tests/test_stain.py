"""Macenko stain normalisation: estimation, re-rendering, and its use by features and predictors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import stpredict as st


def _shifted(stain: dict) -> dict:
    """Another lab's stain: haematoxylin bluer and stronger, eosin paler."""
    matrix = np.asarray(stain["stain_matrix"])
    h, e = matrix[:, 0] + [0.15, 0.05, -0.10], matrix[:, 1] + [-0.05, 0.10, 0.05]
    matrix = np.column_stack([h / np.linalg.norm(h), e / np.linalg.norm(e)])
    return {"stain_matrix": matrix.tolist(), "max_concentrations": (np.asarray(stain["max_concentrations"]) * [0.77, 1.43]).tolist()}  # fmt: skip


@pytest.fixture(scope="module")
def shifted_c3(tmp_path_factory, _crop_norm_session):
    """C3 of the crop, and a copy whose image is re-rendered in a shifted stain."""
    c3 = _crop_norm_session[_crop_norm_session.obs["library_id"] == "C3"].copy()
    del c3.obsm["X_handcrafted"]
    image = np.asarray(Image.open(st.io.source_image_path(c3, "C3")).convert("RGB"))
    own = st.pp.estimate_stain(st.pp.extract_patches(c3, size=224))
    path = tmp_path_factory.mktemp("stain") / "C3_shifted.png"
    Image.fromarray(st.pp.normalize_stain(image, own, _shifted(own))).save(path)
    shifted = c3.copy()
    shifted.uns["spatial"]["C3"]["metadata"]["source_image_path"] = str(path)
    return c3, shifted, own


def test_normalising_a_shifted_slide_recovers_its_colours(shifted_c3):
    c3, shifted, own = shifted_c3
    original = st.pp.extract_patches(c3, size=100)
    moved = st.pp.extract_patches(shifted, size=100)
    estimated = st.pp.estimate_stain(moved)
    # the estimator finds the shifted haematoxylin vector, not the original one
    h_cos = np.dot(np.asarray(estimated["stain_matrix"])[:, 0], np.asarray(_shifted(own)["stain_matrix"])[:, 0])
    assert h_cos > 0.98
    back = st.pp.normalize_stain(moved, estimated, own)
    before, after = np.abs(moved.astype(int) - original).mean(), np.abs(back.astype(int) - original).mean()
    assert before > 8 and after < 0.4 * before


def test_features_and_predictor_use_the_training_reference(_crop_norm_session, shifted_c3):
    c3, shifted, _ = shifted_c3
    train = _crop_norm_session[_crop_norm_session.obs["library_id"] != "C3"].copy()
    reference = st.pp.stain_reference(train, n_spots=100)
    assert train.uns["stpredict_stain"]["slides"] == ["C2", "C4"]
    shift = {}
    for normalise in (False, True):
        options = {"stain_reference": reference} if normalise else {}
        a, b = (st.pp.image_features(s, show_progress_bar=False, copy=True, **options) for s in (c3, shifted))
        x, y = a.obsm["X_handcrafted"], b.obsm["X_handcrafted"]
        shift[normalise] = np.median(np.abs(x - y).mean(axis=0) / (x.std(axis=0) + 1e-9))  # in spot-to-spot SDs
    assert (
        shift[False] > 0.5 and shift[True] < 0.3 * shift[False]
    )  # colour features follow the stain, unless normalised
    # a predictor trained on normalised features records the reference and normalises new slides itself
    st.pp.image_features(train, stain_reference=reference, show_progress_bar=False)
    predictor = st.tl.fit(train, genes=["ERBB2", "IGKC"])
    assert predictor.rep_recipe["stain_reference"] == reference
    expected = st.pp.image_features(shifted, stain_reference=reference, show_progress_bar=False, copy=True)
    np.testing.assert_allclose(predictor.representation(shifted), expected.obsm["X_handcrafted"], rtol=1e-5)
    stored = shifted.copy()
    st.pp.image_features(stored, show_progress_bar=False)  # raw features stored on the slide: refused
    with pytest.raises(ValueError, match="computed differently.*stain_reference"):
        predictor.predict(stored)


def test_glass_only_patches_give_a_clear_error():
    with pytest.raises(ValueError, match="Too little stained tissue"):
        st.pp.estimate_stain(np.full((4, 32, 32, 3), 245, np.uint8))
