"""Export of slides and their predictions to SpatialData (for napari-spatialdata and spatialdata-plot)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from anndata import AnnData

from .._constants import LIBRARY_KEY, MICRONS_PER_PIXEL, SPOT_SHAPE_KEY
from .._validate import check_adata, library_ids, require_spatial, spatial_entry, spot_libraries
from ._image import open_slide_image

if TYPE_CHECKING:
    from spatialdata import SpatialData

REGION_KEY = "region"
INSTANCE_KEY = "spot_index"
CHUNK = 4096  # pixels per side of the lazily read image chunks


def _square_bins(centres: np.ndarray, side: float):
    """Visium HD bins as axis-aligned square polygons ``side`` pixels wide (a ShapesModel GeoDataFrame)."""
    import geopandas as gpd
    import shapely
    from spatialdata.models import ShapesModel

    half = side / 2
    boxes = shapely.box(centres[:, 0] - half, centres[:, 1] - half, centres[:, 0] + half, centres[:, 1] + half)
    return ShapesModel.parse(gpd.GeoDataFrame(geometry=boxes, index=pd.RangeIndex(len(centres))))


def _polygons(outlines: np.ndarray):
    """Cells as polygons from their outlines ``(n, points, 2)`` (full-resolution px), a ShapesModel GeoDataFrame."""
    import geopandas as gpd
    import shapely
    from spatialdata.models import ShapesModel

    shapes = shapely.polygons(np.concatenate([outlines, outlines[:, :1]], axis=1))
    return ShapesModel.parse(gpd.GeoDataFrame(geometry=shapes, index=pd.RangeIndex(len(outlines))))


def _lazy_image(image) -> object:
    """``(3, y, x)`` dask array of a slide image; whole-slide images are read chunk by chunk on demand."""
    import dask.array as da
    from dask import delayed

    if isinstance(image, np.ndarray):
        return da.from_array(np.moveaxis(image[..., :3], -1, 0), chunks=(3, CHUNK, CHUNK))
    height, width = image.shape[:2]
    rows = []
    for y0 in range(0, height, CHUNK):
        row = []
        for x0 in range(0, width, CHUNK):
            h, w = min(CHUNK, height - y0), min(CHUNK, width - x0)
            block = delayed(lambda x, y, w_, h_: np.moveaxis(image.read(x, y, w_, h_), -1, 0))(x0, y0, w, h)
            row.append(da.from_delayed(block, shape=(3, h, w), dtype=np.uint8))
        rows.append(da.concatenate(row, axis=2))
    return da.concatenate(rows, axis=1)


def _table(adata: AnnData, spots: AnnData, key: str | None, region: str) -> AnnData:
    """The table annotating a slide's spots: its genes (and prediction layers), or predictions as genes."""
    if spots.n_vars == 0 and key is not None:
        if key not in spots.obsm:
            msg = f"adata.obsm[{key!r}] not found; predictions of image-only slides are written there by predict."
            raise KeyError(msg)
        frame = spots.obsm[key]
        table = AnnData(
            X=frame.to_numpy(dtype=np.float32),
            obs=spots.obs.copy(),
            var=pd.DataFrame(index=pd.Index(frame.columns.astype(str))),
        )
        table.layers[key] = table.X.copy()
    else:
        table = AnnData(X=spots.X, obs=spots.obs.copy(), var=spots.var.copy(), layers=dict(spots.layers))
        for name, value in spots.obsm.items():
            if isinstance(value, pd.DataFrame):
                table.obsm[name] = value
    table.obs[REGION_KEY] = pd.Categorical([region] * table.n_obs)
    table.obs[INSTANCE_KEY] = np.arange(table.n_obs)
    table.uns.update({k: v for k, v in adata.uns.items() if k.startswith("pred") and isinstance(v, dict)})
    return table


