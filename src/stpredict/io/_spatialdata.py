"""Reader for SpatialData objects (e.g. from ``spatialdata_io.visium``) into stpredict's AnnData layout.

The spots are the shapes (circles or polygons) that the table annotates; their centres are mapped into
the pixel grid of the chosen H&E image through SpatialData's coordinate transformations. The image itself
is not copied into the AnnData: only a downscaled ``hires`` copy is, and, when the SpatialData object is
backed by a Zarr store, a reference that :func:`stpredict.io.load_slide_image` follows to read the
full-resolution image lazily, one slide at a time.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from PIL import Image

from .._constants import (
    GRID_KEY,
    MICRONS_PER_PIXEL,
    SOURCE_IMAGE_KEY,
    SPATIAL_KEY,
    SPATIALDATA_IMAGE_KEY,
    SPATIALDATA_STORE_KEY,
    SPOT_SHAPE_KEY,
)
from .._logging import logger, warn
from ._image import HIRES_MAX_SIDE, hires_size, image_size, require_spots_inside
from ._slide import make_genes_unique, mark_slide
from ._spatialdata_image import _as_rgb_uint8, _image_scales

if TYPE_CHECKING:
    from spatialdata import SpatialData


def _one_of(names: list[str], chosen: str | None, what: str, argument: str) -> str:
    """``chosen`` if it names an element, the only element when ``chosen`` is None, else a clear error."""
    if chosen is not None:
        if chosen not in names:
            msg = f"SpatialData has no {what} {chosen!r}; it has {names}."
            raise KeyError(msg)
        return chosen
    if len(names) == 1:
        return names[0]
    msg = f"SpatialData has {len(names)} {what}s {names}; choose one with `{argument}=`."
    raise ValueError(msg)


def _square_bins(geometry) -> bool:
    """Whether every polygon is an axis-aligned square (its area fills its bounding box, equal sides).

    Visium HD bins as ``spatialdata_io.visium_hd`` writes them (``bins_as_squares=True``).
    """
    if not (geometry.geom_type == "Polygon").all():
        return False
    bounds = geometry.bounds
    width, height = (bounds["maxx"] - bounds["minx"]).to_numpy(), (bounds["maxy"] - bounds["miny"]).to_numpy()
    area = geometry.area.to_numpy(float)
    return bool(np.allclose(area, width * height, rtol=1e-3) and np.allclose(width, height, rtol=1e-3))


def _spot_centres(
    sdata: SpatialData, shapes_key: str, image_key: str, instances: np.ndarray
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Centres ``(n, 2)`` of the annotated shapes in the image's full-resolution pixels, and their sizes.

    Returns the centres, the diameters (a square's side) and whether the shapes are square bins.
    """
    from spatialdata.transformations import get_transformation_between_coordinate_systems

    shapes = sdata.shapes[shapes_key]
    missing = pd.Index(instances).difference(shapes.index)
    if len(missing):
        msg = (
            f"The table annotates {len(missing)} instance(s) absent from shapes {shapes_key!r} "
            f"(e.g. {missing[:3].tolist()}); the table and the shapes do not match."
        )
        raise ValueError(msg)
    geometry = shapes.geometry.loc[instances]
    if (geometry.geom_type == "Point").all():
        xy = np.column_stack([geometry.x.to_numpy(), geometry.y.to_numpy()])
        diameter = (
            2 * shapes["radius"].loc[instances].to_numpy(float) if "radius" in shapes else np.full(len(xy), np.nan)
        )
        square = False
    else:
        centroids = geometry.centroid
        xy = np.column_stack([centroids.x.to_numpy(), centroids.y.to_numpy()])
        square = _square_bins(geometry)
        area = geometry.area.to_numpy(float)
        # a square bin's side; other polygons: the diameter of the circle with the same area
        diameter = np.sqrt(area) if square else 2 * np.sqrt(area / np.pi)
    try:
        transform = get_transformation_between_coordinate_systems(sdata, shapes, sdata.images[image_key])
    except Exception as err:  # no path between the two elements' coordinate systems
        msg = (
            f"Shapes {shapes_key!r} and image {image_key!r} share no coordinate system, so spots cannot be placed "
            f"on the image ({err}). Give both a transformation to a common coordinate system."
        )
        raise ValueError(msg) from err
    affine = np.asarray(transform.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y")), dtype=float)
    centres = xy @ affine[:2, :2].T + affine[:2, 2]
    return centres, diameter * np.sqrt(abs(np.linalg.det(affine[:2, :2]))), square


def _downscaled(scales: list, image_key: str, max_side: int) -> tuple[np.ndarray, float]:
    """An RGB copy of at most ``max_side`` px on its longer side, read from the coarsest sufficient level."""
    full_height, full_width = scales[0].shape[-2:]
    target = hires_size(full_width, full_height, max_side)
    level = scales[0]
    for candidate in scales:  # finest first: keep the coarsest level still at least the target size
        if candidate.shape[-1] >= target[0] and candidate.shape[-2] >= target[1]:
            level = candidate
    pixels = _as_rgb_uint8(np.asarray(level.data), image_key)
    small = np.asarray(Image.fromarray(pixels).resize(target, Image.Resampling.LANCZOS))
    return small, target[0] / full_width


def read_spatialdata(
    sdata: SpatialData | str | PathLike,
    *,
    table_key: str | None = None,
    image_key: str | None = None,
    region: str | None = None,
    library_id: str | None = None,
    patient: str | None = None,
    source_image_path: str | PathLike | None = None,
    microns_per_pixel: float | None = None,
    spot_diameter_um: float | None = None,
    grid: Literal["square", "hex"] | None = None,
) -> AnnData:
    """Bring a SpatialData slide (a table annotating spot shapes, and an H&E image) into stpredict's layout.

    Spot centres are taken as the shapes' centres mapped into the image's full-resolution pixels by
    SpatialData's transformations, as they are (no half-pixel shift: the same numbers ``sc.read_visium`` and
    ``spatialdata_io``'s ``to_legacy_anndata`` give). The full-resolution image stays where it is: when
    ``sdata`` is a Zarr store (or backed by one), patch extraction reads it from there, one slide at a time;
    otherwise give ``source_image_path`` (e.g. the TIFF given to Space Ranger) or patches are cut from the
    downscaled ``hires`` copy, with a warning.

    Parameters
    ----------
    sdata
        A :class:`spatialdata.SpatialData` object or the path of its Zarr store.
    table_key
        Table holding the spots' expression (``sdata.tables[table_key]``); required when there are several.
    image_key
        Image element with the H&E stain; required when there are several (pick the full-resolution one).
    region
        Shapes element with the spots, when the table annotates several.
    library_id
        Name of the slide; defaults to the name of the spots' shapes element (``spatialdata_io`` names it
        after the data set).
    patient
        Individual the slide comes from (cross-validation splits group by it).
    source_image_path
        Full-resolution image file to read patches from instead of the SpatialData image.
    microns_per_pixel
        Image resolution; else derived from ``spot_diameter_um`` and the spots' diameter in pixels.
    spot_diameter_um
        Physical spot diameter (Visium: 55, legacy ST: 100) used to derive ``microns_per_pixel``.
    grid
        Spot array layout (``'hex'`` for Visium, ``'square'`` for legacy ST) recorded for smoothing; inferred
        from ``array_row``/``array_col`` when not given.

    Returns
    -------
    AnnData as from :func:`stpredict.io.read_st`: the table's ``X`` (also in ``layers['counts']`` when it
    holds counts), ``obsm['spatial']`` in full-resolution pixels, ``obs['library_id']``, ``obs['patient']``,
    and ``uns['spatial'][library_id]`` with a ``hires`` image, scale factors and the image reference.

    Examples
    --------
    A SpatialData object made from a bundled section (``spatialdata_io.visium`` gives one like it):

    >>> import numpy as np, spatialdata as sd, stpredict as st
    >>> from spatialdata.models import Image2DModel, ShapesModel, TableModel
    >>> crop = st.datasets.her2st_crop()
    >>> c3 = crop[crop.obs["library_id"] == "C3"].copy()
    >>> image, _ = st.io.load_slide_image(c3, "C3")
    >>> table = c3.copy()
    >>> table.obs = table.obs[[]].assign(region="spots", spot=np.arange(c3.n_obs))
    >>> table.obs["region"] = table.obs["region"].astype("category")
    >>> sdata = sd.SpatialData(
    ...     images={"he": Image2DModel.parse(image.transpose(2, 0, 1), dims=("c", "y", "x"))},
    ...     shapes={"spots": ShapesModel.parse(c3.obsm["spatial"], geometry=0, radius=np.full(c3.n_obs, 73.0))},
    ...     tables={"table": TableModel.parse(table, region="spots", region_key="region", instance_key="spot")},
    ... )
    >>> adata = st.io.read_spatialdata(sdata, spot_diameter_um=100, patient="C", library_id="C3")
    >>> adata.n_obs, round(adata.uns["spatial"]["C3"]["scalefactors"]["microns_per_pixel"], 2)
    (71, 0.68)

    From a Zarr store, whose full-resolution image is then read when patches are cut:

    >>> adata = st.io.read_spatialdata("visium.zarr", image_key="he_full_image", spot_diameter_um=55,
    ...                               patient="P1")  # doctest: +SKIP
    """
    import spatialdata as sd

    if isinstance(sdata, str | PathLike):
        store = Path(sdata)
        if not store.exists():
            msg = f"SpatialData store {str(store)!r} does not exist."
            raise FileNotFoundError(msg)
        sdata = sd.read_zarr(store)
    if not isinstance(sdata, sd.SpatialData):
        msg = f"`sdata` must be a SpatialData object or the path of its Zarr store, got {type(sdata).__name__}."
        raise TypeError(msg)
    table_key = _one_of(list(sdata.tables), table_key, "table", "table_key")
    table = sdata.tables[table_key]
    attrs = table.uns.get("spatialdata_attrs")
    if not attrs:
        msg = f"Table {table_key!r} annotates no element (no uns['spatialdata_attrs']); parse it with TableModel."
        raise ValueError(msg)
    regions = [attrs["region"]] if isinstance(attrs["region"], str) else list(attrs["region"])
    region = _one_of(regions, region, "annotated region", "region")
    if region not in sdata.shapes:
        msg = f"Table {table_key!r} annotates {region!r}, which is not a shapes element (spots must be circles or polygons)."
        raise ValueError(msg)
    image_key = _one_of(list(sdata.images), image_key, "image", "image_key")
    library_id = str(library_id or region)

    rows = (table.obs[attrs["region_key"]].astype(str) == region).to_numpy()
    table = table[rows]
    centres, diameters, square = _spot_centres(sdata, region, image_key, table.obs[attrs["instance_key"]].to_numpy())
    scales = _image_scales(sdata.images[image_key])
    height, width = scales[0].shape[-2:]
    if source_image_path is not None:
        width, height = image_size(source_image_path)
    require_spots_inside(
        centres,
        width,
        height,
        library_id,
        table.obs_names,
        "fall outside",
        f"Is {image_key!r} the image the spots were registered to?",
        image_name=f" {image_key!r}",
    )

    matrix = sp.csr_matrix(table.X, dtype=np.float32)
    is_counts = matrix.nnz == 0 or (matrix.data.min() >= 0 and np.all(matrix.data == np.round(matrix.data)))
    adata = AnnData(X=matrix, obs=table.obs.drop(columns=[attrs["region_key"]]).copy(), var=table.var.copy())
    make_genes_unique(adata, library_id)
    if not is_counts:
        warn(f"slide {library_id!r}: table {table_key!r} does not hold raw counts; layers['counts'] is not set.")
    mark_slide(adata, library_id, patient, counts=matrix if is_counts else None)
    adata.obsm[SPATIAL_KEY] = centres

    diameter_px = float(np.nanmedian(diameters)) if np.isfinite(diameters).any() else float("nan")
    if microns_per_pixel is None:
        microns_per_pixel = spot_diameter_um / diameter_px if spot_diameter_um and np.isfinite(diameter_px) else np.nan
        if not np.isfinite(microns_per_pixel):
            logger.info(
                "slide %s: microns per pixel unknown (pass microns_per_pixel= or spot_diameter_um=)", library_id
            )
    hires, hires_scale = _downscaled(scales, image_key, HIRES_MAX_SIDE)
    metadata = {"technology": "SpatialData", SPATIALDATA_IMAGE_KEY: image_key}
    if sdata.path is not None:
        metadata[SPATIALDATA_STORE_KEY] = str(Path(sdata.path).resolve())
    if source_image_path is not None:
        metadata[SOURCE_IMAGE_KEY] = str(Path(source_image_path).resolve())
    if grid is not None:
        metadata[GRID_KEY] = grid
    if square:  # Visium HD bins: square markers and exports of the bin's side
        metadata[SPOT_SHAPE_KEY] = "square"
        metadata.setdefault(GRID_KEY, "square")
    adata.uns[SPATIAL_KEY] = {
        library_id: {
            "images": {"hires": hires},
            "scalefactors": {
                "tissue_hires_scalef": float(hires_scale),
                "spot_diameter_fullres": diameter_px,
                MICRONS_PER_PIXEL: float(microns_per_pixel),
            },
            "metadata": metadata,
        }
    }
    if sdata.path is None and source_image_path is None:
        warn(
            f"slide {library_id!r}: the SpatialData object is not backed by a Zarr store and no source_image_path "
            f"was given, so patches will be cut from the {max(hires.shape[:2])} px hires copy. Write it with "
            "sdata.write(path) and read that path."
        )
    logger.info("read SpatialData slide %s: %d spots x %d genes", library_id, adata.n_obs, adata.n_vars)
    return adata
