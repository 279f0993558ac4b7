"""``st.tl.super_resolve``: expression per square bin (e.g. 8 µm) of an H&E slide, from a model trained on spots.

The slide is read tile by tile (a whole-slide image is never held), each tile's bins get the model's
features and predictions, and bins mostly off the tissue are dropped. Values are *spot-equivalent*: a bin's
value is what a spot made only of such tissue would measure, on the training target's scale (e.g. log1p), so
bins and spots share a colour scale and the (linear) mean of a spot's bins is the model's spot prediction.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from anndata import AnnData
from tqdm.auto import tqdm

from .._constants import LIBRARY_KEY, SPATIAL_KEY, SPOT_SHAPE_KEY
from .._logging import logger
from .._validate import check_adata, library_ids, require_spatial, spatial_entry, spot_libraries
from ..io._image import open_slide_image
from ..models import Predictor
from ..models._subspot import SubSpotModel, super_resolving_models
from ..pp._dense import TISSUE_CHANNEL, BinGrid, block_mean, iter_tiles, slide_bin_side, tile_features
from ..pp._patches import slide_mpp
from ._super_resolve_cells import predict_cells

#: bins per tile side when reading a slide (the model's bins): a tile's image is ~tile * px_per_bin px wide
TILE_BINS = 128


def _check_predictor(predictor: Predictor) -> SubSpotModel:
    if not isinstance(predictor, Predictor):
        msg = f"`predictor` must come from st.tl.fit or st.tl.load_model, got {type(predictor).__name__}."
        raise TypeError(msg)
    if not isinstance(predictor.model, SubSpotModel):
        msg = (
            f"Model {predictor.model_name!r} predicts whole spots only and cannot super-resolve. Fit a model that "
            f"predicts below the spot: {super_resolving_models()} (e.g. st.tl.fit(adata, model='istar'))."
        )
        raise ValueError(msg)
    return predictor.model


def _bin_factor(bin_um: float | None, model_bin_um: float) -> int:
    """Model bins per output bin side: output bins must be whole blocks of the model's bins."""
    if bin_um is None:
        return 1
    factor = float(bin_um) / model_bin_um
    if not np.isfinite(factor) or factor < 1 - 1e-6 or abs(factor - round(factor)) > 1e-6:
        msg = (
            f"bin_um={bin_um!r}: this model predicts bins of {model_bin_um:g} µm, so output bins must be a whole "
            f"multiple of it ({model_bin_um:g}, {2 * model_bin_um:g}, {4 * model_bin_um:g} µm ...). For finer bins, "
            f"train with model_params={{'bin_um': ...}}."
        )
        raise ValueError(msg)
    return int(round(factor))


def _slide(adata: AnnData, library_id: str | None) -> str:
    slides = library_ids(adata)
    if library_id is None:
        if len(slides) != 1:
            msg = f"adata holds {len(slides)} slides {slides[:5]}: pass library_id= (one slide at a time)."
            raise ValueError(msg)
        return slides[0]
    if str(library_id) not in slides and spatial_entry(adata, str(library_id)) is None:
        msg = f"library_id={library_id!r} is not a slide of adata (slides: {slides[:5]})."
        raise KeyError(msg)
    return str(library_id)


def _row_col_range(region, side: float, width: int, height: int, library_id: str, origin) -> tuple[tuple, tuple]:
    """Output-bin rows and columns covering ``region`` (full-resolution px), checked against the image."""
    if region is None:
        x0, y0, x1, y1 = 0.0, 0.0, float(width), float(height)
    else:
        values = np.asarray(region, dtype=np.float64).ravel()
        if values.shape != (4,) or not np.isfinite(values).all() or values[2] <= values[0] or values[3] <= values[1]:
            msg = f"region must be (x0, y0, x1, y1) in full-resolution pixels with x0 < x1 and y0 < y1, got {region!r}."
            raise ValueError(msg)
        x0, y0, x1, y1 = values
        if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
            msg = (
                f"region {tuple(float(v) for v in values)} lies off the {width} x {height} px image of slide "
                f"{library_id!r}: give (x0, y0, x1, y1) in full-resolution pixels (obsm['spatial'] units)."
            )
            raise ValueError(msg)
        x0, y0, x1, y1 = max(x0, 0.0), max(y0, 0.0), min(x1, width), min(y1, height)
    ox, oy = origin
    rows = (max(0, int(math.floor((y0 - oy) / side))), int(math.ceil((y1 - oy) / side)))
    cols = (max(0, int(math.floor((x0 - ox) / side))), int(math.ceil((x1 - ox) / side)))
    return rows, cols


