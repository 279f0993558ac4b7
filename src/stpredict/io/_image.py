"""Access to slide images: a downscaled copy lives in ``uns``, the full-resolution image stays on disk.

Only the path of the full-resolution image is stored (``uns['spatial'][lib]['metadata']['source_image_path']``,
scanpy's key), so concatenating many slides never holds their full images in memory; patch
extraction opens one slide's image at a time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from anndata import AnnData
from PIL import Image, UnidentifiedImageError

from .._constants import SOURCE_IMAGE_KEY, SPATIALDATA_IMAGE_KEY, SPATIALDATA_STORE_KEY
from .._logging import logger, warn
from .._validate import spatial_entry

# H&E scans routinely exceed Pillow's decompression-bomb guard (~89 Mpx); they are trusted local files.
Image.MAX_IMAGE_PIXELS = None

HIRES_MAX_SIDE = 2000  # Space Ranger's "hires" image has 2000 px on its longer side
MAX_DECODED_PIXELS = 400_000_000  # 1.2 GB of RGB: larger whole-slide images are only read region by region

#: rows copied at a time when decoding a slide image into an array
DECODE_STRIP_ROWS = 512


def open_image(path: str | Path) -> Image.Image:
    """Open an image lazily (pixels are not decoded yet), with a clear error if missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        msg = f"Image file {str(path)!r} does not exist. Pass the path of the slide's H&E image."
        raise FileNotFoundError(msg)
    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError) as err:
        msg = f"Could not read image {str(path)!r} ({err}). Supported formats: JPEG, PNG, TIFF (anything Pillow opens)."
        raise ValueError(msg) from err


