from __future__ import annotations

import gzip
import shutil

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from helpers import shared
from PIL import Image

import stpredict as st

FILES = st.datasets.her2st_crop_files()


def _expected_spots(counts_path, spots_path) -> set[str]:
    """Inner join computed independently of the reader."""
    spots = pd.read_csv(spots_path, sep="\t")
    if "selected" in spots:
        spots = spots[spots["selected"] == 1]
    ids = {f"{x}x{y}" for x, y in zip(spots.x, spots.y, strict=True)}
    counts_ids = set(pd.read_csv(counts_path, sep="\t", index_col=0, usecols=[0]).index.astype(str))
    return ids & counts_ids


def _assert_on_tissue(adata: ad.AnnData, library_id: str, max_grey: float = 215.0) -> None:
    """Spot centres lie on stained tissue: the image around each spot is darker than glass."""
    image = np.asarray(Image.open(adata.uns["spatial"][library_id]["metadata"]["source_image_path"]).convert("L"))
    xy = np.rint(adata.obsm["spatial"]).astype(int)
    radius = max(2, int(adata.uns["spatial"][library_id]["scalefactors"]["spot_diameter_fullres"] / 4))
    grey = [image[y - radius : y + radius, x - radius : x + radius].mean() for x, y in xy]
    assert np.median(grey) < max_grey
    assert np.mean(np.asarray(grey) < 235) > 0.9  # nearly every spot, not only most


@pytest.mark.parametrize("section", sorted(FILES))
def test_read_st_fixture_matches_independent_join(section):
    f = FILES[section]
    adata = st.io.read_st(f["counts"], f["spots"], f["image"], patient="C")
    expected = _expected_spots(f["counts"], f["spots"])
    assert set(adata.obs["spot_id"]) == expected
    assert adata.obs["library_id"].unique().tolist() == [section]
    assert sp.issparse(adata.X) and (adata.X != adata.layers["counts"]).nnz == 0
    # counts come from the right rows: compare one spot with the raw table
    table = pd.read_csv(f["counts"], sep="\t", index_col=0)
    spot = adata.obs["spot_id"].iloc[5]
    np.testing.assert_array_equal(adata[adata.obs["spot_id"] == spot].X.toarray().ravel(), table.loc[spot].to_numpy())
    # array_row is the ST y, array_col the ST x
    x, y = map(int, spot.split("x"))
    assert adata.obs.loc[adata.obs["spot_id"] == spot, ["array_col", "array_row"]].to_numpy().tolist() == [[x, y]]
    _assert_on_tissue(adata, section)


def test_scalefactors_and_hires(crop):
    slide = crop.uns["spatial"]["C2"]
    factors = slide["scalefactors"]
    # HER2ST: ~291.5 px per 200 µm array step
    assert factors["microns_per_pixel"] == pytest.approx(200 / 291.5, rel=0.02)
    assert factors["spot_diameter_fullres"] == pytest.approx(100 / factors["microns_per_pixel"])
    hires = slide["images"]["hires"]
    full = Image.open(slide["metadata"]["source_image_path"])
    assert hires.shape[1] == round(full.size[0] * factors["tissue_hires_scalef"])
    assert max(hires.shape[:2]) <= 2000 and hires.dtype == np.uint8


def test_concat_keeps_slides_and_roundtrips_h5ad(crop, tmp_path):
    assert crop.n_obs == 72 + 71 + 70
    assert crop.obs_names.is_unique
    assert set(crop.uns["spatial"]) == {"C2", "C3", "C4"}
    path = tmp_path / "crop.h5ad"
    crop.write_h5ad(path)
    back = ad.read_h5ad(path)
    np.testing.assert_array_equal(back.obsm["spatial"], crop.obsm["spatial"])
    np.testing.assert_array_equal(
        back.uns["spatial"]["C3"]["images"]["hires"], crop.uns["spatial"]["C3"]["images"]["hires"]
    )
    assert (back.X != crop.X).nnz == 0
    assert back.obs["patient"].astype(str).unique().tolist() == ["C"]
    # the full-resolution image is referenced, not stored
    assert "fullres" not in back.uns["spatial"]["C2"]["images"]


