"""Below the spot: iStar's bins, st.tl.super_resolve and st.pp.pseudo_spots on the bundled real crop."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from helpers import ISTAR_SMALL as SMALL
from scipy.spatial import cKDTree

import stpredict as st
from stpredict.pp._dense import BinGrid, DenseFeatures


@pytest.fixture
def planted_fit(istar_planted):
    predictor, _, test = istar_planted
    return predictor, test.copy()


def test_bins_average_back_to_the_spot_prediction(planted_fit):
    predictor, test = planted_fit
    spots = predictor.predict(test, copy=True, key_added="p").obsm["p"]
    bins = st.tl.super_resolve(predictor, test, min_tissue=0.0)
    lookup = pd.Series(np.arange(bins.n_obs), index=pd.MultiIndex.from_arrays([bins.obs.array_row, bins.obs.array_col]))
    grid = BinGrid(bins.uns["super_resolution"]["bin_px"], 10**6, 10**6)
    radius = test.uns["spatial"]["C4"]["scalefactors"]["spot_diameter_fullres"] / 2
    for i, disc in enumerate(grid.bins_in_discs(test.obsm["spatial"][:20], radius)):
        rows = lookup.loc[list(map(tuple, disc))].to_numpy()
        linear_mean = np.expm1(bins.X[rows]).mean(axis=0)
        np.testing.assert_allclose(np.log1p(linear_mean), spots.iloc[i].to_numpy(), rtol=1e-4, atol=1e-4)
    # coarser output bins are the linear mean of the model's bins inside them
    coarse = st.tl.super_resolve(predictor, test, bin_um=16, region=(800, 800, 1000, 1000), min_tissue=0.0)
    row, col = coarse.obs.array_row.iloc[0], coarse.obs.array_col.iloc[0]
    fine = [lookup[(2 * row + a, 2 * col + b)] for a in (0, 1) for b in (0, 1)]
    np.testing.assert_allclose(coarse.X[0], np.log1p(np.expm1(bins.X[fine]).mean(axis=0)), rtol=1e-4)
    assert coarse.uns["super_resolution"]["bin_um"] == 16.0


def test_super_resolved_bins_are_an_anndata_in_squidpys_layout(planted_fit):
    predictor, test = planted_fit
    before = (test.obs.copy(), set(test.uns), set(test.obsm))
    bins = st.tl.super_resolve(predictor, test, region=(800, 800, 1200, 1100))
    side = bins.uns["super_resolution"]["bin_px"]
    assert bins.uns["spatial"]["C4"]["scalefactors"]["spot_diameter_fullres"] == pytest.approx(side)
    centres = bins.obsm["spatial"]
    np.testing.assert_allclose(centres, np.column_stack([bins.obs.array_col + 0.5, bins.obs.array_row + 0.5]) * side)
    shifted = st.tl.super_resolve(predictor, test, region=(800, 800, 1200, 1100), origin=(3.0, 5.0))
    offsets = (shifted.obsm["spatial"] - [3.0, 5.0]) / side - 0.5
    np.testing.assert_allclose(offsets, np.round(offsets), atol=1e-6)  # bins anchored at the given corner
    assert (centres[:, 0] > 800 - side).all() and (centres[:, 0] < 1200 + side).all()
    assert bins.X.dtype == np.float32 and np.isfinite(bins.X).all()
    assert (bins.obs["tissue_fraction"] >= 0.5).all()
    pd.testing.assert_frame_equal(test.obs, before[0])  # the slide is never modified
    assert set(test.uns) == before[1] and set(test.obsm) == before[2]


def test_super_resolve_refuses_bad_input(planted_fit, crop_norm):
    predictor, test = planted_fit
    ridge = st.tl.fit(crop_norm[crop_norm.obs.library_id != "C4"].copy(), genes=["ERBB2"])
    with pytest.raises(ValueError, match="cannot super-resolve.*istar"):
        st.tl.super_resolve(ridge, test)
    with pytest.raises(ValueError, match="whole multiple"):
        st.tl.super_resolve(predictor, test, bin_um=4)
    with pytest.raises(ValueError, match="off the .* image of slide 'C4'"):
        st.tl.super_resolve(predictor, test, region=(90000, 90000, 91000, 91000))
    with pytest.raises(ValueError, match="x0 < x1"):
        st.tl.super_resolve(predictor, test, region=(10, 10, 5, 20))
    with pytest.raises(ValueError, match="pass library_id"):
        st.tl.super_resolve(predictor, crop_norm)
    no_image = test.copy()
    del no_image.uns["spatial"]
    with pytest.raises(KeyError, match="no image"):
        st.tl.super_resolve(predictor, no_image)
    with pytest.raises(ValueError, match="at least 4 pixels"):
        st.tl.fit(crop_norm, model="istar", genes=["ERBB2"], model_params={**SMALL, "bin_um": 2.0})


def test_planted_signal_is_lost_without_the_bins_own_pixels():
    """Bags whose bins carry only their context (a 128 µm mean) cannot place the signal inside a spot."""
    names = DenseFeatures(context_um=(128.0,)).names
    assert "nuclear_mean" in names and "nuclear_mean_ctx128um" in names
    with pytest.raises(ValueError, match="at least one bin"):
        DenseFeatures(context_um=(4.0,))


def test_pseudo_spots_sum_the_bins_inside_each_disc(tmp_path):
    bins = st.io.read_visium_hd(st.datasets.visium_hd_example(tmp_path), bin_size=8)
    spots = st.pp.pseudo_spots(bins, diameter_um=55, pitch_um=100)
    mpp = bins.uns["spatial"][spots.obs.library_id.iloc[0]]["scalefactors"]["microns_per_pixel"]
    distance = np.hypot(*(spots.obsm["spatial"][:, None] - bins.obsm["spatial"][None]).transpose(2, 0, 1))
    inside = distance <= 55 / 2 / mpp
    np.testing.assert_allclose(spots.X.toarray(), inside.astype(np.float32) @ bins.X.toarray(), rtol=1e-6)
    assert (spots.obs["n_members"].to_numpy() == inside.sum(axis=1)).all()
    assert spots.uns["spatial"][spots.obs.library_id.iloc[0]]["scalefactors"]["spot_diameter_fullres"] == pytest.approx(
        55 / mpp
    )
    assert sp.issparse(spots.uns["pseudo_spots"]["membership"])
    square = st.pp.pseudo_spots(bins, diameter_um=100, pitch_um=200, grid="square")
    assert square.n_obs < spots.n_obs
    with pytest.raises(ValueError, match="grid must be"):
        st.pp.pseudo_spots(bins, grid="triangle")


def test_cells_get_the_mean_of_the_bins_under_their_nucleus(planted_fit):
    predictor, test = planted_fit
    region = (800, 800, 1200, 1100)
    cells = st.tl.super_resolve(predictor, test, cells=True, region=region)
    assert cells.n_obs > 50 and cells.uns["super_resolution"]["cells"]
    centres, outlines = cells.obsm["spatial"], cells.obsm["outline"]
    assert ((centres >= region[:2]) & (centres < region[2:])).all()
    low, high = outlines.min(axis=1), outlines.max(axis=1)
    assert ((centres >= low) & (centres <= high)).all()  # each outline surrounds its centroid
    assert (cells.obs["area_um2"] > 5).all()
    bins = st.tl.super_resolve(predictor, test, region=(700, 700, 1300, 1200), min_tissue=0.0)
    linear = np.expm1(bins.X)
    side = bins.uns["super_resolution"]["bin_px"]
    for i in range(0, cells.n_obs, 10):  # a nucleus' value lies within the range of the bins it touches
        (c0, r0), (c1, r1) = (low[i] // side).astype(int), (high[i] // side).astype(int)
        under = bins.obs.array_row.between(r0, r1).to_numpy() & bins.obs.array_col.between(c0, c1).to_numpy()
        value = np.expm1(cells.X[i])
        assert (value >= linear[under].min(axis=0) - 1e-3).all() and (value <= linear[under].max(axis=0) + 1e-3).all()
    with pytest.raises(ValueError, match="drop bin_um"):
        st.tl.super_resolve(predictor, test, cells=True, bin_um=16)


def test_bins_and_cells_plot_and_export(planted_fit, tmp_path):
    predictor, test = planted_fit
    region = (800, 800, 1300, 1200)
    bins = st.tl.super_resolve(predictor, test, region=region)
    test = predictor.predict(test, copy=True)
    fig = st.pl.super_resolution(bins, "ERBB2", spots=test, spot_key="pred_istar", truth=bins.X[:, 0], show=False)
    assert [ax.get_title() for ax in fig.axes[:4]] == ["H&E", "spot prediction", "8 µm bins", "truth"]
    cells = st.tl.super_resolve(predictor, test, cells=True, region=region)
    st.pl.super_resolution(cells, "ERBB2", show=False, save=tmp_path / "cells.png")
    assert (tmp_path / "cells.png").stat().st_size > 10_000
    sdata = st.io.to_spatialdata(bins)
    assert len(sdata.shapes["C4_spots"]) == bins.n_obs and sdata.tables["table"].n_obs == bins.n_obs
    polygons = st.io.to_spatialdata(cells).shapes["C4_spots"]
    assert len(polygons) == cells.n_obs and (polygons.geometry.geom_type == "Polygon").all()
    mpp = cells.uns["spatial"]["C4"]["scalefactors"]["microns_per_pixel"]
    ratio = np.median(polygons.geometry.area.to_numpy() * mpp**2 / cells.obs["area_um2"].to_numpy())
    assert 0.6 < ratio < 1.4, ratio  # the outlines enclose the nuclei's segmented area
    with pytest.raises(KeyError, match="not in bins"):
        st.pl.super_resolution(bins, "NOPE", show=False)


def test_anchored_bins_average_back_to_the_anchors_spots(planted_fit, crop_norm):
    predictor, test = planted_fit
    anchor = st.tl.fit(crop_norm[crop_norm.obs.library_id != "C4"].copy(), model="ridge", genes=["ERBB2", "GNAS"])
    bins = st.tl.super_resolve(predictor, test, anchor=anchor, min_tissue=0.0)
    plain = st.tl.super_resolve(predictor, test, min_tissue=0.0)
    expected = anchor.predict(test, copy=True, key_added="a").obsm["a"].to_numpy()
    lookup = pd.Series(np.arange(bins.n_obs), index=pd.MultiIndex.from_arrays([bins.obs.array_row, bins.obs.array_col]))
    grid = BinGrid(bins.uns["super_resolution"]["bin_px"], 10**6, 10**6)
    radius = test.uns["spatial"]["C4"]["scalefactors"]["spot_diameter_fullres"] / 2
    own = predictor.predict(test, copy=True, key_added="o").obsm["o"].to_numpy()
    # the correction is carried from the spots with weights a quarter pitch wide: inside a disc its own spot's
    # dominates (legacy ST's neighbours lie 4 widths away), so the bins average to the anchor's spot closely
    for i, disc in enumerate(grid.bins_in_discs(test.obsm["spatial"][:15], radius)):
        rows = lookup.loc[list(map(tuple, disc))].to_numpy()
        averaged = np.log1p(np.expm1(bins.X[rows]).mean(axis=0))
        np.testing.assert_allclose(averaged, expected[i], atol=0.03)
        assert np.abs(averaged - expected[i]).max() < np.abs(own[i] - expected[i]).max() / 3 + 1e-3
    assert bins.uns["super_resolution"]["anchor"] == "ridge"
    # within a spot the pattern is the model's: anchored and plain bins of one spot correlate closely per gene
    rows = lookup.loc[list(map(tuple, grid.bins_in_discs(test.obsm["spatial"][:1], radius)[0]))].to_numpy()
    assert np.corrcoef(np.expm1(bins.X[rows, 0]), np.expm1(plain.X[rows, 0]))[0, 1] > 0.99
    with pytest.raises(ValueError, match="same genes"):
        st.tl.super_resolve(predictor, test, anchor=st.tl.fit(crop_norm, model="ridge", genes=["FASN"]))


def test_trains_on_visium_hd_bins_and_predicts_its_finer_bins(tmp_path):
    """Training below the spot: 16 µm Visium HD bins as the training units, 8 µm bins of another run predicted."""
    runs = {}
    for run, sizes in (("a", (16,)), ("b", (16, 8))):
        outs = st.datasets.visium_hd_example(tmp_path / run, run=run)
        for size in sizes:
            adata = st.io.read_visium_hd(outs, bin_size=size, source_image_path=outs.parent / "image.tif")
            adata.layers["counts"] = adata.X.copy()
            st.pp.normalize(adata)
            runs[run, size] = adata
    predictor = st.tl.fit(runs["a", 16], model="istar", genes=["DARK", "PALE"], model_params=SMALL)
    fine = runs["b", 8]
    (x0, y0), (x1, y1) = fine.obsm["spatial"].min(axis=0), fine.obsm["spatial"].max(axis=0)
    predicted = st.tl.super_resolve(predictor, fine, region=(x0, y0, x1, y1), min_tissue=0.0)
    assert predicted.uns["super_resolution"]["origin"] != [0.0, 0.0]  # aligned with the run's own 8 µm bins
    on_bin = cKDTree(fine.obsm["spatial"]).query(predicted.obsm["spatial"])
    assert np.median(on_bin[0]) < 0.05 * predicted.uns["super_resolution"]["bin_px"]
    measured = np.asarray(fine[:, ["DARK", "PALE"]].layers["log1p"])[on_bin[1]]
    coarse = runs["b", 16]  # the best a 16 µm answer can do: each 8 µm bin its 16 µm bin's measured value
    nearest = cKDTree(coarse.obsm["spatial"]).query(predicted.obsm["spatial"])[1]
    oracle = np.asarray(coarse[:, ["DARK", "PALE"]].layers["log1p"])[nearest]
    for i in range(2):
        model_r = np.corrcoef(measured[:, i], predicted.X[:, i])[0, 1]
        oracle_r = np.corrcoef(measured[:, i], oracle[:, i])[0, 1]
        assert model_r > oracle_r, (i, model_r, oracle_r)
