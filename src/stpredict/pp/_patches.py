"""Image patches around spot centres, cut from one slide's image at a time."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from anndata import AnnData
from PIL import Image

from .._constants import LIBRARY_KEY, MICRONS_PER_PIXEL, SPATIAL_KEY
from .._validate import library_ids, require_spatial, spot_libraries
from ..io._image import open_slide_image

BACKGROUND = 255  # outside the scan is empty glass: pad with white


def patch_size_px(adata: AnnData, library_id: str, size: float, unit: str) -> int:
    """Patch side in full-resolution pixels from a size in ``'px'`` or ``'um'``."""
    if unit == "px":
        return int(round(size))
    if unit != "um":
        msg = f"Unknown size unit {unit!r}; use 'px' or 'um'."
        raise ValueError(msg)
    mpp = slide_mpp(adata, library_id)
    if mpp is None:
        msg = (
            f"Slide {library_id!r} has no scalefactors['{MICRONS_PER_PIXEL}'], so a size in microns cannot be "
            "converted; give the size in pixels (unit='px') or set the scale factor."
        )
        raise KeyError(msg)
    return int(round(size / mpp))


def cut_patches(image, centres: np.ndarray, side: int, out_side: int | None = None) -> np.ndarray:
    """Square patches of ``side`` px centred on ``centres`` (x, y); parts outside the image are white.

    The patch of a centre (x, y) covers columns ``[round(x) - side//2, round(x) - side//2 + side)`` and the
    same for rows, so the spot centre sits at pixel ``(side//2, side//2)`` of the patch. ``image`` is an
    in-memory ``(H, W, 3)`` array or a :class:`~stpredict.io.WholeSlide` (regions read lazily from the
    pyramid level that matches ``out_side``); patches are resampled to ``out_side`` px when given.
    """
    out_side = side if out_side is None else int(out_side)
    left = np.rint(centres[:, 0]).astype(int) - side // 2
    top = np.rint(centres[:, 1]).astype(int) - side // 2
    if not isinstance(image, np.ndarray):  # a whole-slide image: one region read per patch
        out = np.empty((len(centres), out_side, out_side, 3), dtype=np.uint8)
        for i, (x0, y0) in enumerate(zip(left, top, strict=True)):
            out[i] = image.read(x0, y0, side, side, out_side=out_side)
        return out
    height, width = image.shape[:2]
    # Copy only the in-image part of each window into a white patch: padding the whole slide instead
    # would copy a ~300 MB image for every batch.
    out = np.full((len(centres), side, side, image.shape[2]), BACKGROUND, dtype=image.dtype)
    for i, (x0, y0) in enumerate(zip(left, top, strict=True)):
        x_lo, x_hi = max(x0, 0), min(x0 + side, width)
        y_lo, y_hi = max(y0, 0), min(y0 + side, height)
        if x_lo < x_hi and y_lo < y_hi:
            out[i, y_lo - y0 : y_hi - y0, x_lo - x0 : x_hi - x0] = image[y_lo:y_hi, x_lo:x_hi]
    return out if out_side == side else resize_patches(out, out_side)


def resize_patches(patches: np.ndarray, side: int) -> np.ndarray:
    """Patches resampled to ``side`` px (area averaging when shrinking, bilinear when enlarging)."""
    if patches.shape[1] == side:
        return patches
    method = Image.Resampling.BOX if side < patches.shape[1] else Image.Resampling.BILINEAR
    return np.stack([np.asarray(Image.fromarray(p).resize((side, side), method)) for p in patches])


def slide_mpp(adata: AnnData, library_id: str) -> float | None:
    """Microns per full-resolution pixel of a slide (``None`` when not recorded)."""
    mpp = adata.uns.get(SPATIAL_KEY, {}).get(library_id, {}).get("scalefactors", {}).get(MICRONS_PER_PIXEL)
    return float(mpp) if mpp and np.isfinite(mpp) else None


def patch_geometry(
    adata: AnnData, library_id: str, size: float, unit: str, target_mpp: float | None = None
) -> tuple[int, int]:
    """``(side on the slide, side of the returned patch)`` in pixels.

    Without ``target_mpp`` both are the slide's pixels (``size`` px, or ``size`` µm at the slide's pixel size).
    With it, patches cover the same physical area whatever the scan's resolution and are resampled to
    ``target_mpp``: ``size`` px at ``target_mpp`` (unit ``'px'``) or ``size`` µm (unit ``'um'``).
    """
    if target_mpp is None:
        side = patch_size_px(adata, library_id, size, unit)
        return side, side
    mpp = slide_mpp(adata, library_id)
    if mpp is None:
        msg = (
            f"Slide {library_id!r} has no scalefactors['{MICRONS_PER_PIXEL}'], so its patches cannot be brought "
            f"to {target_mpp:g} µm/px. Set adata.uns['spatial'][{library_id!r}]['scalefactors']"
            f"['{MICRONS_PER_PIXEL}'] (read_wsi(mpp=...) for WSIs), or pass target_mpp=None."
        )
        raise KeyError(msg)
    physical = size * target_mpp if unit == "px" else patch_size_px(adata, library_id, size, unit) * mpp
    out_side = int(round(size)) if unit == "px" else int(round(size / target_mpp))
    return max(1, int(round(physical / mpp))), max(1, out_side)


def iter_slide_images(
    adata: AnnData, library_key: str = LIBRARY_KEY
) -> Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray, float]]:
    """Yield ``(library_id, spot positions, spot centres, image, scale)``, one slide image in memory at a time.

    ``scale`` maps full-resolution pixels to ``image`` pixels (1 unless the ``hires`` fallback is used).
    """
    centres_all = require_spatial(adata)
    slides = spot_libraries(adata, library_key)
    for library_id in library_ids(adata, library_key):
        positions = np.flatnonzero(slides == library_id)
        image, scale = open_slide_image(adata, library_id)
        try:
            yield library_id, positions, centres_all[positions], image, scale
        finally:
            if not isinstance(image, np.ndarray):
                image.close()
        del image


def iter_slide_patches(
    adata: AnnData,
    *,
    size: float = 224,
    unit: str = "px",
    library_key: str = LIBRARY_KEY,
    batch_size: int = 256,
    target_mpp: float | None = None,
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Yield ``(library_id, spot positions in adata, patches)`` batches, opening one slide image at a time.

    Whole-slide images are read region by region; ``target_mpp`` resamples every slide's patches to one
    pixel size (see :func:`patch_geometry`).
    """
    for library_id, positions, centres, image, scale in iter_slide_images(adata, library_key):
        side, out_side = patch_geometry(adata, library_id, size, unit, target_mpp)
        side_in_image = max(1, int(round(side * scale)))  # scale < 1: the low-resolution fallback image
        for start in range(0, len(positions), batch_size):
            batch = slice(start, start + batch_size)
            yield library_id, positions[batch], cut_patches(image, centres[batch] * scale, side_in_image, out_side)


def extract_patches(
    adata: AnnData,
    *,
    size: float = 224,
    unit: str = "px",
    library_key: str = LIBRARY_KEY,
    target_mpp: float | None = None,
) -> np.ndarray:
    """All spots' patches as one ``(n_obs, side, side, 3)`` uint8 array (in ``adata``'s spot order).

    Slide images are opened one at a time. For many spots prefer iterating over slides, since the result
    holds every patch in memory (224 px RGB: 150 kB per spot).

    Parameters
    ----------
    adata
        Slides with ``obsm['spatial']`` and images recorded in ``uns['spatial']``.
    size
        Patch side, in ``unit``.
    unit
        ``'px'`` (full-resolution pixels) or ``'um'`` (needs ``scalefactors['microns_per_pixel']``).
    library_key
        ``obs`` column naming the slide of each spot.
    target_mpp
        Resample patches to this many microns per pixel, so that slides scanned at different resolutions
        give patches of the same physical size and pixel size (``size`` px at ``target_mpp``, or ``size`` µm).

    Returns
    -------
    The patches; the spot centre is pixel ``(side // 2, side // 2)``; outside the image is white.

    Examples
    --------
    >>> import stpredict as st
    >>> adata = st.datasets.her2st_crop()
    >>> st.pp.extract_patches(adata[:4], size=100, unit="um").shape
    (4, 145, 145, 3)
    """
    out = None
    batches = iter_slide_patches(adata, size=size, unit=unit, library_key=library_key, target_mpp=target_mpp)
    for _, positions, patches in batches:
        if out is None:
            out = np.empty((adata.n_obs, *patches.shape[1:]), dtype=np.uint8)
        out[positions] = patches
    if out is None:
        msg = "adata has no spots."
        raise ValueError(msg)
    return out