def _origin(adata: AnnData, library_id: str, origin, side: float) -> tuple[float, float]:
    """The output grid's origin within its first bin.

    Given, else a square-bin slide's own bins (e.g. Visium HD) when they have the output's size, else the image's.
    """
    if origin is None:
        entry = spatial_entry(adata, library_id) or {}
        diameter = entry.get("scalefactors", {}).get("spot_diameter_fullres")
        square = entry.get("metadata", {}).get(SPOT_SHAPE_KEY) == "square"
        if not (square and diameter and abs(float(diameter) - side) < 0.01 * side):
            return 0.0, 0.0
        first = np.asarray(adata.obsm[SPATIAL_KEY])[spot_libraries(adata) == library_id][0]
        origin = first - side / 2
        logger.info("super_resolve: bins aligned with the slide's own %.1f px square bins", side)
    values = np.asarray(origin, dtype=np.float64).ravel()
    if values.shape != (2,) or not np.isfinite(values).all():
        msg = f"origin must be (x, y) in full-resolution pixels (a corner of one output bin), got {origin!r}."
        raise ValueError(msg)
    return float(values[0] % side), float(values[1] % side)


def _require_image_entry(adata: AnnData, library_id: str) -> None:
    if spatial_entry(adata, library_id) is None:
        msg = (
            f"Slide {library_id!r} has no image: adata.uns['spatial'][{library_id!r}] is missing. Read it with st.io "
            "(read_wsi for an H&E slide alone), which records the image."
        )
        raise KeyError(msg)


