"""Tissue detection on a slide's overview image: where virtual spots may go."""

from __future__ import annotations

import numpy as np


def detect_tissue(
    image: np.ndarray,
    *,
    threshold: float | None = None,
    min_object_fraction: float = 0.001,
    max_hole_fraction: float = 0.0005,
    exclude_pen: bool = True,
) -> np.ndarray:
    """Tissue mask of an RGB overview: Otsu on saturation, pen ink and dark debris removed, cleaned up.

    Stained tissue is saturated (pink/purple) while glass is grey-white, so an Otsu threshold on the HSV
    saturation separates them without weights. Ink from slide markers is saturated too: blue, green and black
    pixels (hue outside eosin/haematoxylin's magenta-to-purple range, or very dark) are left out when
    ``exclude_pen``. Small specks are removed, small holes (e.g. lumens smaller than ``max_hole_fraction`` of
    the image) are filled, and a closing joins tissue split by thin gaps.

    Parameters
    ----------
    image
        ``(H, W, 3)`` uint8 overview (e.g. the ``hires`` image of ``read_wsi``).
    threshold
        Saturation threshold in [0, 1] instead of Otsu's.
    min_object_fraction, max_hole_fraction
        Objects smaller than / holes smaller than these fractions of the image area are removed / filled.
    exclude_pen
        Leave out blue, green and black ink.

    Returns
    -------
    Boolean ``(H, W)`` mask.

    Examples
    --------
    >>> import numpy as np, stpredict as st
    >>> image = np.full((200, 200, 3), 235, np.uint8)
    >>> image[50:150, 50:150] = (200, 120, 180)  # pink tissue
    >>> image[10:20, 10:190] = (30, 60, 200)     # a blue pen line
    >>> mask = st.io.detect_tissue(image)
    >>> bool(mask[100, 100]), bool(mask[15, 100]), bool(mask[5, 5])
    (True, False, False)
    """
    from scipy import ndimage
    from skimage import color, filters, morphology

    rgb = np.asarray(image)[..., :3]
    hsv = color.rgb2hsv(rgb)
    hue, saturation, value = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    if threshold is None:
        threshold = float(filters.threshold_otsu(saturation)) if np.ptp(saturation) > 0 else 1.0
        threshold = max(threshold, 0.05)  # a blank slide has no bimodal saturation: do not call glass tissue
    mask = saturation > threshold
    if exclude_pen:
        # H&E hues run from magenta/pink through purple (~0.7-1.0) and into red/orange (0-0.1); ink is
        # blue/green (0.25-0.7) and black ink is dark whatever its hue.
        pen = ((hue > 0.25) & (hue < 0.68) & (saturation > 0.3)) | (value < 0.15)
        mask &= ~pen
    area = mask.size
    radius = max(1, round(min(mask.shape) / 200))
    mask = ndimage.binary_closing(mask, structure=morphology.disk(radius), border_value=0)
    mask = _drop_components(mask, min_object_fraction * area)
    return ~_drop_components(~mask, max_hole_fraction * area)  # holes: small components of the background


def _drop_components(mask: np.ndarray, min_area: float) -> np.ndarray:
    """``mask`` without its connected components (8-connectivity) smaller than ``min_area`` pixels."""
    from scipy import ndimage

    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_area
    keep[0] = False
    return keep[labels]
