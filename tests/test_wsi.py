"""Whole-slide images: lazy pyramidal reads, virtual spots on tissue, resolution harmonisation, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import stpredict as st
from stpredict.io._wsi import WholeSlide

BACKENDS = ["openslide", "tiffslide"]


@pytest.fixture(scope="module")
def c3_image():
    return np.asarray(Image.open(st.datasets.her2st_crop_files()["C3"]["image"]).convert("RGB"))


@pytest.fixture(scope="module")
def norm(_crop_norm_session):
    """The normalised crop without stored image features (so that predict computes them from the image)."""
    adata = _crop_norm_session.copy()
    del adata.obsm["X_handcrafted"]
    adata.uns.pop("stpredict_features", None)
    return adata


@pytest.fixture(scope="module")
def c3_pyramid(tmp_path_factory, norm, c3_image):
    """The bundled C3 section as a pyramidal tiled TIFF at its own pixel size (JPEG tiles, as scanners write)."""
    mpp = norm.uns["spatial"]["C3"]["scalefactors"]["microns_per_pixel"]
    path = tmp_path_factory.mktemp("wsi") / "C3.tif"
    return st.io.write_pyramidal_tiff(c3_image, path, mpp=mpp, quality=95)


@pytest.fixture(scope="module")
def c3_lossless(tmp_path_factory, norm, c3_image):
    """The same pyramid with lossless tiles: isolates reading from JPEG re-encoding."""
    mpp = norm.uns["spatial"]["C3"]["scalefactors"]["microns_per_pixel"]
    return st.io.write_pyramidal_tiff(c3_image, tmp_path_factory.mktemp("wsi") / "C3.tif", mpp=mpp, compression="zlib")


def _as_wsi_slide(adata, library_id, path):
    """The same spots with the image replaced by the pyramidal file."""
    slide = adata[adata.obs["library_id"] == library_id].copy()
    slide.uns["spatial"][library_id]["metadata"]["source_image_path"] = str(path)
    return slide


@pytest.mark.parametrize("backend", BACKENDS)
def test_pyramid_reads_equal_the_original_image(c3_pyramid, c3_image, backend):
    with WholeSlide(c3_pyramid, backend=backend) as slide:
        assert slide.shape == c3_image.shape and len(slide.level_downsamples) >= 3
        assert slide.mpp == pytest.approx(0.685, abs=0.01)
        full = slide.read(400, 300, 224, 224)
        np.testing.assert_allclose(full.astype(float).mean(), c3_image[300:524, 400:624].mean(), atol=1.0)
        assert np.abs(full.astype(int) - c3_image[300:524, 400:624]).mean() < 3  # JPEG q95 tiles
        # a 4x coarser read comes from a pyramid level and matches the original averaged over 4x4 blocks
        coarse = slide.read(400, 300, 448, 448, out_side=112)
        assert slide.best_level(4.0) == 2
        block = c3_image[300:748, 400:848].reshape(112, 4, 112, 4, 3).mean(axis=(1, 3))
        assert np.abs(coarse.astype(float) - block).mean() < 6
        # outside the slide is white
        assert (slide.read(-300, -300, 100, 100) == 255).all()


def test_patches_and_features_agree_between_original_and_wsi(norm, c3_pyramid, c3_lossless):
    original = norm[norm.obs["library_id"] == "C3"].copy()
    wsi = _as_wsi_slide(norm, "C3", c3_pyramid)
    a = st.pp.extract_patches(original, size=100, unit="um")
    b = st.pp.extract_patches(wsi, size=100, unit="um")
    assert a.shape == b.shape and np.abs(a.astype(int) - b).mean() < 3
    # at a coarser target resolution: one pyramid read, resampled, vs the original resampled
    a = st.pp.extract_patches(original, size=100, unit="um", target_mpp=1.37)
    b = st.pp.extract_patches(wsi, size=100, unit="um", target_mpp=1.37)
    assert a.shape[1] == round(100 / 1.37)
    # resampling from a pyramid level and from the full image differ by sub-pixel phase, not by content
    assert np.abs(a.astype(int) - b).mean() < 10
    assert np.corrcoef(a.mean(axis=(1, 2, 3)), b.mean(axis=(1, 2, 3)))[0, 1] > 0.99
    # Features read through the pyramid equal the original's. (Re-encoding the tiles as JPEG q95 leaves every
    # feature at r > 0.99 except the eosin channel's spread, r = 0.86: it is mostly compression noise.)
    f_original = st.pp.image_features(original, show_progress_bar=False, copy=True).obsm["X_handcrafted"]
    lossless = _as_wsi_slide(norm, "C3", c3_lossless)
    f_wsi = st.pp.image_features(lossless, show_progress_bar=False, copy=True).obsm["X_handcrafted"]
    varying = f_original.std(axis=0) > 1e-6
    r = [np.corrcoef(f_original[:, j], f_wsi[:, j])[0, 1] for j in np.flatnonzero(varying)]
    assert min(r) >= 0.95


def test_predictions_agree_between_original_and_wsi(norm, c3_pyramid):
    train = norm[norm.obs["library_id"] != "C3"].copy()
    predictor = st.tl.fit(train, genes=["ERBB2", "GNAS", "FASN", "IGKC"])
    original = norm[norm.obs["library_id"] == "C3"].copy()
    wsi = _as_wsi_slide(norm, "C3", c3_pyramid)
    for adata in (original, wsi):
        predictor.predict(adata, key_added="pred")
    for gene in predictor.genes:
        r = np.corrcoef(original.obsm["pred"][gene], wsi.obsm["pred"][gene])[0, 1]
        assert r >= 0.95, gene


@pytest.fixture(scope="module")
def slide_on_glass(tmp_path_factory, c3_image):
    """The C3 crop pasted onto white glass with a blue pen line beside it: (path, tissue box, pen box)."""
    glass = np.full((4000, 5000, 3), 236, dtype=np.uint8)
    y0, x0 = 700, 1200
    h, w = c3_image.shape[:2]
    glass[y0 : y0 + h, x0 : x0 + w] = c3_image
    pen = (3300, 3500, 300, 4700)  # rows, columns of a blue marker line below the tissue
    glass[pen[0] : pen[1], pen[2] : pen[3]] = (40, 70, 190)
    path = st.io.write_pyramidal_tiff(glass, tmp_path_factory.mktemp("glass") / "glass.tif", mpp=0.685)
    return path, (x0, y0, x0 + w, y0 + h), pen


def test_virtual_spots_land_on_tissue(slide_on_glass):
    path, (x0, y0, x1, y1), pen = slide_on_glass
    adata = st.io.read_wsi(path, library_id="glass")
    xy = adata.obsm["spatial"]
    radius = 55 / 0.685 / 2
    assert len(adata) > 100
    assert (xy[:, 0] > x0 - radius).all() and (xy[:, 0] < x1 + radius).all()
    assert (xy[:, 1] > y0 - radius).all() and (xy[:, 1] < y1 + radius).all()  # none on glass or on the pen line
    # the tissue area holds about as many spots as a hex grid of 100 µm pitch fits
    expected = (x1 - x0) * (y1 - y0) * 0.685**2 / (100 * 100 * np.sqrt(3) / 2)
    assert 0.8 * expected < len(adata) < 1.1 * expected
    slide = adata.uns["spatial"]["glass"]
    assert slide["scalefactors"]["spot_diameter_fullres"] == pytest.approx(55 / 0.685)
    assert slide["tissue_mask"].shape == slide["images"]["hires"].shape[:2]
    # a hex grid with Visium's array convention: neighbours on a row differ by 2 columns
    st.pp.spatial_graph(adata)
    degrees = np.asarray(adata.obsp["spatial_connectivities"].sum(axis=1)).ravel()
    assert np.median(degrees) == 6
    # features are read region by region from the pyramid
    st.pp.image_features(adata, show_progress_bar=False)
    assert np.isfinite(adata.obsm["X_handcrafted"]).all()


def test_users_mask_and_square_grid(slide_on_glass):
    path, *_ = slide_on_glass
    mask = np.zeros((40, 50), dtype=bool)
    mask[:20, :25] = True  # the top-left quarter, at any resolution
    adata = st.io.read_wsi(path, tissue=mask, grid="square", spot_diameter_um=100, spot_spacing_um=200)
    xy = adata.obsm["spatial"]
    assert (xy[:, 0] < 2500 + 100).all() and (xy[:, 1] < 2000 + 100).all()
    np.testing.assert_allclose(np.diff(np.unique(xy[:, 0])), 200 / 0.685)


def test_model_predicts_on_a_wsi_end_to_end(norm, slide_on_glass, tmp_path):
    path, *_ = slide_on_glass
    train = norm[norm.obs["library_id"] != "C3"].copy()
    st.tl.fit(train, model="ridge_spatial", genes=["ERBB2", "IGKC"]).save(tmp_path / "m.stpredict")
    adata = st.io.read_wsi(path)
    st.tl.load_model(tmp_path / "m.stpredict").predict(adata, key_added="pred")
    assert adata.obsm["pred"].shape == (adata.n_obs, 2) and np.isfinite(adata.obsm["pred"].to_numpy()).all()


def test_bad_whole_slide_input(tmp_path, c3_image):
    import tifffile

    no_mpp = tmp_path / "no_mpp.tif"
    tifffile.imwrite(no_mpp, c3_image[:1024, :1024], tile=(256, 256), photometric="rgb")
    with pytest.raises(ValueError, match=r"records no pixel size .*read_wsi\(path, mpp=...\)"):
        st.io.read_wsi(no_mpp)
    assert st.io.read_wsi(no_mpp, mpp=0.685).n_obs > 0
    blank = st.io.write_pyramidal_tiff(np.full((2000, 2000, 3), 240, np.uint8), tmp_path / "blank.tif", mpp=0.5)
    with pytest.raises(ValueError, match="No tissue found on 'blank.tif'.*st.pl.tissue"):
        st.io.read_wsi(blank)
    jpeg = tmp_path / "slide.jpg"
    Image.fromarray(c3_image).save(jpeg)
    with pytest.raises(ValueError, match="unsupported whole-slide image type '.jpg'.*read_st"):
        st.io.read_wsi(jpeg)
    with pytest.raises(ValueError, match="backend must be"):
        st.io.read_wsi(blank, backend="bioformats")


def test_predictor_resamples_or_refuses_another_resolution(norm, c3_image, tmp_path):
    train = norm[norm.obs["library_id"] != "C3"].copy()
    predictor = st.tl.fit(train, genes=["ERBB2", "IGKC"])
    assert predictor.train_mpp == pytest.approx(0.685, abs=0.01)
    predictor.save(tmp_path / "m.stpredict")
    assert st.tl.load_model(tmp_path / "m.stpredict").train_mpp == predictor.train_mpp
    # C3 scanned "at 2x finer resolution": the image upsampled 2x, spots and pixel size scaled accordingly
    fine = norm[norm.obs["library_id"] == "C3"].copy()
    big = np.asarray(Image.fromarray(c3_image).resize((c3_image.shape[1] * 2, c3_image.shape[0] * 2)))
    path = st.io.write_pyramidal_tiff(big, tmp_path / "C3_fine.tif", mpp=predictor.train_mpp / 2)
    slide = fine.uns["spatial"]["C3"]
    slide["metadata"]["source_image_path"] = str(path)
    slide["scalefactors"]["microns_per_pixel"] /= 2
    slide["scalefactors"]["spot_diameter_fullres"] *= 2
    slide["scalefactors"]["tissue_hires_scalef"] /= 2
    fine.obsm["spatial"] = fine.obsm["spatial"] * 2 + 0.5
    with pytest.raises(ValueError, match="another resolution than the training slides.*harmonise=True"):
        predictor.predict(fine, harmonise=False)
    native = norm[norm.obs["library_id"] == "C3"].copy()
    predictor.predict(native, key_added="pred")
    predictor.predict(fine, key_added="pred")
    for gene in predictor.genes:
        assert np.corrcoef(native.obsm["pred"][gene], fine.obsm["pred"][gene])[0, 1] > 0.9
    # features computed beforehand from the fine slide's own pixels are refused, not silently used
    st.pp.image_features(fine, show_progress_bar=False)
    with pytest.raises(ValueError, match="computed from the slide's own pixels.*target_mpp="):
        predictor.predict(fine)


def test_tissue_plot_outlines_the_mask_and_draws_every_spot(slide_on_glass):
    path, *_ = slide_on_glass
    adata = st.io.read_wsi(path, library_id="glass")
    ax = st.pl.tissue(adata, show=False)
    spots = ax.collections[-1]
    scale = adata.uns["spatial"]["glass"]["scalefactors"]["tissue_hires_scalef"]
    np.testing.assert_allclose(spots.get_offsets(), adata.obsm["spatial"] * scale)
    assert len(ax.collections) >= 2  # the tissue outline and the spots
    assert ax.get_title().endswith(f"{adata.n_obs} spots")
    with pytest.raises(KeyError, match="read it with st.io.read_wsi"):
        st.pl.tissue(st.datasets.her2st_crop(), show=False)


def test_export_to_spatialdata_round_trips_through_zarr(norm, slide_on_glass, tmp_path):
    import spatialdata

    path, *_ = slide_on_glass
    train = norm[norm.obs["library_id"] != "C3"].copy()
    adata = st.io.read_wsi(path, library_id="glass")
    st.tl.fit(train, genes=["ERBB2", "IGKC"]).predict(adata, key_added="pred")
    sdata = st.io.to_spatialdata(adata, key="pred")
    sdata.write(tmp_path / "glass.zarr")
    back = spatialdata.read_zarr(tmp_path / "glass.zarr")
    image = back.images["glass_image"]
    levels = spatialdata.get_pyramid_levels(image)
    assert levels[0].shape == (3, 4000, 5000) and len(levels) >= 2  # a multiscale image
    with WholeSlide(path) as slide:
        stored = np.asarray(levels[0][:, 1000:1100, 2000:2100]).transpose(1, 2, 0)
        np.testing.assert_array_equal(stored, slide.read(2000, 1000, 100, 100))
    circles = back.shapes["glass_spots"]
    np.testing.assert_allclose(np.column_stack([circles.geometry.x, circles.geometry.y]), adata.obsm["spatial"])
    np.testing.assert_allclose(circles["radius"], 55 / 0.685 / 2)
    table = back.tables["table"]
    assert table.var_names.tolist() == ["ERBB2", "IGKC"]
    np.testing.assert_allclose(table.X, adata.obsm["pred"].to_numpy(), rtol=1e-6)
    assert table.uns["spatialdata_attrs"]["region"] == "glass_spots"
    # stpredict reads its own export back: same spots, the predictions as expression, the image by reference
    again = st.io.read_spatialdata(tmp_path / "glass.zarr", microns_per_pixel=0.685, grid="hex")
    np.testing.assert_allclose(again.obsm["spatial"], adata.obsm["spatial"], atol=1e-6)
    np.testing.assert_allclose(again.X.toarray() if hasattr(again.X, "toarray") else again.X, table.X, rtol=1e-6)


def test_read_hest_sample_built_from_shared_data(tmp_path):
    """A HEST-1k sample (st/<id>.h5ad, wsis/<id>.tif, metadata/<id>.json) made from the bundled C3 section."""
    from helpers import write_hest_sample

    crop = st.datasets.her2st_crop()
    c3 = crop[crop.obs["library_id"] == "C3"].copy()
    mpp = c3.uns["spatial"]["C3"]["scalefactors"]["microns_per_pixel"]
    write_hest_sample(tmp_path, "SPA_C3", "C3", "C")

    adata = st.io.read_hest(tmp_path, "SPA_C3")
    assert adata.shape == c3.shape and adata.obs["patient"].iloc[0] == "C"
    np.testing.assert_allclose(adata.obsm["spatial"], c3.obsm["spatial"])
    assert (adata.X != c3.X).nnz == 0
    scale = adata.uns["spatial"]["SPA_C3"]["scalefactors"]
    assert scale["spot_diameter_fullres"] == pytest.approx(100 / mpp)
    assert adata.uns["spatial"]["SPA_C3"]["metadata"]["grid"] == "square"
    np.testing.assert_array_equal(
        st.pp.extract_patches(adata[:5], size=100, unit="um"), st.pp.extract_patches(c3[:5], size=100, unit="um")
    )
    with pytest.raises(FileNotFoundError, match="HEST sample 'TENX95' is incomplete.*snapshot_download"):
        st.io.read_hest(tmp_path, "TENX95")


def test_large_whole_slide_images_are_never_decoded_whole(slide_on_glass, monkeypatch):
    from stpredict.io import _image

    path, *_ = slide_on_glass
    adata = st.io.read_wsi(path, library_id="glass")
    image, scale = st.io.load_slide_image(adata, "glass")  # small enough: decoded through the WSI reader
    assert image.shape == (4000, 5000, 3) and scale == 1.0
    monkeypatch.setattr(_image, "MAX_DECODED_PIXELS", 10_000_000)
    with pytest.raises(MemoryError, match="not decoded whole.*st.pp.extract_patches"):
        st.io.load_slide_image(adata, "glass")
    assert st.pp.extract_patches(adata[:3], size=100, unit="um").shape == (3, 146, 146, 3)  # regions still work
