"""HEST-1k's own patches (patches/<id>.h5): features read from them, with or without the WSI."""

import shutil

import numpy as np
import pytest
from helpers import write_hest_patches, write_hest_sample

import stpredict as st

#: a request HEST's 224 px, 0.5 µm/px patches hold exactly
HEST_GEOMETRY = {"size": 224, "unit": "px", "target_mpp": 0.5}


@pytest.fixture(scope="module")
def hest_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("hest")
    for sample_id, section in (("SPA_C2", "C2"), ("SPA_C3", "C3")):
        write_hest_sample(root, sample_id, section, "C")
        write_hest_patches(root, sample_id)
    return root


def features(adata, **geometry):
    return st.pp.image_features(adata, copy=True, show_progress_bar=False, **geometry).obsm["X_handcrafted"]


def test_features_come_from_the_stored_patches_and_equal_the_wsi_ones(hest_root, monkeypatch):
    from_wsi = features(st.io.read_hest(hest_root, "SPA_C3", patches=False), **HEST_GEOMETRY)
    adata = st.io.read_hest(hest_root, "SPA_C3")
    record = adata.uns["spatial"]["SPA_C3"]["metadata"]["stored_patches"]
    assert (record["side"], record["mpp"], record["barcode_key"]) == (224, 0.5, "spot_id")

    def no_wsi(*args, **kwargs):
        raise AssertionError("the WSI was opened although the stored patches hold the request")

    monkeypatch.setattr(st.pp._patches, "open_slide_image", no_wsi)
    np.testing.assert_array_equal(features(adata, **HEST_GEOMETRY), from_wsi)
    less_tissue = features(adata, size=100, unit="um")  # 146 px at the scan's 0.685 µm/px: a crop of a stored patch
    assert less_tissue.shape == from_wsi.shape and np.isfinite(less_tissue).all()
    with pytest.raises(AssertionError, match="WSI was opened"):  # 153 µm: more than a stored patch holds
        features(adata, size=224, unit="px")


def test_a_patch_only_sample_reads_trains_and_predicts(hest_root, tmp_path):
    root = tmp_path / "hest"
    shutil.copytree(hest_root, root)
    shutil.rmtree(root / "wsis")
    train, test = (st.io.read_hest(root, sample_id) for sample_id in ("SPA_C2", "SPA_C3"))
    assert train.uns["spatial"]["SPA_C2"]["metadata"]["source_image_path"] is None
    overview = train.uns["spatial"]["SPA_C2"]["images"]["hires"]  # a mosaic of the patches
    assert overview.ndim == 3 and (overview < 250).mean() > 0.2
    for adata in (train, test):
        st.pp.normalize(adata)
        st.pp.image_features(adata, show_progress_bar=False, **HEST_GEOMETRY)
    predictor = st.tl.fit(train, genes=["ERBB2", "GNAS"], use_rep="X_handcrafted")
    predicted = predictor.predict(test, copy=True).obsm["pred_ridge"]
    assert predicted.shape == (test.n_obs, 2) and np.isfinite(predicted.to_numpy()).all()
    with pytest.raises(ValueError, match="no image file, only stored patches.*224 px at 0.5"):
        st.pp.image_features(test, size=224, unit="px", show_progress_bar=False)


def test_spots_without_a_stored_patch_are_cut_from_the_wsi_or_refused(hest_root, tmp_path):
    root = tmp_path / "hest"
    shutil.copytree(hest_root, root)
    write_hest_patches(root, "SPA_C3", drop=3)
    from_wsi = features(st.io.read_hest(root, "SPA_C3", patches=False), **HEST_GEOMETRY)
    np.testing.assert_array_equal(features(st.io.read_hest(root, "SPA_C3"), **HEST_GEOMETRY), from_wsi)
    shutil.rmtree(root / "wsis")
    with pytest.raises(ValueError, match="spots without a stored patch"):
        features(st.io.read_hest(root, "SPA_C3"), **HEST_GEOMETRY)


def test_patch_only_downloads_fetch_no_wsi(hest_root, tmp_path):
    (hest_root / "HEST_v1_1_0.csv").write_text(
        "id,organ,st_technology,species,patient\nSPA_C3,Breast,Spatial Transcriptomics,Homo sapiens,C\n"
    )
    fetched = []

    def mirror_downloader(patterns, root):
        fetched.extend(patterns)
        for pattern in patterns:
            (root / pattern).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(hest_root / pattern, root / pattern)

    selection = st.datasets.hest(cache_dir=tmp_path, downloader=mirror_downloader, assets=("st", "metadata", "patches"))
    adata = selection.read("SPA_C3")
    assert fetched[1:] == ["st/SPA_C3.h5ad", "metadata/SPA_C3.json", "patches/SPA_C3.h5"]
    assert adata.n_obs == 71 and "stored_patches" in adata.uns["spatial"]["SPA_C3"]["metadata"]
    with pytest.raises(ValueError, match="at least one of 'wsis' or 'patches'"):
        st.datasets.hest(path=hest_root, assets=("st", "metadata"))
