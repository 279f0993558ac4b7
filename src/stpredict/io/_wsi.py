"""Whole-slide images: lazy region reads from pyramidal files (OpenSlide or tiffslide).

A 40x whole-slide image holds 20-60 GB of RGB pixels, so it is never decoded whole: patches are read as
regions from the pyramid level closest to the requested resolution, and the slide's overview comes from
a low-resolution level. Both backends expose the OpenSlide API; ``backend='auto'`` prefers OpenSlide
(it reads every vendor format, MRXS included) and falls back to tiffslide (pure Python, no C library).
"""

from __future__ import annotations

import math
import warnings
from os import PathLike
from pathlib import Path

import numpy as np
from PIL import Image

from .._files import atomic_path

#: vendor formats that only a WSI library reads; ``.tif``/``.tiff`` are WSIs when tiled (pyramidal)
WSI_SUFFIXES = (".svs", ".ndpi", ".mrxs", ".scn", ".bif", ".vms", ".vmu", ".svslide")
TIFF_SUFFIXES = (".tif", ".tiff")
BACKGROUND = 255  # outside the scanned area: white glass


def is_wsi(path: str | PathLike) -> bool:
    """Whether ``path`` must be read region by region (a vendor WSI format, or a tiled TIFF).

    Examples
    --------
    >>> import stpredict as st
    >>> st.io.is_wsi("slide.svs"), st.io.is_wsi(st.datasets.her2st_crop_files()["C2"]["image"])
    (True, False)
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in WSI_SUFFIXES:
        return True
    if suffix in TIFF_SUFFIXES and path.is_file():
        import tifffile

        try:
            with tifffile.TiffFile(path) as tif:
                return bool(tif.pages[0].is_tiled)
        except (tifffile.TiffFileError, OSError, ValueError, IndexError) as err:
            msg = f"Could not read TIFF {str(path)!r} ({err}): the file is truncated or corrupt; copy it again."
            raise ValueError(msg) from err
    return False


def _open_backend(path: Path, backend: str):
    """``(slide object with the OpenSlide API, backend name)``."""
    if backend not in ("auto", "openslide", "tiffslide"):
        msg = f"backend must be 'auto', 'openslide' or 'tiffslide', not {backend!r}."
        raise ValueError(msg)
    errors = []
    for name in ("openslide", "tiffslide") if backend == "auto" else (backend,):
        try:
            if name == "openslide":
                import openslide

                return openslide.OpenSlide(str(path)), name
            import tiffslide

            return tiffslide.TiffSlide(str(path)), name
        except ImportError as err:
            errors.append(f"{name}: not installed ({err})")
        except Exception as err:  # noqa: BLE001 - each library raises its own "unsupported format" type
            errors.append(f"{name}: {type(err).__name__}: {err}")
    msg = (
        f"Could not open {str(path)!r} as a whole-slide image ({'; '.join(errors)}). Supported: pyramidal TIFF "
        f"and the vendor formats {', '.join(WSI_SUFFIXES)} through OpenSlide (`pip install 'stpredict[wsi]'` "
        "installs openslide-python, openslide-bin and tiffslide)."
    )
    raise ValueError(msg)


class WholeSlide:
    """A whole-slide image read lazily: regions at any resolution from its pyramid.

    Coordinates are level-0 (full-resolution) pixels, ``(x, y)``, as ``obsm['spatial']``. The object mimics
    the part of a numpy image that patch extraction uses (``shape``), so patches, neighbour views and
    features are cut from it exactly as from an in-memory image, but only the regions needed are decoded.

    Parameters
    ----------
    path
        A pyramidal TIFF or a vendor WSI file (``.svs``, ``.ndpi``, ``.mrxs``, ...).
    backend
        ``'auto'`` (OpenSlide if installed, else tiffslide), ``'openslide'`` or ``'tiffslide'``.

    Examples
    --------
    >>> import numpy as np, stpredict as st
    >>> from stpredict.io._wsi import WholeSlide
    >>> path = st.io.write_pyramidal_tiff(np.full((600, 800, 3), 200, np.uint8), "doc_wsi.tif", mpp=0.5)
    >>> with WholeSlide(path) as slide:
    ...     slide.shape, slide.mpp, slide.read(0, 0, 400, 400, out_side=100).shape
    ((600, 800, 3), 0.5, (100, 100, 3))
    """

    def __init__(self, path: str | PathLike, backend: str = "auto") -> None:
        self.path = Path(path)
        if not self.path.is_file():
            msg = f"Whole-slide image {str(self.path)!r} does not exist."
            raise FileNotFoundError(msg)
        self._slide, self.backend = _open_backend(self.path, backend)
        width, height = self._slide.dimensions
        self.shape = (int(height), int(width), 3)
        self.level_downsamples = tuple(float(d) for d in self._slide.level_downsamples)

    @property
    def mpp(self) -> float | None:
        """Microns per level-0 pixel from the file's metadata (``None`` when the file does not say)."""
        props = self._slide.properties
        values = []
        for axis in ("x", "y"):
            for prefix in ("openslide", "tiffslide"):
                value = props.get(f"{prefix}.mpp-{axis}")
                if value not in (None, ""):
                    values.append(float(value))
                    break
        values = [v for v in values if np.isfinite(v) and v > 0]
        return float(np.mean(values)) if values else None

    def best_level(self, downsample: float) -> int:
        """The coarsest pyramid level that still has at least the requested resolution."""
        levels = [i for i, d in enumerate(self.level_downsamples) if d <= downsample * 1.001]
        return max(levels, key=lambda i: self.level_downsamples[i]) if levels else 0

    def read(self, x0: int, y0: int, width: int, height: int, *, out_side: int | None = None) -> np.ndarray:
        """The level-0 box ``[x0, x0 + width) x [y0, y0 + height)`` as RGB uint8, resampled to ``out_side``.

        Read from the coarsest level that has the output's resolution; outside the slide is white.
        """
        out_w, out_h = (width, height) if out_side is None else (out_side, round(out_side * height / width))
        patch = self._read(x0, y0, width, height, out_w, out_h)
        # outside the slide is white glass whatever the backend returns there (transparent or black)
        xs = x0 + (np.arange(out_w) + 0.5) * width / out_w
        ys = y0 + (np.arange(out_h) + 0.5) * height / out_h
        outside_x, outside_y = (xs < 0) | (xs >= self.shape[1]), (ys < 0) | (ys >= self.shape[0])
        if outside_x.any() or outside_y.any():
            patch = patch.copy()
            patch[:, outside_x] = BACKGROUND
            patch[outside_y] = BACKGROUND
        return patch

    def _read(self, x0: int, y0: int, width: int, height: int, out_w: int, out_h: int) -> np.ndarray:
        level = self.best_level(width / out_w)
        scale = self.level_downsamples[level]
        if level == 0:
            region = _over_white(self._region((int(x0), int(y0)), 0, (int(width), int(height))))
            if region.size == (out_w, out_h):
                return np.asarray(region)
            method = Image.Resampling.BILINEAR if out_w > width else Image.Resampling.BOX
            return np.asarray(region.resize((out_w, out_h), method))
        # Backends map level-0 coordinates to a level's pixels differently (OpenSlide rounds, tiffslide
        # floors), so read whole level pixels from an unambiguous start and cut the exact box when resampling.
        lx, ly = math.floor(x0 / scale), math.floor(y0 / scale)
        size = (math.ceil((x0 + width) / scale) - lx + 1, math.ceil((y0 + height) / scale) - ly + 1)
        start = (math.ceil(lx * scale), math.ceil(ly * scale))  # maps back to (lx, ly) under floor or round
        region = _over_white(self._region(start, level, size))
        box = (x0 / scale - lx, y0 / scale - ly, (x0 + width) / scale - lx, (y0 + height) / scale - ly)
        method = Image.Resampling.BILINEAR if out_w > width / scale else Image.Resampling.BOX
        return np.asarray(region.resize((out_w, out_h), method, box=box))

    def _region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> Image.Image:
        with warnings.catch_warnings():  # tiffslide warns on regions reaching past the edge: they are padded
            warnings.filterwarnings("ignore", message=".*out-of-bounds.*")
            try:
                return self._slide.read_region(location, level, size)
            except Exception as err:  # OpenSlideError / tifffile / zarr errors on damaged tiles
                msg = (
                    f"Could not read a region at {location} (level {level}) of {str(self.path)!r} with {self.backend} "
                    f"({type(err).__name__}: {err}): the file is truncated or corrupt; copy it again."
                )
                raise ValueError(msg) from err

    def thumbnail(self, max_side: int = 2000) -> tuple[np.ndarray, float]:
        """An overview whose longer side is at most ``max_side`` px, and its scale to level 0."""
        scale = min(1.0, max_side / max(self.shape[:2]))
        size = (max(1, round(self.shape[1] * scale)), max(1, round(self.shape[0] * scale)))
        level = self.best_level(1 / scale)
        level_scale = self.level_downsamples[level]
        full = (
            math.ceil(self.shape[1] / level_scale),
            math.ceil(self.shape[0] / level_scale),
        )
        overview = _over_white(self._region((0, 0), level, full)).resize(size, Image.Resampling.BOX)
        return np.asarray(overview), size[0] / self.shape[1]

    def close(self) -> None:
        self._slide.close()

    def __enter__(self) -> WholeSlide:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        mpp = f"{self.mpp:.3f} um/px" if self.mpp else "pixel size unknown"
        return (
            f"WholeSlide({self.path.name!r}: {self.shape[1]} x {self.shape[0]} px, {len(self.level_downsamples)} "
            f"level(s), {mpp}, {self.backend})"
        )