def decode_rgb(image: Image.Image, path: str | Path) -> np.ndarray:
    """Decode an opened image to an (H, W, 3) uint8 array, with a clear error for truncated or corrupt files."""
    try:
        image.load()
        if image.mode != "RGB":
            image = image.convert("RGB")
        # copy strip by strip into one array: np.asarray(image) would hold the bytes twice more (4.7x peak)
        width, height = image.size
        out = np.empty((height, width, 3), dtype=np.uint8)
        for top in range(0, height, DECODE_STRIP_ROWS):
            bottom = min(height, top + DECODE_STRIP_ROWS)
            out[top:bottom] = np.asarray(image.crop((0, top, width, bottom)))
        return out
    except (OSError, SyntaxError, ValueError) as err:  # Pillow's errors for truncated/corrupt data
        msg = (
            f"Could not decode image {str(path)!r} ({err}): the file is truncated or corrupt (e.g. an interrupted "
            "copy or download). Copy or download it again."
        )
        raise ValueError(msg) from err


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image without decoding its pixels (whole-slide images included)."""
    from ._wsi import WholeSlide, is_wsi

    if Path(path).is_file() and is_wsi(path):
        with WholeSlide(path) as slide:
            return slide.shape[1], slide.shape[0]
    with open_image(path) as image:
        return image.size


def hires_size(width: int, height: int, max_side: int = HIRES_MAX_SIDE) -> tuple[int, int]:
    """(width, height) of the downscaled ``hires`` copy: longer side at most ``max_side``, never upscaled."""
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def require_spots_inside(
    centres: np.ndarray, width: int, height: int, library_id: str, spot_names, what: str, hint: str, image_name=""
) -> None:
    """Fail when spot centres ``(x, y)`` fall outside a ``width`` x ``height`` image, naming a few of them."""
    outside = (centres[:, 0] < 0) | (centres[:, 0] >= width) | (centres[:, 1] < 0) | (centres[:, 1] >= height)
    if outside.any():
        msg = (
            f"Slide {library_id!r}: {int(outside.sum())} spot centre(s) {what} the {width}x{height} px image"
            f"{image_name} (e.g. {list(spot_names[outside][:5])}). {hint}"
        )
        raise ValueError(msg)


def downscaled_copy(path: str | Path, max_side: int = HIRES_MAX_SIDE) -> tuple[np.ndarray, float]:
    """A copy of the image whose longer side is at most ``max_side`` px, and its scale factor.

    JPEG images are decoded directly at a reduced scale (``Image.draft``), which is much faster and
    lighter than decoding the full image first; whole-slide images are read from a low pyramid level.
    """
    from ._wsi import WholeSlide, is_wsi

    if Path(path).is_file() and is_wsi(path):
        with WholeSlide(path) as slide:
            return slide.thumbnail(max_side)
    with open_image(path) as image:
        full_width = image.size[0]
        target = hires_size(*image.size, max_side)
        try:
            image.draft("RGB", target)
            small = image.convert("RGB").resize(target, Image.Resampling.LANCZOS)
        except OSError as err:
            msg = f"Could not decode image {str(path)!r} ({err}): the file is truncated or corrupt; copy it again."
            raise ValueError(msg) from err
    return np.asarray(small), target[0] / full_width


def source_image_path(adata: AnnData, library_id: str) -> Path | None:
    """Path of the full-resolution image of one slide, if recorded.

    Examples
    --------
    >>> import stpredict as st
    >>> st.io.source_image_path(st.datasets.her2st_crop(), "C2").name
    'C2.jpg'
    """
    meta = (spatial_entry(adata, library_id) or {}).get("metadata", {})
    path = meta.get(SOURCE_IMAGE_KEY)
    return Path(path) if path else None


def open_slide_image(adata: AnnData, library_id: str):
    """The slide's image for patch reading, and its scale to full resolution.

    A lazily read :class:`WholeSlide` for whole-slide images (pyramidal TIFF, vendor formats), else the
    decoded array of :func:`load_slide_image`. Close a ``WholeSlide`` when done.
    """
    path = source_image_path(adata, library_id)
    if path is not None and path.is_file():
        from ._wsi import WholeSlide, is_wsi

        if is_wsi(path):
            meta = spatial_entry(adata, library_id).get("metadata", {})
            return WholeSlide(path, backend=meta.get("wsi_backend", "auto")), 1.0
    return load_slide_image(adata, library_id)


def load_slide_image(adata: AnnData, library_id: str) -> tuple[np.ndarray, float]:
    """The best available image of a slide as an (H, W, 3) uint8 array, and its scale to full resolution.

    The full-resolution image is read from ``source_image_path``; if that file is not there, the
    ``hires`` image in ``uns`` is used instead, with a warning, because patches cut from it have fewer pixels.
    Returns ``(image, scale)`` where pixel coordinates in ``image`` are ``obsm['spatial'] * scale``.

    Examples
    --------
    >>> import stpredict as st
    >>> image, scale = st.io.load_slide_image(st.datasets.her2st_crop(), "C3")
    >>> image.dtype.name, image.shape[2], scale
    ('uint8', 3, 1.0)
    """
    path = source_image_path(adata, library_id)
    if path is not None and path.is_file():
        from ._wsi import WholeSlide, is_wsi

        if is_wsi(path):  # whole-slide images are decoded whole only when small enough to hold
            with WholeSlide(path) as whole:
                height, width = whole.shape[:2]
                if height * width > MAX_DECODED_PIXELS:
                    msg = (
                        f"Slide {library_id!r} is a {width} x {height} px whole-slide image ({3 * height * width / 1e9:.1f} "
                        "GB of RGB): it is not decoded whole. Read regions with st.io.WholeSlide, or patches with "
                        "st.pp.extract_patches (they read only what they need)."
                    )
                    raise MemoryError(msg)
                return whole.read(0, 0, width, height), 1.0
        with open_image(path) as image:
            return decode_rgb(image, path), 1.0
    slide = spatial_entry(adata, library_id)
    meta = (slide or {}).get("metadata", {})
    store, element = meta.get(SPATIALDATA_STORE_KEY), meta.get(SPATIALDATA_IMAGE_KEY)
    if path is None and store and element and Path(store).exists():
        from ._spatialdata_image import read_spatialdata_image  # needs spatialdata: imported only for such slides

        return read_spatialdata_image(store, element), 1.0
    if slide is None:
        msg = (
            f"No image for slide {library_id!r}: adata.uns['spatial'][{library_id!r}] is missing. "
            "Read the slide with `st.io.read_st`/`st.io.read_visium` (they record the image)."
        )
        raise KeyError(msg)
    images = slide.get("images", {})
    if "hires" not in images:
        msg = (
            f"Slide {library_id!r} has neither a readable full-resolution image ({path}) nor a 'hires' image. Set "
            f"adata.uns['spatial'][{library_id!r}]['metadata']['{SOURCE_IMAGE_KEY}'] to the image path."
        )
        raise FileNotFoundError(msg)
    scale = float(slide["scalefactors"]["tissue_hires_scalef"])
    if path is not None:
        where = f"not found at {str(path)!r}"
    elif store:
        where = f"not found (SpatialData store {store!r} is gone)"
    else:
        where = "not recorded"
    warn(
        f"Full-resolution image of slide {library_id!r} {where}; using the 'hires' image "
        f"(scale {scale:.3f}), so patches carry less detail. Set "
        f"adata.uns['spatial'][{library_id!r}]['metadata']['{SOURCE_IMAGE_KEY}'] to the image path to fix this."
    )
    logger.info("slide %s: using hires image", library_id)
    hires = np.asarray(images["hires"])
    if hires.dtype != np.uint8:  # scanpy stores float images in [0, 1]
        hires = np.clip(hires * 255.0 if hires.max() <= 1.0 else hires, 0, 255).astype(np.uint8)
    return hires[..., :3], scale