def super_resolve(
    predictor: Predictor,
    adata: AnnData,
    *,
    bin_um: float | None = None,
    region: Sequence[float] | None = None,
    library_id: str | None = None,
    cells: bool = False,
    genes: Sequence[str] | None = None,
    origin: Sequence[float] | None = None,
    anchor: Predictor | None = None,
    min_tissue: float = 0.5,
    key_added: str = "super_resolution",
    show_progress_bar: bool = False,
) -> AnnData:
    """Predict expression per square bin of a slide's H&E with a model trained on spots.

    Parameters
    ----------
    predictor
        A fitted model that predicts below the spot (``st.tl.fit(..., model='istar')``).
    adata
        The slide (spots with or without expression, or ``st.io.read_wsi``'s virtual spots): only its image
        and pixel size are read. Never modified.
    bin_um
        Side of the output bins in µm: the model's bin (default, e.g. 8 µm) or a whole multiple of it (the
        mean of the model's bins inside).
    region
        ``(x0, y0, x1, y1)`` in full-resolution pixels (``obsm['spatial']`` units); default the whole image.
    library_id
        The slide, when ``adata`` holds several.
    cells
        One observation per nucleus instead of per bin: nuclei are segmented tile by tile
        (:func:`stpredict.pp.segment_nuclei`) and each gets the area-weighted mean of the model's bins under it
        (in linear units), with its centroid in ``obsm['spatial']``, its outline (16 points, full-resolution px)
        in ``obsm['outline']`` and ``obs['area_um2']``.
    genes
        A subset of the predictor's genes (default all).
    origin
        ``(x, y)``: a corner of one output bin (full-resolution px). Default: the slide's own square bins when
        they have the output's size (a Visium HD run read with ``st.io.read_visium_hd``: predictions land on its
        bins), else the image origin.
    anchor
        A spot-level model (any, e.g. ``ridge`` or an ensemble) whose spot predictions the bins keep: each bin's
        linear value is scaled by the ratio of the anchor's spot prediction to ``predictor``'s own, carried from
        ``adata``'s spots with Gaussian weights a quarter of their pitch wide, so the bins inside a spot average
        to the anchor's prediction closely while ``predictor`` places the expression within the spot. Uses
        ``adata``'s observations as the spots (e.g. ``st.io.read_wsi``'s virtual spots).
    min_tissue
        Bins with a smaller fraction of tissue (non-white) pixels are left out.
    key_added
        ``uns`` key of the run's parameters in the returned AnnData.
    show_progress_bar
        A bar over the slide's tiles.

    Returns
    -------
    A new AnnData, one observation per bin on the tissue: ``X`` the predicted values (float32, the training
    target's scale, spot-equivalent), ``obs`` ``array_row``/``array_col`` (the bin on the slide's grid),
    ``library_id``, ``tissue_fraction``; ``obsm['spatial']`` the bin centres (full-resolution px);
    ``uns['spatial']`` the slide's image with ``spot_diameter_fullres`` the bin side and square spots (so
    ``sc.pl.spatial`` and ``squidpy`` draw bins); ``uns[key_added]`` the model, bin geometry and region.

    Examples
    --------
    >>> import stpredict as st
    >>> adata = st.datasets.her2st_crop()
    >>> st.pp.normalize(adata)
    >>> train = adata[adata.obs.library_id != "C4"].copy()
    >>> predictor = st.tl.fit(train, model="istar", genes=["ERBB2", "GNAS"], model_params={"max_epochs": 2})
    >>> bins = st.tl.super_resolve(predictor, adata[adata.obs.library_id == "C4"].copy(), region=(800, 800, 1200, 1100))
    >>> bins.var_names.tolist(), bins.uns["super_resolution"]["bin_um"]
    (['ERBB2', 'GNAS'], 8.0)
    """
    started = time.perf_counter()
    model = _check_predictor(predictor)
    check_adata(adata)
    if not 0 <= float(min_tissue) <= 1:
        msg = f"min_tissue must be a fraction in [0, 1], got {min_tissue!r}."
        raise ValueError(msg)
    if not cells and not model.predicts_bins:
        msg = (
            f"Model {predictor.model_name!r} predicts segmented cells, not square bins: pass cells=True, or fit a "
            f"model that predicts bins ({[m for m in super_resolving_models() if m != predictor.model_name]})."
        )
        raise ValueError(msg)
    if cells and bin_um is not None:
        msg = "bin_um sets the size of output bins; with cells=True every nucleus is an observation: drop bin_um."
        raise ValueError(msg)
    columns = _gene_columns(predictor, genes)
    genes_out = [predictor.genes[i] for i in columns]
    if anchor is not None:
        _check_anchor(predictor, anchor, genes_out)  # before the slide is read, not after
    library_id = _slide(adata, library_id)
    _require_image_entry(adata, library_id)
    factor = _bin_factor(bin_um, model.dense.bin_um)
    side = slide_bin_side(adata, library_id, model.dense.bin_um)
    image, scale = open_slide_image(adata, library_id)
    try:
        geometry = _geometry(adata, library_id, image, scale, side, factor, region, origin)
        if cells:
            out = _cells(model, adata, image, geometry, columns, region, show_progress_bar)
        else:
            out = _bins(model, adata, image, geometry, columns, min_tissue, show_progress_bar)
    finally:
        if not isinstance(image, np.ndarray):
            image.close()
    values, centres, make = out
    if anchor is not None:
        values = values * _anchor_ratios(predictor, anchor, adata, library_id, genes_out, centres)
    result = make(model.to_target(values).astype(np.float32), genes_out)
    result.uns[key_added] = {
        "model": predictor.model_name,
        "bin_um": float(model.dense.bin_um * factor),
        "bin_px": float(side * factor),
        "origin": list(geometry.origin),
        "model_bin_um": float(model.dense.bin_um),
        "region": None if region is None else [float(v) for v in np.ravel(region)],
        "library_id": library_id,
        "layer": predictor.layer,
        "scale": model.target_scale_,
        "values": "spot-equivalent: what a spot made of such bins would measure (linear mean of bins = spot)",
        "min_tissue": float(min_tissue),
        "cells": bool(cells),
        "anchor": None if anchor is None else anchor.model_name,
        "train_slides": predictor.train_slides,
        "features": model.dense.record(),
        "time_s": time.perf_counter() - started,
    }
    what = "cells" if cells else f"{model.dense.bin_um * factor:g} µm bins"
    logger.info(
        "super_resolve: %d %s on slide %s in %.1f s", result.n_obs, what, library_id, time.perf_counter() - started
    )
    return result


@dataclass(frozen=True)
class _Geometry:
    """Where a run reads: the model's bin grid on the image read, the output bins' rows/columns, the origin."""

    library_id: str
    grid: BinGrid  # the model's bins, in the pixels of the image read (``scale`` times full resolution)
    scale: float
    factor: int  # model bins per output bin side
    origin: tuple[float, float]  # full-resolution px
    rows: tuple[int, int]  # output bins
    cols: tuple[int, int]


def _geometry(adata, library_id, image, scale, side, factor, region, origin) -> _Geometry:
    height, width = image.shape[:2]
    ox, oy = _origin(adata, library_id, origin, side * factor)
    rows, cols = _row_col_range(region, side * factor, width / scale, height / scale, library_id, (ox, oy))
    grid = BinGrid.for_image(side * scale, width, height, ox * scale, oy * scale)
    return _Geometry(library_id, grid, scale, factor, (ox, oy), rows, cols)


