"""``read_wsi``: an H&E whole-slide image without expression, as virtual spots on its tissue."""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from PIL import Image

from .._constants import (
    ARRAY_COL,
    ARRAY_ROW,
    GRID_KEY,
    MICRONS_PER_PIXEL,
    SOURCE_IMAGE_KEY,
    SPATIAL_KEY,
)
from .._logging import logger
from ._image import HIRES_MAX_SIDE
from ._slide import mark_slide
from ._tissue import detect_tissue
from ._wsi import TIFF_SUFFIXES, WSI_SUFFIXES, WholeSlide

TISSUE_MASK_KEY = "tissue_mask"  # uns['spatial'][lib][...]: boolean mask on the hires image


def virtual_grid(width: float, height: float, spacing: float, grid: str = "hex") -> pd.DataFrame:
    """Spot centres ``x``, ``y`` (pixels) and array coordinates covering a ``width`` x ``height`` image.

    ``'hex'`` follows Visium's convention (rows ``spacing·√3/2`` apart, every other row shifted by half a
    spacing, ``array_col`` counting half spacings so that neighbours differ by 2 along a row); ``'square'``
    the legacy ST array. Spots start half a spacing from the edges.

    Examples
    --------
    >>> from stpredict.io._read_wsi import virtual_grid
    >>> virtual_grid(400, 300, 100, "square").head(3)
           x     y  array_row  array_col
    0   50.0  50.0          0          0
    1  150.0  50.0          0          1
    2  250.0  50.0          0          2
    """
    if grid not in ("hex", "square"):
        msg = f"grid must be 'hex' or 'square', not {grid!r}."
        raise ValueError(msg)
    row_step = spacing * np.sqrt(3) / 2 if grid == "hex" else spacing
    rows = np.arange(int(max(0.0, height - spacing / 2) // row_step) + 1)
    frames = []
    for row in rows:
        shift = spacing / 2 if (grid == "hex" and row % 2) else 0.0
        xs = np.arange(spacing / 2 + shift, width, spacing)
        cols = np.arange(len(xs))
        array_col = 2 * cols + (row % 2) if grid == "hex" else cols
        frames.append(
            pd.DataFrame({"x": xs, "y": spacing / 2 + row * row_step, "array_row": int(row), "array_col": array_col})
        )
    table = pd.concat(frames, ignore_index=True)
    return table[table["y"] < height].reset_index(drop=True)


def _mask_at_hires(tissue, hires_shape: tuple[int, int], image: np.ndarray) -> np.ndarray:
    """The tissue mask on the hires image: detected, or the user's mask resized (``True`` = tissue)."""
    if tissue is None or (isinstance(tissue, str) and tissue == "auto"):
        return detect_tissue(image)
    if tissue is False:
        return np.ones(hires_shape, dtype=bool)
    if isinstance(tissue, dict):
        return detect_tissue(image, **tissue)
    mask = np.asarray(tissue)
    if mask.ndim != 2:
        msg = f"tissue= must be a 2-D boolean mask (any resolution, covering the whole slide), got shape {mask.shape}."
        raise ValueError(msg)
    if mask.shape != hires_shape:
        resized = Image.fromarray(mask.astype(np.uint8) * 255).resize(hires_shape[::-1], Image.Resampling.NEAREST)
        mask = np.asarray(resized) > 127
    return mask.astype(bool)


def read_wsi(
    path: str | PathLike,
    *,
    library_id: str | None = None,
    mpp: float | None = None,
    spot_diameter_um: float = 55.0,
    spot_spacing_um: float = 100.0,
    grid: str = "hex",
    tissue=None,
    min_tissue_fraction: float = 0.5,
    backend: str = "auto",
    hires_max_side: int = HIRES_MAX_SIDE,
) -> AnnData:
    """Read an H&E whole-slide image that has no expression, as virtual spots on its tissue.

    The image is opened lazily (OpenSlide or tiffslide; pyramidal TIFF, SVS, NDPI, MRXS, ...): only an
    overview is decoded here, and patches are later read region by region from the pyramid level that
    matches the requested resolution. Spots are laid on a Visium-like grid (55 µm spots 100 µm apart by
    default) and kept where at least ``min_tissue_fraction`` of the spot lies on tissue. Predict on the
    result with ``st.tl.load_model(...).predict(adata)``.

    Parameters
    ----------
    path
        Whole-slide image (pyramidal ``.tif``, ``.svs``, ``.ndpi``, ``.mrxs``, ``.scn``, ...).
    library_id
        Slide name (default: the file name without suffix).
    mpp
        Microns per level-0 pixel, when the file does not record it (or to override it).
    spot_diameter_um, spot_spacing_um
        Virtual spot size and centre-to-centre distance (Visium: 55 and 100; legacy ST: 100 and 200).
    grid
        ``'hex'`` (Visium) or ``'square'`` (legacy ST) virtual array.
    tissue
        ``None``/``'auto'``: detect tissue (:func:`detect_tissue`); a dict of its parameters; a boolean
        mask of any resolution covering the slide (your own segmentation); ``False``: the whole image.
    min_tissue_fraction
        Fraction of a spot's disc that must be tissue (evaluated on the overview).
    backend
        ``'auto'``, ``'openslide'`` or ``'tiffslide'``.
    hires_max_side
        Longer side of the stored overview (``images['hires']``).

    Returns
    -------
    AnnData with no genes: ``obsm['spatial']`` (level-0 pixels), ``obs['array_row']``, ``obs['array_col']``,
    ``obs['library_id']``; ``uns['spatial'][library_id]`` with ``images['hires']``, ``tissue_mask``,
    ``scalefactors`` (``tissue_hires_scalef``, ``spot_diameter_fullres``, ``microns_per_pixel``) and
    ``metadata`` (``source_image_path``, ``grid``, ``wsi_backend``).

    Examples
    --------
    >>> import numpy as np, stpredict as st
    >>> image = np.full((3000, 4000, 3), 240, np.uint8)
    >>> image[500:2500, 800:3000] = (190, 110, 170)  # a block of pink tissue
    >>> path = st.io.write_pyramidal_tiff(image, "doc_slide.tif", mpp=0.5)
    >>> slide = st.io.read_wsi(path)
    >>> slide.n_obs, slide.n_vars, slide.uns["spatial"]["doc_slide"]["scalefactors"]["microns_per_pixel"]
    (121, 0, 0.5)
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in WSI_SUFFIXES + TIFF_SUFFIXES:
        msg = (
            f"{path.name!r}: unsupported whole-slide image type {suffix!r}. read_wsi reads pyramidal TIFF and "
            f"{', '.join(WSI_SUFFIXES)}; for a JPEG/PNG image with spot positions use st.io.read_st, or convert "
            "it with st.io.write_pyramidal_tiff(image, path, mpp=...)."
        )
        raise ValueError(msg)
    library_id = library_id or path.stem
    with WholeSlide(path, backend=backend) as slide:
        resolution = mpp if mpp is not None else slide.mpp
        if resolution is None or not np.isfinite(resolution) or resolution <= 0:
            msg = (
                f"{path.name!r} records no pixel size (microns per pixel). Pass it: st.io.read_wsi(path, mpp=...) "
                "(e.g. 0.25 for a 40x scan, 0.5 for 20x; the scanner's report or QuPath shows it)."
            )
            raise ValueError(msg)
        hires, hires_scale = slide.thumbnail(hires_max_side)
        height, width = slide.shape[:2]
        backend_used = slide.backend
    mask = _mask_at_hires(tissue, hires.shape[:2], hires)
    spacing_px, diameter_px = spot_spacing_um / resolution, spot_diameter_um / resolution
    spots = virtual_grid(width, height, spacing_px, grid)
    fraction = _disc_fraction(mask, spots[["x", "y"]].to_numpy() * hires_scale, diameter_px * hires_scale / 2)
    spots = spots[fraction >= min_tissue_fraction].reset_index(drop=True)
    if spots.empty:
        msg = (
            f"No tissue found on {path.name!r} ({mask.mean():.1%} of the overview is tissue, none under a "
            f"{spot_diameter_um:g} µm spot's {min_tissue_fraction:.0%}). Check the image with st.pl.tissue, "
            "pass tissue=your_mask, tissue={'threshold': 0.05} for faint staining, or tissue=False."
        )
        raise ValueError(msg)

    obs = pd.DataFrame(
        index=[f"{library_id}_{r}x{c}" for r, c in zip(spots["array_row"], spots["array_col"], strict=True)]
    )
    obs[ARRAY_ROW] = spots["array_row"].to_numpy(int)
    obs[ARRAY_COL] = spots["array_col"].to_numpy(int)
    adata = AnnData(X=sp.csr_matrix((len(obs), 0), dtype=np.float32), obs=obs)
    mark_slide(adata, library_id, None, counts=None)  # no expression: a slide to predict
    adata.obsm[SPATIAL_KEY] = spots[["x", "y"]].to_numpy(float)
    adata.uns[SPATIAL_KEY] = {
        library_id: {
            "images": {"hires": hires},
            TISSUE_MASK_KEY: mask,
            "scalefactors": {
                "tissue_hires_scalef": float(hires_scale),
                "spot_diameter_fullres": float(diameter_px),
                MICRONS_PER_PIXEL: float(resolution),
            },
            "metadata": {
                SOURCE_IMAGE_KEY: str(path.resolve()),
                GRID_KEY: grid,
                "technology": f"virtual spots on a whole-slide image ({spot_diameter_um:g} µm, {spot_spacing_um:g} µm apart)",
                "wsi_backend": backend_used,
            },
        }
    }
    logger.info(
        "read_wsi %s: %d x %d px at %.3f µm/px, %d virtual spots on %.0f%% tissue",
        library_id,
        width,
        height,
        resolution,
        len(obs),
        100 * mask.mean(),
    )
    return adata


def _disc_fraction(mask: np.ndarray, centres: np.ndarray, radius: float) -> np.ndarray:
    """Fraction of each disc (centre, radius in mask pixels) that lies on ``mask``, from a 5 x 5 sample."""
    offsets = np.linspace(-1, 1, 5) * radius * 0.8
    dx, dy = np.meshgrid(offsets, offsets)
    inside = dx**2 + dy**2 <= radius**2 + 1e-9
    dx, dy = dx[inside], dy[inside]
    xs = np.clip(np.rint(centres[:, :1] + dx[None]), 0, mask.shape[1] - 1).astype(int)
    ys = np.clip(np.rint(centres[:, 1:] + dy[None]), 0, mask.shape[0] - 1).astype(int)
    return mask[ys, xs].mean(axis=1)
