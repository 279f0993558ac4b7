"""Images of SpatialData stores as RGB arrays (read lazily by ``io._image`` and by the SpatialData reader)."""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np


def _image_scales(image) -> list:
    """The pyramid levels of an image element (DataArrays), finest first; one for a single-scale image."""
    from spatialdata import get_pyramid_levels
    from xarray import DataTree

    return get_pyramid_levels(image) if isinstance(image, DataTree) else [image]


def _as_rgb_uint8(array: np.ndarray, image_key: str) -> np.ndarray:
    """``(c, y, x)`` pixels as ``(y, x, 3)`` uint8; float images in [0, 1] are scaled to 0-255."""
    if array.shape[0] not in (3, 4):
        msg = f"Image {image_key!r} has {array.shape[0]} channel(s); an RGB(A) H&E image is needed."
        raise ValueError(msg)
    rgb = np.moveaxis(array[:3], 0, -1)
    if rgb.dtype == np.uint8:
        return np.ascontiguousarray(rgb)
    if np.issubdtype(rgb.dtype, np.floating) and np.nanmax(rgb) <= 1.0:
        return np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)
    if np.issubdtype(rgb.dtype, np.integer) and rgb.max() <= 255:
        return rgb.astype(np.uint8)
    msg = f"Image {image_key!r} has {rgb.dtype} values outside 0-255 (or 0-1 for floats); convert it to 8-bit RGB."
    raise ValueError(msg)


def read_spatialdata_image(store: str | PathLike, image_key: str) -> np.ndarray:
    """The full-resolution image ``image_key`` of a SpatialData Zarr store as ``(y, x, 3)`` uint8."""
    import spatialdata as sd

    store = Path(store)  # load_slide_image checked that it exists
    sdata = sd.read_zarr(store, selection=("images",))
    if image_key not in sdata.images:
        msg = f"SpatialData store {str(store)!r} has no image {image_key!r}; it has {list(sdata.images)}."
        raise KeyError(msg)
    return _as_rgb_uint8(np.asarray(_image_scales(sdata.images[image_key])[0].data), image_key)
