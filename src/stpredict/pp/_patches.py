"""Image patches around spot centres, cut from one slide's image at a time."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from anndata import AnnData

from .._constants import LIBRARY_KEY, MICRONS_PER_PIXEL
from .._docs import doc_params
from .._logging import logger, warn
from .._validate import library_ids, require_spatial, spatial_entry, spot_libraries
from ..io._image import open_slide_image
from ..io._resize import resize_patches

BACKGROUND = 255  # outside the scan is empty glass: pad with white
MIN_PATCH_PX = 8  # texture and nuclei features need a few pixels around the centre
LARGE_PATCH_PX = 2048  # spots are 55-200 µm: 100-800 px at 0.25-0.5 µm/px; far larger is usually a unit mistake
#: memory of one batch of patches as float32 (what feature extractors convert them to): batches shrink to fit
PATCH_BATCH_BYTES = 512 * 2**20
#: a patch is background when under this fraction of its pixels look like stained tissue
TISSUE_FRACTION_MIN = 0.1
#: warn when more than this share of a slide's spots have background patches (0 % on correctly placed HER2ST
#: sections; 14-95 % with swapped, shifted or scaled coordinates or another section's image)
BACKGROUND_SHARE_WARN = 0.1


def check_patch_side(side: int, size: float, unit: str, library_id: str) -> None:
    """Refuse patch sizes that cannot give features, warn about ones that are likely a unit mistake."""
    if not np.isfinite(side) or side < MIN_PATCH_PX:
        msg = (
            f"Patch size {size!r} {unit} is {side} px on slide {library_id!r}; patches must be at least "
            f"{MIN_PATCH_PX} px (spots are typically 55-200 µm, e.g. size=224 (px) or size=100, unit='um')."
        )
        raise ValueError(msg)
    per_patch = 3 * 4 * side * side
    if per_patch > 4 * PATCH_BATCH_BYTES:
        msg = (
            f"Patch size {size!r} {unit} is {side} px on slide {library_id!r}: one patch would take "
            f"{per_patch / 2**30:.1f} GiB as floats. Spots are typically 55-200 µm (100-800 px); check `size` and `unit`."
        )
        raise MemoryError(msg)
    if side > LARGE_PATCH_PX:
        warn(
            f"Patches of {side} px on slide {library_id!r} are unusually large (spots are typically 100-800 px): "
            f"{per_patch / 2**20:.0f} MiB each as floats, so they are processed a few at a time. Check `size` and `unit`."
        )


def batch_size_for(side: int, batch_size: int) -> int:
    """``batch_size`` reduced so a batch of ``side``-px patches stays within :data:`PATCH_BATCH_BYTES` as floats."""
    return max(1, min(batch_size, PATCH_BATCH_BYTES // (3 * 4 * side * side)))


def tissue_fraction(patches: np.ndarray) -> np.ndarray:
    """Fraction of each patch's pixels that look like stained tissue (coloured or dark), on every 4th pixel.

    Glass and pen-free background are bright and grey; haematoxylin and eosin are saturated or dark.
    """
    sample = patches[:, ::4, ::4, :3].astype(np.int16)
    saturation = sample.max(axis=-1) - sample.min(axis=-1)
    tissue = (saturation > 25) | (sample.mean(axis=-1) < 180)
    return tissue.reshape(len(patches), -1).mean(axis=1)


def check_spots_on_image(library_id: str, centres: np.ndarray, height: float, width: float) -> None:
    """Refuse a slide whose spots all lie outside its image, warn when some do (coordinates or image are wrong)."""
    outside = (centres[:, 0] < 0) | (centres[:, 1] < 0) | (centres[:, 0] >= width) | (centres[:, 1] >= height)
    if not outside.any():
        return
    where = (
        f"spot centres span x {centres[:, 0].min():.0f}-{centres[:, 0].max():.0f}, y {centres[:, 1].min():.0f}-"
        f"{centres[:, 1].max():.0f}; the image is {width:.0f} x {height:.0f} px (full resolution)"
    )
    if outside.all():
        msg = (
            f"No spot of slide {library_id!r} lies on its image ({where}). obsm['spatial'] must hold (x, y) in "
            "full-resolution pixels of this slide's image: check for swapped x/y, hires-scaled coordinates, or the "
            "wrong image in uns['spatial'][library_id]['metadata']['source_image_path']."
        )
        raise ValueError(msg)
    warn(
        f"{int(outside.sum())} of {len(centres)} spots of slide {library_id!r} lie outside its image ({where}); their "
        "patches are padded with white. Check obsm['spatial'] and the slide's image."
    )


def warn_background(library_id: str, fractions: np.ndarray) -> None:
    """Warn when many of a slide's patches are background: spots and image probably do not match."""
    share = float(np.mean(fractions < TISSUE_FRACTION_MIN)) if len(fractions) else 0.0
    if share > BACKGROUND_SHARE_WARN:
        warn(
            f"{share:.0%} of the patches of slide {library_id!r} show almost no tissue (under "
            f"{TISSUE_FRACTION_MIN:.0%} stained pixels). The spot coordinates may not match the image (swapped x/y, "
            "wrong scale or offset, another slide's image): plot them with st.pl.tissue or sc.pl.spatial to check."
        )


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