def to_spatialdata(adata: AnnData, *, key: str | None = None, library_id: str | None = None) -> SpatialData:
    """One slide as a SpatialData object: its H&E image, its spots as circles and a table with predictions.

    The image is a lazy multiscale element (whole-slide images are read chunk by chunk only when something
    draws or writes them), the spots are circles of the slide's spot diameter at their full-resolution
    positions (Visium HD bins and super-resolved bins: squares of the bin's side; super-resolved cells: their
    nucleus outlines), and the table annotates them: measured genes and prediction layers, or, for slides without
    genes, the predictions of ``obsm[key]`` as its expression. Open it with ``napari-spatialdata`` or
    ``spatialdata-plot``, or write it to Zarr with ``sdata.write(path)``.

    Parameters
    ----------
    adata
        Slides in stpredict's layout (e.g. from :func:`read_wsi` after ``predict``).
    key
        ``obsm`` key of the predictions of an image-only slide (e.g. ``'pred_ridge'``).
    library_id
        Slide to export (default: the only one).

    Returns
    -------
    A :class:`spatialdata.SpatialData` with elements ``'{library_id}_image'``, ``'{library_id}_spots'`` and
    ``'table'``, all in the ``'global'`` coordinate system of full-resolution pixels.

    Examples
    --------
    >>> import stpredict as st
    >>> adata = st.datasets.her2st_crop()
    >>> c3 = adata[adata.obs.library_id == "C3"].copy()
    >>> sdata = st.io.to_spatialdata(c3)
    >>> sorted(sdata.images), sorted(sdata.shapes), sdata.tables["table"].n_obs
    (['C3_image'], ['C3_spots'], 71)
    """
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel, ShapesModel, TableModel

    check_adata(adata)
    slides = library_ids(adata)
    if library_id is None:
        if len(slides) != 1:
            msg = f"adata has {len(slides)} slides {slides}; choose one with library_id=."
            raise ValueError(msg)
        library_id = slides[0]
    mask = spot_libraries(adata, LIBRARY_KEY) == library_id
    if not mask.any():
        msg = f"Slide {library_id!r} not in adata.obs[{LIBRARY_KEY!r}] (slides: {slides})."
        raise KeyError(msg)
    spots = adata[mask].copy()
    scalefactors = (spatial_entry(adata, library_id) or {}).get("scalefactors", {})
    diameter = float(scalefactors.get("spot_diameter_fullres", np.nan))
    if not np.isfinite(diameter):
        msg = f"Slide {library_id!r} records no scalefactors['spot_diameter_fullres']: the spot shapes need it."
        raise KeyError(msg)

    image, scale = open_slide_image(adata, library_id)
    if scale != 1.0:
        msg = f"Slide {library_id!r}: its full-resolution image is not available; the export needs it."
        raise FileNotFoundError(msg)
    pixels = _lazy_image(image)
    n_levels = max(0, int(math.log2(max(pixels.shape[1:]) / 1024)))  # coarsest level about 1000 px
    image_element = Image2DModel.parse(
        pixels, dims=("c", "y", "x"), scale_factors=[2] * n_levels or None, c_coords=["r", "g", "b"]
    )
    region = f"{library_id}_spots"
    centres = require_spatial(spots)
    square = (spatial_entry(adata, library_id) or {}).get("metadata", {}).get(SPOT_SHAPE_KEY) == "square"
    if "outline" in spots.obsm:  # cells of st.tl.super_resolve(..., cells=True): their nucleus outlines
        shapes = _polygons(np.asarray(spots.obsm["outline"], dtype=np.float64))
    elif square:
        shapes = _square_bins(centres, diameter)
    else:
        shapes = ShapesModel.parse(
            centres, geometry=0, radius=np.full(len(centres), diameter / 2), index=pd.RangeIndex(len(centres))
        )
    table = TableModel.parse(
        _table(adata, spots, key, region), region=region, region_key=REGION_KEY, instance_key=INSTANCE_KEY
    )
    table.uns["stpredict"] = {"library_id": library_id, MICRONS_PER_PIXEL: scalefactors.get(MICRONS_PER_PIXEL)}
    return SpatialData(images={f"{library_id}_image": image_element}, shapes={region: shapes}, tables={"table": table})
