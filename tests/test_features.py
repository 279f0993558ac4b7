from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import stpredict as st
from stpredict.pp._patches import cut_patches


def test_patch_pixels_match_image_at_spot(crop):
    image = np.asarray(Image.open(crop.uns["spatial"]["C3"]["metadata"]["source_image_path"]).convert("RGB"))
    sub = crop[crop.obs["library_id"] == "C3"]
    patches = st.pp.extract_patches(sub, size=64)
    for i in [0, 10, 40]:
        x, y = np.rint(sub.obsm["spatial"][i]).astype(int)
        np.testing.assert_array_equal(patches[i], image[y - 32 : y + 32, x - 32 : x + 32])
        # not transposed: the patch equals the (row=y, col=x) window, not the (row=x, col=y) one
        assert not np.array_equal(patches[i], image[x - 32 : x + 32, y - 32 : y + 32])


def test_patch_centre_is_spot_centre_on_synthetic_image():
    image = np.full((50, 80, 3), 255, dtype=np.uint8)
    image[10, 60] = [255, 0, 0]  # one red pixel at x=60, y=10
    patch = cut_patches(image, np.array([[60.0, 10.0]]), 9)[0]
    assert patch[4, 4].tolist() == [255, 0, 0] and (patch.sum(axis=2) == 765).sum() == 80


def test_edge_spots_are_padded_white():
    image = np.zeros((20, 30, 3), dtype=np.uint8)
    patch = cut_patches(image, np.array([[0.0, 0.0]]), 10)[0]
    assert (patch[:5, :] == 255).all() and (patch[:, :5] == 255).all()
    assert (patch[5:, 5:] == 0).all()
    far = cut_patches(image, np.array([[500.0, 500.0]]), 10)[0]
    assert (far == 255).all()


def test_patch_size_in_microns(crop):
    mpp = crop.uns["spatial"]["C2"]["scalefactors"]["microns_per_pixel"]
    patches = st.pp.extract_patches(crop[:2], size=112, unit="um")
    assert patches.shape[1] == round(112 / mpp)


def test_handcrafted_features_are_meaningful(crop):
    names = st.pp.handcrafted_feature_names()
    st.pp.image_features(crop, show_progress_bar=False)
    features = crop.obsm["X_handcrafted"]
    assert features.shape == (crop.n_obs, len(names)) and np.isfinite(features).all()
    # blank glass vs real tissue: tissue fraction and haematoxylin differ in the expected direction
    white = st.pp.handcrafted_features(np.full((1, 224, 224, 3), 250, dtype=np.uint8))[0]
    tissue = features.mean(axis=0)
    col = {n: i for i, n in enumerate(names)}
    assert white[col["tissue_fraction"]] == 0 and tissue[col["tissue_fraction"]] > 0.5
    assert tissue[col["hed_H_mean"]] > white[col["hed_H_mean"]]
    assert tissue[col["rgb_R_mean"]] < white[col["rgb_R_mean"]]
    # deterministic
    again = st.pp.image_features(crop, copy=True, show_progress_bar=False).obsm["X_handcrafted"]
    np.testing.assert_array_equal(again, features)
    assert crop.uns["stpredict_features"]["X_handcrafted"]["feature_names"] == names


def test_image_features_unknown_method(crop):
    with pytest.raises(ValueError, match="available"):
        st.pp.image_features(crop, method="uni")
