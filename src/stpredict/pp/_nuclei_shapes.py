"""Nuclei features from a segmentation a data set ships (HEST-1k's CellViT ``cellvit_seg``) instead of from pixels.

A reader records the file in ``uns['spatial'][library_id]['metadata']['nuclei_segmentation'][name]`` (e.g.
``name='cellvit'``); ``st.pp.image_features(adata, method='nuclei', segmentation=name)`` then draws each spot's
nuclei from those polygons (those whose centroid lies in the spot's patch) into a label image at the patch's
pixel size and computes the same 14 morphology and 3 topology features (and the count) as for nuclei segmented
from the pixels, so that a model reads them the same way. The recipe records the segmentation: a model trained
on CellViT nuclei refuses features of nuclei segmented otherwise.
"""

from __future__ import annotations

import json
import zipfile
from os import PathLike
from pathlib import Path

import numpy as np
from anndata import AnnData
from scipy.spatial import cKDTree
from skimage.draw import polygon as draw_polygon

from .._constants import SEGMENTATION_KEY
from .._validate import library_ids, require_spatial, spatial_entry, spot_libraries
from ._nuclei import MORPHOLOGY, TOPOLOGY, _morphology_table, _topology
from ._patches import patch_geometry, slide_mpp


def read_nuclei_shapes(path: str | PathLike) -> list[np.ndarray]:
    """Nucleus outlines ``(k, 2)`` (x, y in WSI pixels) from GeoParquet or GeoJSON (plain or zipped).

    CellViT's GeoJSON holds one feature per cell class with a MultiPolygon of its nuclei; HEST's GeoParquet one
    row per nucleus. Multi-polygons are split into their nuclei; holes are ignored.
    """
    import shapely

    path = Path(path)
    name = path.name.lower()
    if name.endswith(".parquet"):
        import geopandas as gpd

        geometries = list(gpd.read_parquet(path).geometry)
    elif name.endswith((".geojson", ".json", ".geojson.zip", ".zip")):
        if name.endswith(".zip"):
            with zipfile.ZipFile(path) as archive:
                member = next(n for n in archive.namelist() if n.lower().endswith((".geojson", ".json")))
                document = json.loads(archive.read(member))
        else:
            document = json.loads(path.read_text())
        features = document["features"] if isinstance(document, dict) else document
        geometries = [shapely.geometry.shape(feature["geometry"]) for feature in features]
    else:
        msg = f"Nuclei segmentation {str(path)!r}: expected GeoParquet (.parquet) or GeoJSON (.geojson[.zip])."
        raise ValueError(msg)
    outlines = []
    for geometry in geometries:
        parts = getattr(geometry, "geoms", [geometry])
        outlines.extend(np.asarray(part.exterior.coords, dtype=np.float64)[:-1] for part in parts if not part.is_empty)
    return outlines


def segmentation_record(adata: AnnData, library_id: str, name: str) -> dict:
    """The recorded segmentation ``name`` of a slide, or a clear error."""
    recorded = (spatial_entry(adata, library_id) or {}).get("metadata", {}).get(SEGMENTATION_KEY, {})
    if name not in recorded:
        msg = (
            f"Slide {library_id!r} has no {name!r} nuclei segmentation (recorded: {sorted(recorded) or 'none'}). "
            "st.io.read_hest records HEST's cellvit_seg/<id>_cellvit_seg.parquet when it is there; otherwise leave "
            "segmentation=None to segment nuclei from the pixels."
        )
        raise KeyError(msg)
    return dict(recorded[name])


def nuclei_features_from_shapes(
    outlines: list[np.ndarray], centres: np.ndarray, side: int, out_side: int, mpp: float
) -> np.ndarray:
    """``(n, 18)`` nuclei features of the patches of ``side`` slide px around ``centres``, drawn at ``out_side`` px.

    ``mpp``: microns per pixel of the drawn patch. A nucleus belongs to a patch when its centroid lies in it.
    """
    out = np.zeros((len(centres), len(MORPHOLOGY) + len(TOPOLOGY) + 1), dtype=np.float32)
    side_um = out_side * mpp
    if not outlines:
        out[:, len(MORPHOLOGY) : -1] = side_um
        return out
    centroids = np.array([o.mean(axis=0) for o in outlines])
    tree = cKDTree(centroids)
    zoom = out_side / side
    for i, near in enumerate(tree.query_ball_point(centres, r=side / np.sqrt(2))):
        corner = np.rint(centres[i]) - side // 2
        inside = [j for j in near if np.all((centroids[j] >= corner) & (centroids[j] < corner + side))]
        labels = np.zeros((out_side, out_side), dtype=np.int32)
        for label, j in enumerate(inside, start=1):
            local = (outlines[j] - corner) * zoom
            rows, cols = draw_polygon(local[:, 1], local[:, 0], shape=labels.shape)
            labels[rows, cols] = label
        table, nucleus_centres = _morphology_table(labels, mpp)
        if len(table):
            out[i, : len(MORPHOLOGY)] = table.mean(axis=0)
        out[i, len(MORPHOLOGY) : -1] = _topology(nucleus_centres * mpp, side_um)
        out[i, -1] = len(table)
    return out


def segmentation_nuclei_features(
    adata: AnnData, name: str, *, size: float, unit: str, target_mpp: float | None, library_key: str
) -> np.ndarray:
    """Nuclei features of every spot from each slide's recorded segmentation ``name`` (one slide at a time)."""
    features = np.zeros((adata.n_obs, len(MORPHOLOGY) + len(TOPOLOGY) + 1), dtype=np.float32)
    centres_all, slides = require_spatial(adata), spot_libraries(adata, library_key)
    for library_id in library_ids(adata, library_key):
        record = segmentation_record(adata, library_id, name)
        rows = np.flatnonzero(slides == library_id)
        side, out_side = patch_geometry(adata, library_id, size, unit, target_mpp)
        mpp = target_mpp if target_mpp is not None else slide_mpp(adata, library_id)
        if mpp is None:
            msg = f"Nuclei features need the scan resolution: slide {library_id!r} has no microns_per_pixel."
            raise KeyError(msg)
        outlines = read_nuclei_shapes(record["path"])
        features[rows] = nuclei_features_from_shapes(outlines, centres_all[rows], side, out_side, mpp)
    return features
