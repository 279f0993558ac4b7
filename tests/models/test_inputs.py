"""What models see of a slide: stored neighbour views are reused only when their recipe matches."""

from __future__ import annotations

import numpy as np

import stpredict as st
from stpredict.models._inputs import build_inputs
from stpredict.models.triplex._model import neighbour_views


def test_neighbour_views_are_reused_when_stored_with_the_same_recipe(crop):
    adata = crop[crop.obs["library_id"] == "C4"][:6].copy()
    computed, inside = neighbour_views(build_inputs(adata, np.zeros((adata.n_obs, 1)), needs_images=True)[0].images,
                                       tile_size=64)  # fmt: skip
    st.pp.neighbour_features(adata, tile_size=64, show_progress_bar=False)
    np.testing.assert_array_equal(computed, adata.obsm["X_handcrafted_neighbours"])
    np.testing.assert_array_equal(inside, adata.obsm["X_handcrafted_neighbours_mask"])
    assert inside[:, 12].all()  # the spot's own tile, in the middle, is always in the image

    adata.obsm["X_handcrafted_neighbours"][:] = 7.0  # a stored view is read, not recomputed
    images = build_inputs(adata, np.zeros((adata.n_obs, 1)), needs_images=True)[0].images
    stored, _ = neighbour_views(images, tile_size=64)
    assert (stored == 7.0).all()
    other, _ = neighbour_views(images, tile_size=32)  # another recipe: computed from the pixels
    assert other.shape == computed.shape and not (other == 7.0).all()
    half = neighbour_views(images.subset(np.arange(adata.n_obs) < 3), tile_size=64)[0]
    assert half.shape[0] == 3 and (half == 7.0).all()


def test_only_recorded_neighbour_views_travel_with_the_spots(crop):
    adata = crop[:4].copy()
    adata.obsm["X_from_expression"] = np.ones((adata.n_obs, 3))  # e.g. a PCA of expression: must not travel
    st.pp.neighbour_features(adata, tile_size=32, show_progress_bar=False)
    spots = build_inputs(adata, np.zeros((adata.n_obs, 1)), needs_images=True)[0].images._spots
    assert set(spots.obsm) == {"spatial", "X_handcrafted_neighbours", "X_handcrafted_neighbours_mask"}
    assert spots.n_vars == 0 and not spots.layers
