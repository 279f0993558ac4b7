"""HEST-1k selection: choose samples from the metadata table, fetch only those, read them lazily."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from helpers import write_hest_sample

import stpredict as st

INDEX_COLUMNS = ["dataset_title", "id", "organ", "species", "st_technology", "oncotree_code", "patient"]


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    """A local HEST-1k copy: the metadata table of 4 samples, the files of the two breast ST samples."""
    root = tmp_path_factory.mktemp("hest")
    rows = [
        ("her2st", "SPA_C2", "Breast", "Homo sapiens", "Spatial Transcriptomics", "IDC", "C"),
        ("her2st", "SPA_C3", "Breast", "Homo sapiens", "Spatial Transcriptomics", "IDC", "C"),
        ("10x", "TENX95", "Breast", "Homo sapiens", "Visium", "IDC", "P1"),
        ("mob", "MOB_1", "Brain", "Mus musculus", "Spatial Transcriptomics", None, "1"),
    ]
    pd.DataFrame(rows, columns=INDEX_COLUMNS).to_csv(root / "HEST_v1_1_0.csv", index=False)
    write_hest_sample(root, "SPA_C2", "C2", "C")
    write_hest_sample(root, "SPA_C3", "C3", "C")
    return root


def test_select_by_metadata_and_read_lazily(mirror):
    selection = st.datasets.hest(organ="breast", technology="Spatial Transcriptomics", path=mirror)
    assert selection.ids == ["SPA_C2", "SPA_C3"] and len(selection) == 2
    assert selection.metadata.loc["SPA_C2", "oncotree_code"] == "IDC"
    samples = iter(selection)  # nothing read yet
    first = next(samples)
    assert first.obs["library_id"].iloc[0] == "SPA_C2" and first.obs["patient"].iloc[0] == "C"
    assert first.n_obs == 72 and "spatial" in first.obsm
    assert [a.n_obs for a in samples] == [71]
    assert st.datasets.hest(["TENX95", "MOB_1"], path=mirror).ids == ["TENX95", "MOB_1"]
    assert st.datasets.hest(species=["mus musculus"], path=mirror).ids == ["MOB_1"]
    assert st.datasets.hest(oncotree_code="IDC", technology="Visium", path=mirror).ids == ["TENX95"]


def test_downloads_only_the_chosen_samples(mirror, tmp_path):
    fetched = []

    def mirror_downloader(patterns, root):  # stands in for the Hugging Face hub
        fetched.append(list(patterns))
        for pattern in patterns:
            (root / pattern).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(mirror / pattern, root / pattern)

    selection = st.datasets.hest(ids=["SPA_C3"], cache_dir=tmp_path, downloader=mirror_downloader)
    assert fetched == [["HEST_v1_1_0.csv"]]  # the index first
    adata = selection.read("SPA_C3")
    assert fetched[1] == ["st/SPA_C3.h5ad", "wsis/SPA_C3.tif", "metadata/SPA_C3.json"]
    assert adata.n_obs == 71 and not (tmp_path / "st" / "SPA_C2.h5ad").exists()
    selection.download()  # all there: nothing more fetched
    assert len(fetched) == 2


def test_selection_errors_say_what_to_do(mirror):
    with pytest.raises(ValueError, match=r"organ='Kidney'.*\['Brain', 'Breast'\]"):
        st.datasets.hest(organ="Kidney", path=mirror)
    with pytest.raises(KeyError, match="no column 'tissue_type'"):
        st.datasets.hest(tissue_type="tumour", path=mirror)
    visium = st.datasets.hest(technology="Visium", path=mirror)
    with pytest.raises(FileNotFoundError, match="not under .*nothing is downloaded"):
        next(iter(visium))  # TENX95's files are not in the local copy
    with pytest.raises(KeyError, match="not in this selection"):
        visium.read("SPA_C2")
    with pytest.raises(FileNotFoundError, match="HEST_v"):
        st.datasets.hest(path=mirror / "st")


def test_gated_or_offline_hub_errors_say_how_to_get_access(monkeypatch, tmp_path):
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError

    class Response:  # what huggingface_hub's HTTP errors carry
        status_code, headers, url, text, request = 403, {}, "https://huggingface.co", "", None

        def json(self):
            return {}

    def gated(*args, **kwargs):
        raise GatedRepoError("gated", response=Response())

    monkeypatch.setattr(huggingface_hub, "snapshot_download", gated)
    with pytest.raises(PermissionError, match=r"accept its terms.*huggingface-cli login"):
        st.datasets.hest(cache_dir=tmp_path)

    def offline(*args, **kwargs):
        raise LocalEntryNotFoundError("no connection")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(ConnectionError, match="offline.*path="):
        st.datasets.hest(cache_dir=tmp_path)
