"""Nuclei features from a shipped segmentation (HEST-1k's CellViT cellvit_seg) instead of the pixels."""

import json
import shutil
import zipfile

import geopandas as gpd
import numpy as np
import pytest
import shapely
from helpers import write_hest_sample

import stpredict as st
from stpredict.pp._nuclei import MORPHOLOGY
from stpredict.pp._nuclei_shapes import nuclei_features_from_shapes, read_nuclei_shapes

AREA, COUNT = 0, -1  # columns of the nuclei features


def square(x, y, side):
    return shapely.geometry.box(x, y, x + side, y + side)


def test_features_of_drawn_nuclei_measure_what_was_drawn():
    # a 100 px patch at 0.5 µm/px around (200, 200): two 20 px (10 µm) squares inside, one outside
    outlines = [np.asarray(square(*xy, 20).exterior.coords)[:-1] for xy in ((160, 160), (210, 200), (400, 400))]
    features = nuclei_features_from_shapes(outlines, np.array([[200.0, 200.0]]), side=100, out_side=100, mpp=0.5)
    assert features[0, COUNT] == 2
    assert features[0, AREA] == pytest.approx(100, rel=0.25)  # 10 x 10 µm (drawn on the pixel grid)
    halved = nuclei_features_from_shapes(outlines, np.array([[200.0, 200.0]]), side=100, out_side=50, mpp=1.0)
    assert halved[0, COUNT] == 2 and halved[0, AREA] == pytest.approx(100, rel=0.3)  # same µm at another pixel size
    empty = nuclei_features_from_shapes(outlines, np.array([[900.0, 900.0]]), side=100, out_side=100, mpp=0.5)
    assert empty[0, COUNT] == 0 and not empty[0, : len(MORPHOLOGY)].any()


def test_cellvit_geojson_and_geoparquet_read_the_same_nuclei(tmp_path):
    nuclei = [square(0, 0, 5), square(10, 0, 5), square(30, 30, 8)]
    # CellViT's GeoJSON: one feature per class holding a MultiPolygon of its nuclei (here zipped, as HEST ships it)
    features = [
        {"type": "Feature", "geometry": shapely.geometry.mapping(shapely.MultiPolygon(nuclei[:2])),
         "properties": {"classification": {"name": "Neoplastic"}}},
        {"type": "Feature", "geometry": shapely.geometry.mapping(nuclei[2]),
         "properties": {"classification": {"name": "Inflammatory"}}},
    ]  # fmt: skip
    with zipfile.ZipFile(tmp_path / "a_cellvit_seg.geojson.zip", "w") as archive:
        archive.writestr("a_cellvit_seg.geojson", json.dumps(features))
    gpd.GeoDataFrame(geometry=nuclei).to_parquet(tmp_path / "a_cellvit_seg.parquet")
    from_json = read_nuclei_shapes(tmp_path / "a_cellvit_seg.geojson.zip")
    from_parquet = read_nuclei_shapes(tmp_path / "a_cellvit_seg.parquet")
    assert len(from_json) == len(from_parquet) == 3
    for a, b in zip(from_json, from_parquet, strict=True):
        np.testing.assert_allclose(a, b)
    with pytest.raises(ValueError, match="GeoParquet"):
        read_nuclei_shapes(tmp_path / "a.csv")


def test_a_hest_sample_with_cellvit_nuclei_trains_a_model_that_refuses_pixel_nuclei(tmp_path, monkeypatch):
    root = tmp_path / "hest"
    write_hest_sample(root, "SPA_C3", "C3", "C")
    pixels = st.io.read_hest(root, "SPA_C3")
    # nuclei as CellViT would outline them: the pixel segmentation's nuclei of every spot's patch, as polygons
    patches = st.pp.extract_patches(pixels, size=120, unit="px")
    outlines = []
    for centre, patch in zip(pixels.obsm["spatial"], patches, strict=True):
        labels = st.pp.segment_nuclei(patch, 0.685)
        for label in np.unique(labels)[1:]:
            rows, cols = np.nonzero(labels == label)
            outlines.append(shapely.MultiPoint(np.column_stack([cols, rows]) + np.rint(centre) - 60).convex_hull)
    (root / "cellvit_seg").mkdir()
    gpd.GeoDataFrame(geometry=[o for o in outlines if o.geom_type == "Polygon"]).to_parquet(
        root / "cellvit_seg" / "SPA_C3_cellvit_seg.parquet"
    )
    adata = st.io.read_hest(root, "SPA_C3")
    st.pp.normalize(adata)
    st.pp.image_features(adata, method="nuclei", size=120, segmentation="cellvit", show_progress_bar=False)
    from_cellvit = adata.obsm["X_nuclei"]
    from_pixels = st.pp.image_features(pixels, method="nuclei", size=120, copy=True, show_progress_bar=False)
    from_pixels = from_pixels.obsm["X_nuclei"]
    assert np.corrcoef(from_cellvit[:, COUNT], from_pixels[:, COUNT])[0, 1] > 0.9  # the same nuclei, outlined
    assert adata.uns["stpredict_features"]["X_nuclei"]["segmentation"] == "cellvit"
    predictor = st.tl.fit(adata, genes=["ERBB2"], use_rep="X_nuclei")
    other = adata.copy()
    st.pp.image_features(other, method="nuclei", size=120, show_progress_bar=False)  # pixel nuclei
    with pytest.raises(ValueError, match="segmentation: slide None vs model 'cellvit'"):
        predictor.predict(other)
    del other.obsm["X_nuclei"]  # predict recomputes them as the model was trained: from the CellViT nuclei
    np.testing.assert_allclose(predictor.representation(other), from_cellvit, rtol=1e-6)

    def no_pixels(*args, **kwargs):
        raise AssertionError("nuclei were segmented from the pixels")

    monkeypatch.setattr(st.pp._nuclei, "segment_nuclei", no_pixels)
    for size in (120, 100):  # stored with its recipe, or drawn anew from the CellViT outlines
        params = {"nuclei_segmentation": "cellvit", "patch_size": size, "max_epochs": 1, "go_prior": False}
        st.tl.fit(adata, model="m2tglgo", genes=["ERBB2", "GNAS"], model_params=params)
    shutil.rmtree(root / "cellvit_seg")
    with pytest.raises(KeyError, match="no 'cellvit' nuclei segmentation"):
        st.pp.image_features(st.io.read_hest(root, "SPA_C3"), method="nuclei", segmentation="cellvit")
