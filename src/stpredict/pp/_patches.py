"""Image patches around spot centres, cut from one slide's image at a time."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from anndata import AnnData
from PIL import Image

from .._constants import LIBRARY_KEY, MICRONS_PER_PIXEL, SPATIAL_KEY
from .._validate import library_ids, require_spatial, spot_libraries
from ..io._image import load_slide_image

BACKGROUND = 255  # outside the scan is empty glass: pad with white


def patch_size_px(adata: AnnData, library_id: str, size: float, unit: str) -> int:
    """Patch side in full-resolution pixels from a size in ``'px'`` or ``'um'``."""
    if unit == "px":
        return int(round(size))
    if unit != "um":
        msg = f"Unknown size unit {unit!r}; use 'px' or 'um'."
        raise ValueError(msg)
    mpp = adata.uns.get(SPATIAL_KEY, {}).get(library_id, {}).get("scalefactors", {}).get(MICRONS_PER_PIXEL)
    if not mpp or not np.isfinite(mpp):
        msg = (
            f"Slide {library_id!r} has no scalefactors['{MICRONS_PER_PIXEL}'], so a size in microns cannot be "
            "converted; give the size in pixels (unit='px') or set the scale factor."
        )
        raise KeyError(msg)
    return int(round(size / mpp))


def cut_patches(image: np.ndarray, centres: np.ndarray, side: int) -> np.ndarray:
    """Square patches of ``side`` px centred on ``centres`` (x, y); parts outside the image are white.

    The patch of a centre (x, y) covers columns ``[round(x) - side//2, round(x) - side//2 + side)`` and the
    same for rows, so the spot centre sits at pixel ``(side//2, side//2)`` of the patch.
    """
    height, width = image.shape[:2]
    # Copy only the in-image part of each window into a white patch: padding the whole slide instead
    # would copy a ~300 MB image for every batch.
    out = np.full((len(centres), side, side, image.shape[2]), BACKGROUND, dtype=image.dtype)
    left = np.rint(centres[:, 0]).astype(int) - side // 2
    top = np.rint(centres[:, 1]).astype(int) - side // 2
    for i, (x0, y0) in enumerate(zip(left, top, strict=True)):
        x_lo, x_hi = max(x0, 0), min(x0 + side, width)
        y_lo, y_hi = max(y0, 0), min(y0 + side, height)
        if x_lo < x_hi and y_lo < y_hi:
            out[i, y_lo - y0 : y_hi - y0, x_lo - x0 : x_hi - x0] = image[y_lo:y_hi, x_lo:x_hi]
    return out


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
        image, scale = load_slide_image(adata, library_id)
        yield library_id, positions, centres_all[positions], image, scale
        del image


def iter_slide_patches(
    adata: AnnData,
    *,
    size: float = 224,
    unit: str = "px",
    library_key: str = LIBRARY_KEY,
    batch_size: int = 256,
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Yield ``(library_id, spot positions in adata, patches)`` batches, loading one slide image at a time."""
    for library_id, positions, centres, image, scale in iter_slide_images(adata, library_key):
        side = patch_size_px(adata, library_id, size, unit)
        side_in_image = max(1, int(round(side * scale)))
        for start in range(0, len(positions), batch_size):
            batch = slice(start, start + batch_size)
            patches = cut_patches(image, centres[batch] * scale, side_in_image)
            if side_in_image != side:  # low-resolution fallback image: bring patches to the requested size
                patches = np.stack(
                    [np.asarray(Image.fromarray(p).resize((side, side), Image.Resampling.BILINEAR)) for p in patches]
                )
            yield library_id, positions[batch], patches


def extract_patches(
    adata: AnnData, *, size: float = 224, unit: str = "px", library_key: str = LIBRARY_KEY
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
    for _, positions, patches in iter_slide_patches(adata, size=size, unit=unit, library_key=library_key):
        if out is None:
            out = np.empty((adata.n_obs, *patches.shape[1:]), dtype=np.uint8)
        out[positions] = patches
    if out is None:
        msg = "adata has no spots."
        raise ValueError(msg)
    return out
