"""Reading SpatialData slides: spots placed through coordinate transformations, image read lazily."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from PIL import Image

import stpredict as st

sd = pytest.importorskip("spatialdata")
pytestmark = pytest.mark.filterwarnings("ignore:zarr v3 autosharding:UserWarning")


def _as_spatialdata(slide: ad.AnnData, library_id: str):
    """The slide as SpatialData: a 3-level image pyramid, spot circles stored in their own units
    (half-scale and shifted, mapped to the image by Scale + Translation) and an annotating table."""
    from spatialdata.models import Image2DModel, ShapesModel, TableModel
    from spatialdata.transformations import Identity, Scale, Sequence, Translation

    pixels = np.asarray(Image.open(slide.uns["spatial"][library_id]["metadata"]["source_image_path"]).convert("RGB"))
    image = Image2DModel.parse(
        pixels.transpose(2, 0, 1), dims=("c", "y", "x"), scale_factors=[2, 2], transformations={"global": Identity()}
    )
    shift = np.array([30.0, -12.0])
    xy = (slide.obsm["spatial"] - shift) / 2
    radius = slide.uns["spatial"][library_id]["scalefactors"]["spot_diameter_fullres"] / 4
    to_image = Sequence([Scale([2.0, 2.0], axes=("x", "y")), Translation(shift, axes=("x", "y"))])
    shapes = ShapesModel.parse(
        xy,
        geometry=0,
        radius=np.full(len(xy), radius),
        index=np.arange(len(xy)) + 100,
        transformations={"global": to_image},
    )
    table = ad.AnnData(slide.layers["counts"].copy(), var=slide.var[[]].copy())
    table.obs_names = slide.obs_names
    table.obs["region"] = "spots"
    table.obs["region"] = table.obs["region"].astype("category")
    table.obs["spot"] = np.arange(slide.n_obs) + 100  # instance ids of the shapes
    table = table[::-1].copy()  # rows in another order than the shapes
    table = TableModel.parse(table, region="spots", region_key="region", instance_key="spot")
    return sd.SpatialData(images={"he": image}, shapes={"spots": shapes}, tables={"table": table})


@pytest.fixture
def slide_c3(crop):
    return crop[crop.obs["library_id"] == "C3"].copy()


def test_backed_spatialdata_gives_the_same_spots_patches_and_counts(slide_c3, tmp_path):
    _as_spatialdata(slide_c3, "C3").write(tmp_path / "c3.zarr")
    adata = st.io.read_spatialdata(tmp_path / "c3.zarr", spot_diameter_um=100, patient="C", library_id="C3")

    assert adata.obs_names.tolist() == slide_c3.obs_names[::-1].tolist()  # the table's order is kept
    adata = adata[slide_c3.obs_names].copy()
    np.testing.assert_allclose(adata.obsm["spatial"], slide_c3.obsm["spatial"], atol=1e-6)
    np.testing.assert_array_equal(adata.layers["counts"].toarray(), slide_c3.layers["counts"].toarray())
    scalefactors = adata.uns["spatial"]["C3"]["scalefactors"]
    assert scalefactors["microns_per_pixel"] == pytest.approx(
        slide_c3.uns["spatial"]["C3"]["scalefactors"]["microns_per_pixel"]
    )
    # patches come from the full-resolution image in the Zarr store, pixel for pixel
    np.testing.assert_array_equal(st.pp.extract_patches(adata), st.pp.extract_patches(slide_c3))
    hires = adata.uns["spatial"]["C3"]["images"]["hires"]
    assert hires.dtype == np.uint8 and max(hires.shape[:2]) <= 2000
    assert adata.obs["patient"].iloc[0] == "C"


def test_in_memory_spatialdata_falls_back_to_hires_or_a_given_image(slide_c3):
    sdata = _as_spatialdata(slide_c3, "C3")
    with pytest.warns(st.StPredictWarning, match="not backed by a Zarr store"):
        adata = st.io.read_spatialdata(sdata)
    assert adata.obs["library_id"].iloc[0] == "spots"  # named after the spots' shapes element by default
    with pytest.warns(UserWarning, match="using the 'hires' image"):
        st.pp.extract_patches(adata[:2])

    path = slide_c3.uns["spatial"]["C3"]["metadata"]["source_image_path"]
    given = st.io.read_spatialdata(sdata, source_image_path=path, library_id="C3")[slide_c3.obs_names]
    np.testing.assert_array_equal(st.pp.extract_patches(given), st.pp.extract_patches(slide_c3))


def test_spatialdata_errors_name_the_problem(slide_c3):
    sdata = _as_spatialdata(slide_c3, "C3")
    with pytest.raises(KeyError, match=r"no table 'counts'; it has \['table'\]"):
        st.io.read_spatialdata(sdata, table_key="counts")
    sdata.images["he_copy"] = sdata.images["he"]
    with pytest.raises(ValueError, match=r"2 images \['he', 'he_copy'\]; choose one with `image_key=`"):
        st.io.read_spatialdata(sdata)
    from spatialdata.transformations import Scale, set_transformation

    set_transformation(sdata.shapes["spots"], Scale([50.0, 50.0], axes=("x", "y")), to_coordinate_system="global")
    with pytest.raises(ValueError, match="fall outside the .* image 'he'"):
        st.io.read_spatialdata(sdata, image_key="he")
    with pytest.raises(TypeError, match="must be a SpatialData object"):
        st.io.read_spatialdata(slide_c3)


def test_image_pixels_become_rgb_uint8():
    from stpredict.io._spatialdata import _as_rgb_uint8

    rgba = np.zeros((4, 2, 3), dtype=np.uint8)
    rgba[0] = 200  # red channel
    assert _as_rgb_uint8(rgba, "he").shape == (2, 3, 3) and (_as_rgb_uint8(rgba, "he")[..., 0] == 200).all()
    assert _as_rgb_uint8(np.full((3, 2, 2), 0.5), "he").max() == 128
    with pytest.raises(ValueError, match="1 channel"):
        _as_rgb_uint8(np.zeros((1, 2, 2), dtype=np.uint8), "dapi")
    with pytest.raises(ValueError, match="outside 0-255"):
        _as_rgb_uint8(np.full((3, 2, 2), 4000, dtype=np.uint16), "he")