def _bins(model, adata, image, geometry: _Geometry, columns, min_tissue, show_progress_bar):
    """Bins on the tissue: ``(linear values, full-resolution centres, make(values, genes) -> AnnData)``."""
    g = geometry
    parts = _predict_tiles(
        model, image, g.grid, model.dense, g.rows, g.cols, g.factor, columns, min_tissue, show_progress_bar
    )
    if parts:
        values, rows, cols, tissue = (np.concatenate(p) for p in zip(*parts, strict=True))
    else:
        values, rows, cols = np.empty((0, len(columns)), np.float32), np.empty(0, np.int64), np.empty(0, np.int64)
        tissue = np.empty(0, np.float32)
    out_grid = BinGrid(g.grid.side / g.scale * g.factor, 0, 0, *g.origin)
    centres = out_grid.centres(rows, cols)

    def make(target, genes):
        return _bins_adata(adata, g.library_id, target, rows, cols, tissue, out_grid, genes)

    return values, centres, make


def _cells(model, adata, image, geometry: _Geometry, columns, region, show_progress_bar):
    """Nuclei: ``(linear values, full-resolution centroids, make(values, genes) -> AnnData)``."""
    g = geometry
    mpp = model.dense.bin_um / g.grid.side  # µm per pixel of the image read
    box = None if region is None else np.ravel(region).astype(np.float64) * g.scale
    model_rows = (g.rows[0] * g.factor, g.rows[1] * g.factor)
    model_cols = (g.cols[0] * g.factor, g.cols[1] * g.factor)
    values, centroids, outlines, areas = predict_cells(
        model,
        image,
        g.grid,
        model.dense,
        model_rows,
        model_cols,
        columns,
        mpp,
        box,
        show_progress_bar,
        tile=TILE_BINS,
    )
    centres = centroids / g.scale

    def make(target, genes):
        return _cells_adata(adata, g.library_id, target, centres, outlines / g.scale, areas * mpp**2, genes)

    return values, centres, make


def _gene_columns(predictor: Predictor, genes: Sequence[str] | None) -> list[int]:
    if genes is None:
        return list(range(len(predictor.genes)))
    genes = [genes] if isinstance(genes, str) else list(genes)
    missing = [g for g in genes if g not in predictor.genes]
    if missing or not genes:
        msg = f"genes {missing or genes} are not predicted by this model (it predicts {predictor.genes[:5]} ...)."
        raise ValueError(msg)
    return [predictor.genes.index(g) for g in genes]


def _check_anchor(predictor: Predictor, anchor, genes: list[str]) -> None:
    if not isinstance(anchor, Predictor):
        msg = f"anchor must be a fitted spot-level model (st.tl.fit / st.tl.load_model), got {type(anchor).__name__}."
        raise TypeError(msg)
    missing = [g for g in genes if g not in anchor.genes]
    if missing or anchor.layer != predictor.layer:
        msg = (
            f"The anchor must predict the same genes on the same target layer: it lacks {missing[:5]} or was trained "
            f"on layer {anchor.layer!r} (this model: {predictor.layer!r})."
        )
        raise ValueError(msg)


def _anchor_ratios(predictor, anchor, adata, library_id, genes, centres) -> np.ndarray:
    """Per bin (or cell) centre: the anchor's linear spot prediction over the predictor's own.

    Carried from the spots to the centres by :func:`_smooth_field`, in logs.
    """
    spots = adata[spot_libraries(adata) == library_id].copy()
    own = predictor.predict(spots, copy=True, key_added="own").obsm["own"][genes].to_numpy(np.float64)
    ref = anchor.predict(spots, copy=True, key_added="anchor").obsm["anchor"][genes].to_numpy(np.float64)
    model = predictor.model
    own, ref = model.to_linear(own), model.to_linear(ref)
    floor = 1e-3 * own.mean(axis=0) + 1e-8  # a spot the model puts at zero keeps its (near-zero) bins
    log_ratio = np.log(ref + floor) - np.log(own + floor)
    return np.exp(_smooth_field(require_spatial(spots), log_ratio, centres))


def _smooth_field(spots: np.ndarray, values: np.ndarray, centres: np.ndarray, k: int = 8) -> np.ndarray:
    """``values`` of spots carried to ``centres`` by Gaussian weights of width a quarter of the spot pitch.

    Inside a spot its own value dominates (its neighbours lie 4 widths away or more); between spots it blends
    smoothly, so a correction does not jump at the borders of spots' Voronoi cells.
    """
    from scipy.spatial import cKDTree

    tree = cKDTree(spots)
    k = min(k, len(spots))
    pitch = np.median(tree.query(spots, k=2)[0][:, 1]) if len(spots) > 1 else 1.0
    distance, nearest = tree.query(centres, k=k)
    distance, nearest = distance.reshape(len(centres), k), nearest.reshape(len(centres), k)
    weights = np.exp(-0.5 * ((distance - distance[:, :1]) / (pitch / 4)) ** 2)  # relative: no underflow far away
    weights /= weights.sum(axis=1, keepdims=True)
    return np.einsum("nk,nkg->ng", weights, values[nearest])