def slide_mpp(adata: AnnData, library_id: str) -> float | None:
    """Microns per full-resolution pixel of a slide (``None`` when not recorded)."""
    mpp = (spatial_entry(adata, library_id) or {}).get("scalefactors", {}).get(MICRONS_PER_PIXEL)
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
        height, width = image.shape[:2]
        check_spots_on_image(library_id, centres_all[positions], height / scale, width / scale)
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
    shard: tuple[int, int] | None = None,
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Yield ``(library_id, spot positions in adata, patches)`` batches, opening one slide image at a time.

    Whole-slide images are read region by region; ``target_mpp`` resamples every slide's patches to one
    pixel size (see :func:`patch_geometry`). ``shard=(i, n)`` yields only every ``n``-th batch from the
    ``i``-th (a DataLoader worker's share) and leaves the background warning to the caller.
    """
    index, count = shard or (0, 1)
    number = -1
    slides = spot_libraries(adata, library_key)
    for library_id in library_ids(adata, library_key):
        side, out_side = patch_geometry(adata, library_id, size, unit, target_mpp)
        check_patch_side(max(side, out_side), size, unit, library_id)
        positions = np.flatnonzero(slides == library_id)
        physical = _requested_um(adata, library_id, size, unit, target_mpp)
        store = _usable_store(adata, library_id, positions, physical, out_side)
        fractions = []
        if store is not None:  # the patches the data set ships (e.g. HEST-1k's): no slide image is opened
            barcodes = adata.obs[store.record["barcode_key"]].to_numpy()[positions]
            step = batch_size_for(max(store.record["side"], out_side), batch_size)
            with store:
                for start in range(0, len(positions), step):
                    number += 1
                    if number % count == index:
                        patches = store.read(barcodes[start : start + step], physical, out_side)
                        fractions.append(tissue_fraction(patches))
                        yield library_id, positions[start : start + step], patches
        else:
            for batch_positions, cut in _cut_from_image(adata, library_id, positions, side, out_side, batch_size):
                number += 1
                if number % count == index:
                    patches = cut()
                    fractions.append(tissue_fraction(patches))
                    yield library_id, batch_positions, patches
        if shard is None:
            warn_background(library_id, np.concatenate(fractions) if fractions else np.empty(0))


def _cut_from_image(
    adata: AnnData, library_id: str, positions: np.ndarray, side: int, out_side: int, batch_size: int
) -> Iterator[tuple[np.ndarray, Callable[[], np.ndarray]]]:
    """``(positions, cut)`` batches of one slide: ``cut()`` cuts them from its image (WSIs read lazily).

    Only the batches the caller cuts are read (a DataLoader worker skips the others' share).
    """
    _refuse_missing_image_for_stored(adata, library_id, side, out_side)  # (only reached when the store cannot serve)
    image, scale = open_slide_image(adata, library_id)
    try:
        height, width = image.shape[:2]
        centres = require_spatial(adata)[positions]
        check_spots_on_image(library_id, centres, height / scale, width / scale)
        side_in_image = max(1, int(round(side * scale)))  # scale < 1: the low-resolution fallback image
        step = batch_size_for(max(side_in_image, out_side), batch_size)
        for start in range(0, len(positions), step):
            batch = slice(start, start + step)
            yield positions[batch], lambda c=centres[batch] * scale: cut_patches(image, c, side_in_image, out_side)
    finally:
        if not isinstance(image, np.ndarray):
            image.close()


def _refuse_missing_image_for_stored(adata: AnnData, library_id: str, side: int, out_side: int) -> None:
    """A slide read from stored patches only (no image file) cannot give patches the store does not hold."""
    from ..io._image import source_image_path
    from ..io._stored_patches import STORED_PATCHES_KEY

    record = (spatial_entry(adata, library_id) or {}).get("metadata", {}).get(STORED_PATCHES_KEY)
    path = source_image_path(adata, library_id)
    if record is None or (path is not None and path.is_file()):
        return
    mpp = slide_mpp(adata, library_id) or float("nan")
    msg = (
        f"Slide {library_id!r} has no image file, only stored patches ({record['side']} px at {record['mpp']:g} µm/px, "
        f"{record['side'] * record['mpp']:g} µm), which cannot give {out_side} px patches of {side * mpp:.4g} µm "
        "(more tissue, a finer pixel size, or spots without a stored patch). Ask for at most that area at that pixel "
        "size, e.g. size=224, unit='px', target_mpp=0.5, or download the sample's WSI."
    )
    raise ValueError(msg)


def _requested_um(adata: AnnData, library_id: str, size: float, unit: str, target_mpp: float | None) -> float | None:
    """The width of tissue a patch request covers, in µm, as asked (before rounding to slide pixels)."""
    mpp = slide_mpp(adata, library_id)
    if unit == "um":
        return float(size)
    if target_mpp is not None:
        return float(size) * target_mpp
    return None if mpp is None else float(size) * mpp


def _usable_store(adata: AnnData, library_id: str, positions: np.ndarray, physical: float | None, out_side: int):
    """The slide's stored patches when they hold every spot's patch of this geometry, else ``None``."""
    from ..io._stored_patches import STORED_PATCHES_KEY, StoredPatches, can_serve

    record = (spatial_entry(adata, library_id) or {}).get("metadata", {}).get(STORED_PATCHES_KEY)
    if record is None or physical is None or not can_serve(dict(record), physical, out_side):
        return None
    record = dict(record)
    if not Path(record["path"]).is_file() or record["barcode_key"] not in adata.obs:
        return None
    store = StoredPatches(record)
    missing = store.missing(adata.obs[record["barcode_key"]].to_numpy()[positions])
    if missing:  # e.g. HEST left out spots with little tissue: cut every patch of this slide from its image
        store.handle.close()
        logger.info("slide %r: %d spots have no stored patch; cutting from the slide image", library_id, len(missing))
        return None
    return store


def _check_total_patch_memory(
    adata: AnnData, size: float, unit: str, library_key: str, target_mpp: float | None
) -> None:
    """Refuse to hold all patches when they would take over half of the machine's memory."""
    import psutil

    sides = [patch_geometry(adata, lib, size, unit, target_mpp)[1] for lib in library_ids(adata, library_key)]
    needed = adata.n_obs * 3 * max(sides, default=0) ** 2
    available = psutil.virtual_memory().total
    if needed > available / 2:
        msg = (
            f"extract_patches would hold {adata.n_obs} patches of {max(sides)} px: {needed / 2**30:.1f} GiB, over half "
            f"of this machine's {available / 2**30:.0f} GiB. Compute features with st.pp.image_features (it works in "
            "batches), iterate with st.pp.iter_neighbour_views, or extract fewer spots at a time."
        )
        raise MemoryError(msg)


@doc_params("library_key")
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
    {library_key}
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
    _check_total_patch_memory(adata, size, unit, library_key, target_mpp)
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
