"""``st.pl.super_resolution``: super-resolved bins over the H&E, beside the spot prediction and the truth."""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike

import matplotlib.pyplot as plt
import numpy as np
from anndata import AnnData

from .._validate import spatial_entry
from ..io._image import open_slide_image
from ..pp._dense import read_box
from ._spatial import _finish


def _extent(bins: AnnData) -> list[float]:
    """``[x0, x1, y1, y0]`` of the bins (or cells' outlines) in full-resolution pixels."""
    if "outline" in bins.obsm:
        points = bins.obsm["outline"].reshape(-1, 2)
        (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
        return [float(x0), float(x1), float(y1), float(y0)]
    return _raster(bins, np.zeros(bins.n_obs))[1]


def _draw(ax, bins: AnnData, values: np.ndarray, vmin: float, vmax: float, he: np.ndarray, extent):
    """Bins as a raster, or cells as filled outlines over the H&E; returns the mappable for the colourbar."""
    if "outline" not in bins.obsm:
        return ax.imshow(_raster(bins, values)[0], extent=extent, vmin=vmin, vmax=vmax, cmap="viridis")
    from matplotlib.collections import PolyCollection

    ax.imshow(he, extent=extent)
    cells = PolyCollection(list(bins.obsm["outline"]), array=values, cmap="viridis", edgecolors="none")
    cells.set_clim(vmin, vmax)
    ax.add_collection(cells)
    return cells


def _raster(bins: AnnData, values: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """Bin values on their grid (NaN off the tissue) and the raster's extent in full-resolution pixels."""
    rows, cols = bins.obs["array_row"].to_numpy(), bins.obs["array_col"].to_numpy()
    side = float(bins.uns["super_resolution"]["bin_px"])
    raster = np.full((np.ptp(rows) + 1, np.ptp(cols) + 1), np.nan, np.float32)
    raster[rows - rows.min(), cols - cols.min()] = values
    ox, oy = bins.uns["super_resolution"].get("origin", (0.0, 0.0))
    extent = [
        ox + cols.min() * side,
        ox + (cols.max() + 1) * side,
        oy + (rows.max() + 1) * side,
        oy + rows.min() * side,
    ]
    return raster, extent


def super_resolution(
    bins: AnnData,
    gene: str,
    *,
    spots: AnnData | None = None,
    spot_key: str | None = None,
    truth: np.ndarray | None = None,
    figsize: Sequence[float] | None = None,
    show: bool | None = None,
    save: str | PathLike | None = None,
):
    """Super-resolved bins (or cells) of one gene over the H&E, beside the spot prediction and, when known, the truth.

    Panels share one colour scale (the training target's, e.g. log1p): the H&E of the bins' area, the spots'
    prediction (``spots.obsm[spot_key]``) drawn as discs, the bins, and ``truth`` (per bin, aligned with
    ``bins``).

    Parameters
    ----------
    bins
        The output of :func:`stpredict.tl.super_resolve` (bins, or cells drawn as their outlines).
    gene
        A gene of ``bins``.
    spots, spot_key
        Spots of the same slide with a spot-level prediction in ``obsm[spot_key]`` (a spots x genes DataFrame).
    truth
        Measured or known values per bin, for a fourth panel.
    figsize, show, save
        Figure size; as in scanpy: show unless ``save`` is given, ``show=False`` returns the Figure.

    Examples
    --------
    >>> import stpredict as st
    >>> adata = st.datasets.her2st_crop()
    >>> st.pp.normalize(adata)
    >>> predictor = st.tl.fit(adata[adata.obs.library_id != "C4"].copy(), model="istar", genes=["ERBB2"],
    ...                       model_params={"max_epochs": 2})
    >>> test = adata[adata.obs.library_id == "C4"].copy()
    >>> bins = st.tl.super_resolve(predictor, test, region=(800, 800, 1400, 1300))
    >>> predictor.predict(test)
    >>> fig = st.pl.super_resolution(bins, "ERBB2", spots=test, spot_key="pred_istar", show=False)
    >>> len(fig.axes)
    4
    """
    if gene not in bins.var_names:
        msg = f"gene {gene!r} is not in bins (genes: {bins.var_names[:5].tolist()})."
        raise KeyError(msg)
    library_id = bins.uns["super_resolution"]["library_id"]
    values = np.asarray(bins[:, gene].X).ravel()
    extent = _extent(bins)
    if truth is not None and len(truth) != bins.n_obs:
        msg = f"truth has {len(truth)} values, bins {bins.n_obs}: give one value per bin."
        raise ValueError(msg)
    shown = [values] + ([] if truth is None else [np.asarray(truth, float)])
    spot_values = None
    if spots is not None:
        frame = spots.obsm[spot_key]
        spot_values = frame[gene].to_numpy()
        shown.append(spot_values)
    vmin, vmax = np.nanpercentile(np.concatenate(shown), [1, 99])
    panels = 2 + (spots is not None) + (truth is not None)
    fig, axes = plt.subplots(1, panels, figsize=figsize or (3.6 * panels, 3.8), constrained_layout=True)
    x0, x1, y1, y0 = extent
    image, scale = open_slide_image(bins, library_id)
    try:
        width = max(1, int(min(1200, (x1 - x0) * scale)))
        he = read_box(image, x0 * scale, y0 * scale, (x1 - x0) * scale, (y1 - y0) * scale, width,
                      max(1, int(width * (y1 - y0) / (x1 - x0))))  # fmt: skip
    finally:
        if not isinstance(image, np.ndarray):
            image.close()
    unit = bins.uns["super_resolution"].get("scale")
    label = f"{gene} ({unit or 'predicted'})"
    axes[0].imshow(he, extent=extent)
    axes[0].set_title("H&E")
    column = 1
    if spots is not None:
        axes[column].imshow(he, extent=extent)
        xy = spots.obsm["spatial"]
        inside = (xy[:, 0] >= x0) & (xy[:, 0] <= x1) & (xy[:, 1] >= y0) & (xy[:, 1] <= y1)
        diameter = float(spatial_entry(spots, library_id)["scalefactors"]["spot_diameter_fullres"])
        for (x, y), v in zip(xy[inside], spot_values[inside], strict=True):
            colour = plt.get_cmap("viridis")((v - vmin) / (vmax - vmin + 1e-12))
            axes[column].add_patch(plt.Circle((x, y), diameter / 2, color=colour))
        axes[column].set_title("spot prediction")
        column += 1
    image_shown = _draw(axes[column], bins, values, vmin, vmax, he, extent)
    cells = bool(bins.uns["super_resolution"].get("cells"))
    axes[column].set_title("cells" if cells else f"{bins.uns['super_resolution']['bin_um']:g} µm bins")
    if truth is not None:
        column += 1
        _draw(axes[column], bins, np.asarray(truth, np.float32), vmin, vmax, he, extent)
        axes[column].set_title("truth")
    for ax in axes:
        ax.set_xlim(x0, x1)
        ax.set_ylim(y1, y0)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(image_shown, ax=list(axes), shrink=0.8, label=label)
    return _finish(axes[0], show, save, result=fig)