def _predict_tiles(model, image, grid, dense, rows, cols, factor, columns, min_tissue, show_progress_bar):
    """Per tile: (values in linear units, output rows, output cols, tissue fraction) of its bins on the tissue."""
    tile = max(1, TILE_BINS // factor) * factor
    model_rows, model_cols = (rows[0] * factor, rows[1] * factor), (cols[0] * factor, cols[1] * factor)
    tiles = list(iter_tiles(model_rows, model_cols, tile))
    parts = []
    for r, c in tqdm(tiles, desc="super-resolve", unit="tile", disable=not show_progress_bar):
        features = tile_features(image, grid, dense, r, c)  # (rows, cols, features), edges padded white
        n_r, n_c = features.shape[0] // factor, features.shape[1] // factor
        features = features[: n_r * factor, : n_c * factor]
        tissue = block_mean(features[..., TISSUE_CHANNEL], factor)
        keep = tissue >= min_tissue
        if not keep.any():
            continue
        # the network runs on the model bins of the kept output bins only (glass is most of a whole slide)
        needed = np.kron(keep, np.ones((factor, factor), dtype=bool))
        linear = np.zeros((*needed.shape, len(columns)), dtype=np.float32)
        linear[needed] = model.bin_linear(features[needed])[:, columns]
        linear = block_mean(linear, factor)
        out_r, out_c = np.nonzero(keep)
        parts.append((linear[keep], out_r + r.start // factor, out_c + c.start // factor, tissue[keep]))
    return parts


def _cells_adata(adata, library_id, values, centroids, outlines, areas_um2, genes) -> AnnData:
    """Cells as an AnnData: centroids in ``obsm['spatial']``, outlines in ``obsm['outline']``, the slide's image."""
    names = [f"{library_id}_cell_{i}" for i in range(len(values))]
    obs = pd.DataFrame({LIBRARY_KEY: library_id, "area_um2": areas_um2.astype(np.float32)}, index=names)
    obs[LIBRARY_KEY] = obs[LIBRARY_KEY].astype("category")
    entry = dict(spatial_entry(adata, library_id))
    diameter = 2 * np.sqrt(np.median(areas_um2) / np.pi) / slide_mpp(adata, library_id) if len(areas_um2) else 0.0
    entry["scalefactors"] = {**entry.get("scalefactors", {}), "spot_diameter_fullres": float(diameter)}
    entry["metadata"] = {**entry.get("metadata", {}), SPOT_SHAPE_KEY: "circle"}
    return AnnData(
        X=values,
        obs=obs,
        var=pd.DataFrame(index=pd.Index(genes, name=None)),
        obsm={SPATIAL_KEY: centroids.astype(np.float64), "outline": outlines.astype(np.float32)},
        uns={SPATIAL_KEY: {library_id: entry}},
    )


def _bins_adata(adata, library_id, values, rows, cols, tissue, grid: BinGrid, genes) -> AnnData:
    """The bins as an AnnData in squidpy's layout, sharing the slide's image entry."""
    side = grid.side
    names = [f"{library_id}_{r}_{c}" for r, c in zip(rows, cols, strict=True)]
    obs = pd.DataFrame(
        {"array_row": rows.astype(np.int64), "array_col": cols.astype(np.int64), LIBRARY_KEY: library_id,
         "tissue_fraction": tissue.astype(np.float32)}, index=names,
    )  # fmt: skip
    obs[LIBRARY_KEY] = obs[LIBRARY_KEY].astype("category")
    entry = dict(spatial_entry(adata, library_id))
    entry["scalefactors"] = {**entry.get("scalefactors", {}), "spot_diameter_fullres": float(side)}
    entry["metadata"] = {**entry.get("metadata", {}), SPOT_SHAPE_KEY: "square", "grid": "square"}
    return AnnData(
        X=values,
        obs=obs,
        var=pd.DataFrame(index=pd.Index(genes, name=None)),
        obsm={SPATIAL_KEY: grid.centres(rows, cols).astype(np.float64)},
        uns={SPATIAL_KEY: {library_id: entry}},
    )