def test_concat_refuses_duplicate_library_ids():
    f = FILES["C2"]
    a = st.io.read_st(f["counts"], f["spots"], f["image"])
    with pytest.raises(ValueError, match="C2.*unique"):
        st.io.concat([a, a.copy()])


def test_image_only_slide():
    f = FILES["C3"]
    adata = st.io.read_st(None, f["spots"], f["image"], library_id="C3")
    assert adata.n_vars == 0
    assert adata.n_obs == len(pd.read_csv(f["spots"], sep="\t"))


def _write_counts(path, table: pd.DataFrame) -> None:
    table.to_csv(path, sep="\t")


@pytest.fixture
def c2_tables():
    f = FILES["C2"]
    return pd.read_csv(f["counts"], sep="\t", index_col=0), pd.read_csv(f["spots"], sep="\t"), f["image"]


def test_error_ids_do_not_match(tmp_path, c2_tables):
    counts, spots, image = c2_tables
    counts.index = [f"spot{i}" for i in range(len(counts))]
    _write_counts(tmp_path / "c.tsv", counts)
    with pytest.raises(ValueError, match="no spot id is shared.*spot0"):
        st.io.read_st(tmp_path / "c.tsv", FILES["C2"]["spots"], image)


def test_error_spots_outside_image(tmp_path, c2_tables):
    _, spots, image = c2_tables
    spots.loc[3, "pixel_x"] = 1e6
    spots.to_csv(tmp_path / "s.tsv", sep="\t", index=False)
    bad = f"{spots.loc[3, 'x']}x{spots.loc[3, 'y']}"
    with pytest.raises(ValueError, match=rf"outside the .* image .*{bad}"):
        st.io.read_st(FILES["C2"]["counts"], tmp_path / "s.tsv", image, library_id="C2")


