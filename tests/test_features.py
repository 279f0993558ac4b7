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


def test_patches_at_every_edge_equal_a_padded_image_window():
    # reference: pad the whole image white, then slice; covers windows clipped on each side and corner
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, size=(23, 37, 3), dtype=np.uint8)
    side = 11
    pad = 2 * side
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), constant_values=255)
    centres = np.column_stack([rng.uniform(-12, 49, 300), rng.uniform(-12, 35, 300)])
    patches = cut_patches(image, centres, side)
    for (x, y), patch in zip(centres, patches, strict=True):
        x0, y0 = int(np.rint(x)) - side // 2 + pad, int(np.rint(y)) - side // 2 + pad
        np.testing.assert_array_equal(patch, padded[y0 : y0 + side, x0 : x0 + side])


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
        st.pp.image_features(crop, method="uni2")


def _synthetic_nuclei(centres, radius_px, side=224):
    """Haematoxylin-blue discs on an eosin-pink background."""
    yy, xx = np.mgrid[:side, :side]
    image = np.empty((side, side, 3), dtype=np.uint8)
    image[:] = (235, 180, 210)
    for cy, cx in centres:
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius_px**2] = (60, 50, 140)
    return image


def test_nuclei_segmentation_counts_and_measures_synthetic_discs():
    mpp = 0.5
    spacing, radius = 28, 8  # px
    centres = [(y, x) for y in range(20, 210, spacing) for x in range(20, 210, spacing)]
    patch = _synthetic_nuclei(centres, radius)
    features = st.pp.nuclei_features(patch[None], mpp)[0]
    col = {n: i for i, n in enumerate(st.pp.nuclei_feature_names())}
    assert features[col["nuclei_count"]] == len(centres)
    assert features[col["nuclei_area"]] == pytest.approx(np.pi * (radius * mpp) ** 2, rel=0.1)
    assert features[col["nuclei_circularity"]] == pytest.approx(1.0, abs=0.15)
    assert features[col["nuclei_eccentricity"]] < 0.3
    assert features[col["nuclei_delaunay_min_distance"]] == pytest.approx(spacing * mpp, rel=0.05)
    assert features[col["nuclei_delaunay_max_distance"]] == pytest.approx(spacing * mpp * np.sqrt(2), rel=0.2)
    # touching nuclei are split by the watershed
    pair = _synthetic_nuclei([(100, 100), (100, 115)], radius)
    assert st.pp.nuclei_features(pair[None], mpp)[0, col["nuclei_count"]] == 2
    empty = np.full((1, 224, 224, 3), 240, dtype=np.uint8)
    assert st.pp.nuclei_features(empty, mpp)[0, col["nuclei_count"]] == 0


def test_nuclei_counts_plausible_on_real_her2st(crop):
    sub = crop[::7].copy()
    st.pp.image_features(sub, method="nuclei", show_progress_bar=False)
    names = st.pp.nuclei_feature_names()
    counts = sub.obsm["X_nuclei"][:, names.index("nuclei_count")]
    area = sub.obsm["X_nuclei"][:, names.index("nuclei_area")]
    # a 224 px patch at 0.69 µm/px covers ~154 x 154 µm of breast tumour/stroma: tens to ~200 nuclei
    assert 20 < np.median(counts) < 250 and counts.min() > 0
    assert 20 < np.median(area) < 120  # µm², typical epithelial/stromal nuclei


def test_neighbour_view_is_centred_on_the_spot(crop):
    sub = crop[crop.obs["library_id"] == "C2"].copy()
    patches = st.pp.extract_patches(sub, size=64)
    seen = 0
    for _, positions, tiles, inside in st.pp.iter_neighbour_views(sub, tile_size=64, batch_size=8):
        np.testing.assert_array_equal(tiles[:, 12], patches[positions])  # middle tile = the spot's patch
        # the tile right of the centre starts where the centre tile ends
        image = np.asarray(Image.open(sub.uns["spatial"]["C2"]["metadata"]["source_image_path"]).convert("RGB"))
        x, y = np.rint(sub.obsm["spatial"][positions[0]]).astype(int)
        if y + 32 <= image.shape[0] and x + 96 <= image.shape[1]:
            np.testing.assert_array_equal(tiles[0, 13], image[y - 32 : y + 32, x + 32 : x + 96])
        assert inside[:, 12].all()
        seen += len(positions)
    assert seen == sub.n_obs


def test_neighbour_tiles_outside_the_image_are_masked():
    image = np.zeros((300, 300, 3), dtype=np.uint8)
    tiles, inside = st.pp.neighbour_tiles(image, np.array([[10.0, 10.0]]), tile=100)
    grid = inside[0].reshape(5, 5)
    # centre tile covers [-40, 60): inside; two tiles up/left are entirely outside
    assert grid[2, 2] and grid[3, 3] and not grid[0, 2] and not grid[2, 0] and not grid[1, 1]
    assert (tiles[0, 0] == 255).all()
    assert grid.sum() == 3 * 3  # rows/cols 2..4 overlap the 300 px image


def test_spot_patch_dataset_with_dataloader(crop, tmp_path):
    import torch

    sub = crop[:10].copy()
    targets = np.arange(20, dtype=np.float32).reshape(10, 2)
    data = st.pp.SpotPatchDataset(sub, targets, size=32, cache_path=tmp_path / "p.npy")
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    patches, y = next(iter(loader))
    assert patches.shape == (4, 3, 32, 32) and patches.max() <= 1.0
    np.testing.assert_array_equal(y.numpy(), targets[:4])
    raw = st.pp.extract_patches(sub[:1], size=32)[0]
    np.testing.assert_allclose(patches[0].permute(1, 2, 0).numpy() * 255, raw, atol=1e-3)
    with pytest.raises(ValueError, match="rows"):
        st.pp.SpotPatchDataset(sub, targets[:3])


def test_nuclei_features_parallel_equal_serial(crop):
    patches = st.pp.extract_patches(crop[:10], size=128)
    np.testing.assert_array_equal(st.pp.nuclei_features(patches, 0.69, n_jobs=2), st.pp.nuclei_features(patches, 0.69))


def test_neighbour_features_centre_equals_spot_features_and_masks(crop):
    sub = crop[crop.obs["library_id"] == "C2"][:6].copy()
    st.pp.neighbour_features(sub, tile_size=64, show_progress_bar=False)
    views = sub.obsm["X_handcrafted_neighbours"]
    mask = sub.obsm["X_handcrafted_neighbours_mask"]
    assert views.shape == (6, 25, len(st.pp.handcrafted_feature_names()))
    own = st.pp.image_features(sub, size=64, copy=True, show_progress_bar=False).obsm["X_handcrafted"]
    np.testing.assert_allclose(views[:, 12], own, rtol=1e-5)
    assert mask[:, 12].all()
    # the crop is only ~2,700 px wide: 5 x 700 px regions reach past it, and those tiles are masked and zero
    st.pp.neighbour_features(sub, tile_size=700, key_added="wide", show_progress_bar=False)
    wide, wide_mask = sub.obsm["wide"], sub.obsm["wide_mask"]
    assert (~wide_mask).any() and wide_mask[:, 12].all()
    assert (wide[~wide_mask] == 0).all() and (np.abs(wide[wide_mask]).sum(axis=1) > 0).all()