def _over_white(region: Image.Image) -> Image.Image:
    """RGBA regions (transparent outside the scanned area) composited onto white, as RGB."""
    if region.mode != "RGBA":
        return region.convert("RGB")
    white = Image.new("RGBA", region.size, (BACKGROUND, BACKGROUND, BACKGROUND, 255))
    return Image.alpha_composite(white, region).convert("RGB")


def write_pyramidal_tiff(
    image: np.ndarray,
    path: str | PathLike,
    *,
    mpp: float,
    tile: int = 256,
    min_side: int = 512,
    compression: str = "jpeg",
    quality: int = 90,
) -> Path:
    """Write an RGB image as a tiled pyramidal TIFF with its pixel size (readable by OpenSlide and tiffslide).

    Levels halve the resolution until the longer side is below ``min_side``; each level is a page of the
    main IFD chain (OpenSlide's generic-TIFF layout), the resolution tags carry ``mpp``.

    Parameters
    ----------
    image
        ``(H, W, 3)`` uint8.
    path
        Output file.
    mpp
        Microns per pixel of ``image``.
    tile
        Tile side (a multiple of 16).
    min_side
        Stop adding levels below this size.
    compression, quality
        TIFF compression (``'jpeg'``, without chroma subsampling; ``'zlib'``; ``None``) and JPEG quality.

    Returns
    -------
    The path written.

    Examples
    --------
    >>> import numpy as np, stpredict as st
    >>> path = st.io.write_pyramidal_tiff(np.zeros((1200, 1000, 3), np.uint8), "doc_pyramid.tif", mpp=0.25)
    >>> st.io.is_wsi(path)
    True
    """
    import tifffile

    image = np.ascontiguousarray(image[..., :3], dtype=np.uint8)
    path = Path(path)
    resolution = 1e4 / float(mpp)  # pixels per centimetre
    options = {"tile": (tile, tile), "photometric": "rgb", "resolutionunit": "CENTIMETER", "metadata": None}
    if compression == "jpeg":  # full-resolution colour (no 4:2:0 chroma subsampling): eosin detail survives
        options.update(compression="jpeg", compressionargs={"level": quality}, subsampling=(1, 1))
    elif compression is not None:
        options["compression"] = compression
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=image.nbytes > 2**31) as tif:
        level, factor = image, 1
        while True:
            tif.write(level, subfiletype=0 if factor == 1 else 1, resolution=(resolution / factor,) * 2, **options)
            if max(level.shape[:2]) // 2 < min_side:
                break
            factor *= 2
            size = (max(1, level.shape[1] // 2), max(1, level.shape[0] // 2))
            level = np.asarray(Image.fromarray(level).resize(size, Image.Resampling.BOX))
    return path
