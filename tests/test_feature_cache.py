"""The on-disk feature cache: reused per slide and recipe, resumes an interrupted run, never serves another."""

from __future__ import annotations

import numpy as np
import pytest

import stpredict as st
from stpredict.pp import _features


@pytest.fixture
def counted(monkeypatch):
    """Count the spots whose patches reach the extractor (what the cache saves)."""
    seen = {"spots": 0, "fail_after": None}
    original = _features._extractor

    def extractor(*args, **kwargs):
        extract, names, resolved = original(*args, **kwargs)

        def counting(patches, mpp, n_jobs):
            if seen["fail_after"] is not None and seen["spots"] >= seen["fail_after"]:
                raise KeyboardInterrupt  # the user stops a long run
            seen["spots"] += len(patches)
            return extract(patches, mpp, n_jobs)

        return counting, names, resolved

    monkeypatch.setattr(_features, "_extractor", extractor)
    return seen


def test_cached_features_are_reused_exactly(crop, tmp_path, counted):
    first = crop.copy()
    st.pp.image_features(first, cache_dir=tmp_path, show_progress_bar=False)
    assert counted["spots"] == crop.n_obs
    again = crop.copy()
    st.pp.image_features(again, cache_dir=tmp_path, show_progress_bar=False)
    assert counted["spots"] == crop.n_obs  # nothing recomputed
    np.testing.assert_array_equal(again.obsm["X_handcrafted"], first.obsm["X_handcrafted"])
    assert again.uns["stpredict_features"]["X_handcrafted"]["feature_names"] == first.uns["stpredict_features"][
        "X_handcrafted"]["feature_names"]  # fmt: skip


def test_an_interrupted_run_resumes_where_it_stopped(crop, tmp_path, counted):
    reference = st.pp.image_features(crop, show_progress_bar=False, copy=True).obsm["X_handcrafted"]
    counted["spots"], counted["fail_after"] = 0, 100
    with pytest.raises(KeyboardInterrupt):
        st.pp.image_features(crop.copy(), cache_dir=tmp_path, batch_size=50, show_progress_bar=False)
    done_before = counted["spots"]
    assert 0 < done_before < crop.n_obs
    counted["fail_after"] = None
    resumed = crop.copy()
    st.pp.image_features(resumed, cache_dir=tmp_path, batch_size=50, show_progress_bar=False)
    assert counted["spots"] == crop.n_obs  # only the rest was computed
    np.testing.assert_allclose(resumed.obsm["X_handcrafted"], reference, rtol=1e-6)


def test_never_served_for_another_recipe_or_slide(crop, tmp_path, counted):
    st.pp.image_features(crop.copy(), cache_dir=tmp_path, show_progress_bar=False)
    st.pp.image_features(crop.copy(), size=112, cache_dir=tmp_path, show_progress_bar=False)
    assert counted["spots"] == 2 * crop.n_obs  # another patch size: another recipe
    moved = crop.copy()
    moved.obsm["spatial"] = moved.obsm["spatial"] + 30.0  # the same slide names, spots elsewhere
    st.pp.image_features(moved, cache_dir=tmp_path, show_progress_bar=False)
    assert counted["spots"] == 3 * crop.n_obs
    c3 = crop[crop.obs.library_id == "C3"].copy()  # a subset of the slides: C3's spots are cached
    st.pp.image_features(c3, cache_dir=tmp_path, show_progress_bar=False)
    assert counted["spots"] == 3 * crop.n_obs


def test_fit_and_predict_use_the_cache_from_settings(crop, tmp_path, counted, monkeypatch):
    monkeypatch.setattr(st.settings, "feature_cache_dir", str(tmp_path))
    st.pp.normalize(crop)
    train, test = crop[crop.obs.library_id != "C4"].copy(), crop[crop.obs.library_id == "C4"].copy()
    predictor = st.tl.fit(train, genes=["ERBB2"])  # computes the default representation on the fly
    predictor.predict(test.copy())
    spent = counted["spots"]
    assert spent == crop.n_obs
    predictor.predict(test.copy())
    st.tl.fit(train, genes=["ERBB2"])
    assert counted["spots"] == spent  # both served from the cache
