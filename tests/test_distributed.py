"""Slide-parallel feature extraction and smoothing on a dask.distributed LocalCluster (two worker processes)."""

from __future__ import annotations

import numpy as np
import pytest

import stpredict as st

distributed = pytest.importorskip("distributed")


def test_client_true_without_a_running_client_is_a_clear_error(crop):  # runs before the cluster starts
    with pytest.raises(ValueError, match="no dask.distributed client is running"):
        st.pp.image_features(crop[:3].copy(), client=True)


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with distributed.Client(cluster) as client:
        yield client
    cluster.close()


def test_features_and_smoothing_on_a_cluster_equal_serial(client, crop):
    serial = crop.copy()
    st.pp.image_features(serial, show_progress_bar=False)
    # images are read by the workers from their paths: the hires copies are not shipped
    from stpredict._distributed import slide_parts

    assert all(
        "images" not in part.uns["spatial"][lib]
        for (_, part), lib in zip(slide_parts(crop), ["C2", "C3", "C4"], strict=True)
    )
    st.pp.image_features(crop, client=client, show_progress_bar=False)
    np.testing.assert_array_equal(crop.obsm["X_handcrafted"], serial.obsm["X_handcrafted"])
    assert (
        crop.uns["stpredict_features"]["X_handcrafted"]["feature_names"]
        == serial.uns["stpredict_features"]["X_handcrafted"]["feature_names"]
    )

    st.pp.normalize(serial)
    st.pp.normalize(crop)
    for method in ("spcs", "adaptive_median"):
        st.pp.smooth(serial, method=method, show_progress_bar=False)
        st.pp.smooth(crop, method=method, client=client)
        np.testing.assert_array_equal(crop.layers[f"log1p_{method}"], serial.layers[f"log1p_{method}"])
    np.testing.assert_array_equal(
        crop.layers["log1p_adaptive_median_imputed"], serial.layers["log1p_adaptive_median_imputed"]
    )


def test_neighbour_features_on_a_cluster_equal_serial(client, crop):
    serial = st.pp.neighbour_features(crop, tile_size=64, show_progress_bar=False, copy=True)
    parallel = st.pp.neighbour_features(crop, tile_size=64, client=client, copy=True)
    for key in ("X_handcrafted_neighbours", "X_handcrafted_neighbours_mask"):
        np.testing.assert_array_equal(parallel.obsm[key], serial.obsm[key])
    assert np.abs(parallel.obsm["X_handcrafted_neighbours"]).sum() > 0 and parallel.n_obs == crop.n_obs


def test_cluster_workers_fill_the_feature_cache_that_a_serial_run_then_serves(client, crop, tmp_path, monkeypatch):
    parallel = crop.copy()
    st.pp.image_features(parallel, client=client, cache_dir=tmp_path, show_progress_bar=False)
    from stpredict.pp import _features

    def no_extractor(*args, **kwargs):
        raise AssertionError("the cache written by the workers should serve every spot")

    monkeypatch.setattr(_features, "_extractor", no_extractor)
    served = crop.copy()
    st.pp.image_features(served, cache_dir=tmp_path, show_progress_bar=False)
    np.testing.assert_array_equal(served.obsm["X_handcrafted"], parallel.obsm["X_handcrafted"])
