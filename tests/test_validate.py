"""Which slide each spot belongs to, for AnnData from stpredict's readers and from scanpy/squidpy."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from helpers import shared

import stpredict as st


def _single_slide_without_column(crop, library_id="C3"):
    one = crop[crop.obs["library_id"] == library_id].copy()
    del one.obs["library_id"]
    one.uns["spatial"] = {library_id: one.uns["spatial"][library_id]}
    return one


def test_single_slide_without_library_column_uses_the_uns_library(crop):
    # scanpy's read_visium and squidpy's datasets keep the library only in uns['spatial'] (one key)
    one = _single_slide_without_column(crop)
    st.pp.image_features(one, show_progress_bar=False)
    reference = crop[crop.obs["library_id"] == "C3"].copy()
    st.pp.image_features(reference, show_progress_bar=False)
    np.testing.assert_array_equal(one.obsm["X_handcrafted"], reference.obsm["X_handcrafted"])
    assert "library_id" not in one.obs  # inferred, not written into the user's AnnData

    train = crop[crop.obs["library_id"] != "C3"].copy()
    st.pp.normalize(train)
    st.tl.fit_predict(train, one, genes=["ERBB2", "GNAS"])
    assert one.obsm["pred_ridge"].shape == (one.n_obs, 2)


def test_missing_library_column_with_several_slides_is_a_clear_error(crop):
    del crop.obs["library_id"]
    with pytest.raises(KeyError, match=r"no column 'library_id'.*3 libraries"):
        st.pp.image_features(crop, show_progress_bar=False)


def test_missing_library_values_are_a_clear_error(crop):
    crop.obs["library_id"] = crop.obs["library_id"].astype(object)
    crop.obs.iloc[5, crop.obs.columns.get_loc("library_id")] = None
    with pytest.raises(ValueError, match=r"obs\['library_id'\] has 1 missing value"):
        st.pp.image_features(crop, show_progress_bar=False)


def test_squidpy_visium_anndata_works_as_is():
    # squidpy's own test data: a Visium crop with only a 'hires' image, no obs['library_id']
    adata = ad.read_h5ad(shared("formats", "squidpy_mouse_brain_crop", "test_data.h5ad"))
    # squidpy cropped the hires image to 100 px but kept all spot coordinates: most spots lie outside it
    with (
        pytest.warns(UserWarning, match="Full-resolution image of slide .V1_Adult_Mouse_Brain. not recorded"),
        pytest.warns(st.StPredictWarning, match="41 of 49 spots .* lie outside its image"),
    ):
        st.pp.image_features(adata, show_progress_bar=False)
    features = adata.obsm["X_handcrafted"]
    assert features.shape == (49, 44) and np.isfinite(features).all()
    assert features.std(axis=0).max() > 0  # spots over different tissue get different features
