from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from helpers import shared

import stpredict as st
from stpredict.datasets import _download


def test_bundled_crop_is_small_and_documented():
    files = st.datasets.her2st_crop_files()
    total = sum(p.stat().st_size for f in files.values() for p in f.values())
    assert total <= 5 * 1024 * 1024
    provenance = st.datasets.her2st_crop_provenance()
    assert "almaan/her2st" in provenance["source"]
    assert set(provenance["sections"]) == {"C2", "C3", "C4"}


def test_crop_has_real_biology(crop):
    # ERBB2 (HER2) is highly expressed in a HER2-positive tumour: among the top 5% of genes by total counts
    totals = crop.X.sum(axis=0).A1
    rank = (totals > totals[crop.var_names.get_loc("ERBB2")]).sum()
    assert rank < 0.05 * crop.n_vars


def _copying_downloader(source_root: Path):
    """A pooch downloader that copies from a local mirror (the URL's file name under source_root)."""

    def download(url, output_file, pooch):
        name = url.rsplit("/", 1)[-1]
        hits = sorted(source_root.rglob(f"*{name}"))
        if not hits:
            raise FileNotFoundError(name)
        shutil.copy(hits[0], output_file)

    return download


@pytest.mark.shared_data
def test_her2st_download_path_verifies_checksums_and_caches(tmp_path):
    root = shared("her2st")
    calls = []
    copy = _copying_downloader(root)

    def counting(url, output_file, pooch):
        calls.append(url)
        copy(url, output_file, pooch)

    adata = st.datasets.her2st(["C3"], cache_dir=tmp_path, downloader=counting)
    assert adata.n_obs > 100 and adata.obs["patient"].unique().tolist() == ["C"]
    assert all(u.startswith(_download.HER2ST_URL) for u in calls) and len(calls) == 3
    st.datasets.her2st(["C3"], cache_dir=tmp_path, downloader=counting)
    assert len(calls) == 3  # second call served from the cache


def test_fetch_rejects_corrupted_file(tmp_path):
    source = tmp_path / "src" / "file.txt"
    source.parent.mkdir()
    source.write_text("payload")
    good = hashlib.sha256(b"payload").hexdigest()

    def download(url, output_file, pooch):
        shutil.copy(source, output_file)

    path = st.datasets.fetch(
        "x/file.txt", "https://example.org/file.txt", good, cache_dir=tmp_path / "c", downloader=download
    )
    assert path.read_text() == "payload"
    with pytest.raises(ValueError, match="Checksum mismatch.*file2.txt"):
        st.datasets.fetch(
            "x/file2.txt", "https://example.org/file2.txt", "0" * 64, cache_dir=tmp_path / "c", downloader=download
        )


def test_fetch_offline_message(tmp_path):
    def offline(url, output_file, pooch):
        raise ConnectionError("Name or service not known")

    with pytest.raises(ConnectionError, match="offline.*path="):
        st.datasets.fetch("y/a.tsv", "https://example.org/a.tsv", None, cache_dir=tmp_path, downloader=offline)


@pytest.mark.shared_data
def test_her2st_and_mob_from_local_path():
    adata = st.datasets.her2st(["C2", "C5"], path=shared("her2st"))
    assert sorted(adata.obs["library_id"].unique()) == ["C2", "C5"]
    mob = st.datasets.mob(path=shared("mob"))
    assert mob.obs.groupby("library_id", observed=True)["patient"].first().to_dict() == {
        "MOB1": "1",
        "MOB2": "1",
        "MOB3": "2",
        "MOB4": "2",
    }


def test_her2st_refuses_sections_without_public_image():
    with pytest.raises(ValueError, match="D1.*path="):
        st.datasets.her2st(["D1"])


def test_registry_covers_downloadable_files():
    registry = _download._registry()
    for section in _download.HER2ST_IMAGED_SECTIONS:
        assert f"her2st/{section}.tsv.gz" in registry
        assert any(k.startswith(f"her2st/{section}_") and k.endswith(".jpg") for k in registry)
    assert all(len(digest) == 64 for _, digest in registry.values())


@pytest.mark.shared_data
def test_visium_breast_cancer_from_local_outs_folder():
    adata = st.datasets.visium_breast_cancer(path=shared("formats", "visium_spaceranger_1.0.0_tiny", "1.0.0"))
    assert adata.obs["library_id"].unique().tolist() == ["V1_Breast_Cancer_Block_A_Section_1"]
    assert adata.uns["spatial"]["V1_Breast_Cancer_Block_A_Section_1"]["metadata"]["grid"] == "hex"
