"""Visium HD: Space Ranger's binned outputs read at 8/16 µm (and aggregated from 2 µm), trained on, predicted."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import stpredict as st
from stpredict.datasets._visium_hd_example import write_visium_hd


@pytest.fixture(scope="module")
def hd_runs(tmp_path_factory):
    """Two Visium HD runs over different parts of the same H&E crop (so different tissue under the bins)."""
    root = tmp_path_factory.mktemp("visium_hd")
    a = write_visium_hd(root / "run_a", top_um=300.0, left_um=200.0)
    b = write_visium_hd(root / "run_b", top_um=900.0, left_um=1100.0, seed=1)
    return a, b


def _read(outs, bin_size, image=None, **kwargs):
    image = image or outs.parent / "image.tif"
    with pytest.warns(st.StPredictWarning, match="occur more than once"):
        return st.io.read_visium_hd(outs, bin_size=bin_size, source_image_path=image, **kwargs)


def test_reads_bins_with_their_true_size_and_position(hd_runs):
    outs, _ = hd_runs
    adata = _read(outs, 16)
    assert adata.n_obs == 20 * 20 - 1  # the corner bin is off tissue
    assert adata.var_names[:5].tolist() == ["DARK", "PALE", "FLAT", "DUP", "DUP-1"]
    slide = adata.uns["spatial"]["run_a"]
    mpp = slide["scalefactors"]["microns_per_pixel"]
    assert slide["scalefactors"]["spot_diameter_fullres"] == pytest.approx(16 / mpp)
    assert slide["metadata"]["spot_shape"] == "square" and slide["metadata"]["grid"] == "square"
    # bin (r, c) is centred (c + 0.5) * 16 µm right of and (r + 0.5) * 16 µm below the covered area's corner
    first = adata.obs.query("array_row == 3 and array_col == 5").index[0]
    x, y = adata[first].obsm["spatial"][0]
    assert x == pytest.approx((200 + 5.5 * 16) / mpp) and y == pytest.approx((300 + 3.5 * 16) / mpp)
    assert (adata.layers["counts"] != adata.X).nnz == 0
    every_bin = _read(outs, 8, counts_file="raw_feature_bc_matrix.h5", in_tissue_only=False)
    assert every_bin.n_obs == 1600
    assert _read(outs, 8, counts_file="raw_feature_bc_matrix.h5").n_obs == 1599


def test_aggregating_2um_bins_equals_space_rangers_16um_bins(hd_runs):
    outs, _ = hd_runs
    direct = _read(outs, 16)
    built = _read(outs / "binned_outputs" / "square_002um", 16, image=outs.parent / "image.tif")
    common = direct.obs_names.intersection(built.obs_names)
    assert len(common) == direct.n_obs
    assert (direct[common].X != built[common].X).nnz == 0
    np.testing.assert_allclose(direct[common].obsm["spatial"], built[common].obsm["spatial"])
    coarse = _read(outs, 32)  # not written by Space Ranger: built from the 16 µm bins
    assert coarse.n_obs == 100 and coarse.X.sum() == pytest.approx(direct.X.sum())
    assert coarse.uns["spatial"]["run_a"]["scalefactors"]["bin_size_um"] == 32


def test_bad_paths_and_sizes_say_what_to_do(hd_runs, tmp_path):
    outs, _ = hd_runs
    with pytest.raises(ValueError, match="multiple of 2"):
        st.io.read_visium_hd(outs, bin_size=5)
    with pytest.raises(FileNotFoundError, match="binned_outputs"):
        st.io.read_visium_hd(tmp_path, bin_size=8)
    with pytest.raises(ValueError, match="not a multiple of 16"):
        st.io.read_visium_hd(outs / "binned_outputs" / "square_016um", bin_size=24)
    broken = tmp_path / "outs"
    shutil.copytree(outs, broken)
    (broken / "binned_outputs" / "square_008um" / "spatial" / "tissue_positions.parquet").unlink()
    with pytest.raises(FileNotFoundError, match="tissue_positions.parquet"):
        st.io.read_visium_hd(broken, bin_size=8)


def test_train_on_one_run_and_predict_another_at_16um(hd_runs, tmp_path):
    train, test = (_read(outs, 16) for outs in hd_runs)
    for adata in (train, test):
        st.pp.normalize(adata)
    options = {"size": 32, "unit": "um", "show_progress_bar": False}
    st.pp.image_features(train, **options)
    predictor = st.tl.fit(train, genes=["DARK", "PALE", "FLAT"], use_rep="X_handcrafted")
    predictor.predict(test)  # features of the other run computed from its full-resolution TIFF
    scores = st.tl.evaluate(test, layer_pred="pred_ridge", inplace=False).set_index("gene")["pearson"]
    assert scores["DARK"] > 0.4 and scores["PALE"] > 0.4, scores  # the image drives them
    assert abs(scores["FLAT"]) < 0.3, scores
    sdata = st.io.to_spatialdata(test, key="pred_ridge")
    square = sdata.shapes["run_b_spots"].geometry.iloc[0]
    side = 16 / test.uns["spatial"]["run_b"]["scalefactors"]["microns_per_pixel"]
    assert square.area == pytest.approx(side**2)  # a square bin, not a circle
    fig = st.pl.prediction(test, ["DARK"], layer_pred="pred_ridge", show=False)
    assert fig.axes[0].collections[0].get_paths()[0].vertices.shape[0] == 5  # square markers


def test_square_bins_from_spatialdata_keep_their_size_and_shape(hd_runs):
    """spatialdata_io.visium_hd writes bins as square polygons: their side, not a circle's diameter (13 % off)."""
    outs, _ = hd_runs
    adata = _read(outs, 16)
    mpp = adata.uns["spatial"]["run_a"]["scalefactors"]["microns_per_pixel"]
    sdata = st.io.to_spatialdata(adata)
    back = st.io.read_spatialdata(sdata, spot_diameter_um=16, source_image_path=outs.parent / "image.tif")
    slide = back.uns["spatial"]["run_a_spots"]
    assert slide["metadata"]["spot_shape"] == "square" and slide["metadata"]["grid"] == "square"
    assert slide["scalefactors"]["spot_diameter_fullres"] == pytest.approx(16 / mpp, rel=1e-6)
    assert slide["scalefactors"]["microns_per_pixel"] == pytest.approx(mpp, rel=1e-6)
    np.testing.assert_allclose(back.obsm["spatial"], adata.obsm["spatial"], atol=1e-6)