def test_error_missing_and_unreadable_image(tmp_path):
    f = FILES["C2"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        st.io.read_st(f["counts"], f["spots"], tmp_path / "nope.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="Could not read image"):
        st.io.read_st(f["counts"], f["spots"], tmp_path / "broken.jpg")


def test_error_duplicate_spots_and_genes(tmp_path, c2_tables):
    counts, spots, image = c2_tables
    dup_spots = pd.concat([counts, counts.iloc[:1]])
    _write_counts(tmp_path / "dup_spots.tsv", dup_spots)
    with pytest.raises(ValueError, match="Duplicate spot ids"):
        st.io.read_st(tmp_path / "dup_spots.tsv", FILES["C2"]["spots"], image)
    # a duplicated gene column, written through gzip to exercise the compressed header path
    header = "\t".join(["", *counts.columns[:3], counts.columns[0]])
    rows = ["\t".join([idx, *map(str, row[:3]), "0"]) for idx, row in zip(counts.index, counts.to_numpy(), strict=True)]
    with gzip.open(tmp_path / "dup_genes.tsv.gz", "wt") as handle:
        handle.write("\n".join([header, *rows]) + "\n")
    with pytest.raises(ValueError, match=f"Duplicate gene names.*{counts.columns[0]}"):
        st.io.read_st(tmp_path / "dup_genes.tsv.gz", FILES["C2"]["spots"], image)
    spots_dup = pd.concat([spots, spots.iloc[:1]])
    spots_dup.to_csv(tmp_path / "dup_pos.tsv", sep="\t", index=False)
    with pytest.raises(ValueError, match="Duplicate spot positions"):
        st.io.read_st(FILES["C2"]["counts"], tmp_path / "dup_pos.tsv", image)


def test_error_non_numeric_counts(tmp_path, c2_tables):
    counts, _, image = c2_tables
    counts = counts.iloc[:, :20].astype(object)
    counts.iloc[4, 7] = "n/a"
    _write_counts(tmp_path / "c.tsv", counts)
    with pytest.raises(ValueError, match=rf"Non-numeric counts.*{counts.columns[7]}.*{counts.index[4]}"):
        st.io.read_st(tmp_path / "c.tsv", FILES["C2"]["spots"], image)


def test_error_negative_counts(tmp_path, c2_tables):
    counts, _, image = c2_tables
    counts = counts.iloc[:, :20].copy()
    counts.iloc[0, 0] = -1
    _write_counts(tmp_path / "c.tsv", counts)
    with pytest.raises(ValueError, match="negative"):
        st.io.read_st(tmp_path / "c.tsv", FILES["C2"]["spots"], image)


def test_reader_does_not_touch_inputs(c2_tables):
    counts, spots, image = c2_tables
    before_counts, before_spots = counts.copy(), spots.copy()
    st.io.read_st(counts, spots, image, library_id="C2")
    pd.testing.assert_frame_equal(counts, before_counts)
    pd.testing.assert_frame_equal(spots, before_spots)


def test_missing_fullres_falls_back_to_hires(tmp_path):
    f = FILES["C4"]
    image = tmp_path / "C4.jpg"
    shutil.copy(f["image"], image)
    adata = st.io.read_st(f["counts"], f["spots"], image, library_id="C4")
    image.unlink()
    with pytest.warns(UserWarning, match="not found.*hires"):
        patches = st.pp.extract_patches(adata[:3], size=64)
    assert patches.shape == (3, 64, 64, 3)


# --- the real data sets (run when ../shared/data is present) ------------------------------------------


@pytest.mark.shared_data
@pytest.mark.parametrize("section", ["C2", "C3", "C4", "C5", "C6"])
def test_read_every_her2st_section_with_image(section):
    root = shared("her2st")
    image = next((root / "images").glob(f"{section}_*.jpg"))
    counts, spots = root / "counts" / f"{section}.tsv.gz", root / "spots" / f"{section}_selection.tsv"
    adata = st.io.read_st(counts, spots, image, patient="C")
    assert set(adata.obs["spot_id"]) == _expected_spots(counts, spots)
    assert adata.n_vars > 15000
    _assert_on_tissue(adata, section)


@pytest.mark.shared_data
@pytest.mark.parametrize("section", ["MOB1", "MOB2", "MOB3", "MOB4"])
def test_read_every_mob_section(section):
    root = shared("mob")
    counts, spots = root / f"{section}.tsv", root / f"alignment_table_{section}.tsv"
    adata = st.io.read_st(counts, spots, root / f"{section}.jpg")
    assert set(adata.obs["spot_id"]) == _expected_spots(counts, spots)
    assert adata.n_vars == 1000
    assert 10 < 1 / adata.uns["spatial"][section]["scalefactors"]["microns_per_pixel"] * 200 < 40  # ~23 px/step
    _assert_on_tissue(adata, section, max_grey=225.0)


@pytest.mark.shared_data
def test_read_visium_spaceranger_folder():
    path = shared("formats", "visium_spaceranger_1.0.0_tiny", "1.0.0")
    adata = st.io.read_visium(path, library_id="tiny", patient="P1")
    assert adata.n_obs > 0 and sp.issparse(adata.X)
    assert (adata.X != adata.layers["counts"]).nnz == 0
    assert adata.uns["spatial"]["tiny"]["metadata"]["grid"] == "hex"
    assert adata.uns["spatial"]["tiny"]["scalefactors"]["microns_per_pixel"] == pytest.approx(55 / 89.4275, rel=1e-3)
    assert {"array_row", "array_col", "library_id", "patient"} <= set(adata.obs)
    # hex grid: row + col parity is constant on Visium
    assert len(np.unique((adata.obs["array_row"] + adata.obs["array_col"]) % 2)) == 1


def test_read_visium_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="filtered_feature_bc_matrix.h5"):
        st.io.read_visium(tmp_path)
