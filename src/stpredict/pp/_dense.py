"""Image features on a grid of square bins, with local and wider context, read region by region.

The sub-spot models (``model='istar'``) and :func:`stpredict.tl.super_resolve` see a slide as a grid of
square bins (8 µm by default, Visium HD's size and iStar's 16-px superpixels at 0.5 µm/px). Each bin gets
colour and texture statistics of its own pixels and their means over windows around it (the bin's
context, iStar's "local and global" features in spirit; iStar's HIPT encoder needs weights that are not
bundled). The grid is anchored at the image's origin, so bins of the same slide always line up: training
spots, their bins and a super-resolved map share one grid.

A slide is read in tiles of bins with a margin as wide as the widest context window, so a whole-slide
image is never held in memory and a bin's features do not depend on the tile it was read in.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from .._constants import MICRONS_PER_PIXEL
from ._patches import slide_mpp

#: bins narrower than this many image pixels hold too little of the image to describe (and are refused)
MIN_BIN_PIXELS = 4
#: per-pixel channels: colour (RGB in [0, 1]), colour deconvolution (haematoxylin, eosin), gradient
#: magnitude, haematoxylin-dominated pixels (nuclei), tissue (non-white) pixels
CHANNELS = ("R", "G", "B", "haematoxylin", "eosin", "gradient", "nuclear", "tissue")
#: channels whose spread inside a bin is also a feature (texture)
SPREAD_CHANNELS = ("R", "G", "B", "haematoxylin", "eosin", "gradient")
TISSUE_CHANNEL = CHANNELS.index("tissue")
_WHITE = 255
_GREY_TISSUE = 220 / 255  # as the spot features' tissue fraction


@dataclass(frozen=True)
class DenseFeatures:
    """How bin features are computed: bin size, pixels per bin after resampling, context windows.

    Parameters
    ----------
    bin_um
        Side of a bin in µm.
    px_per_bin
        The image is resampled so that a bin is this many pixels wide before its statistics are taken (the
        same features whatever the scan's resolution).
    context_um
        Widths (µm) of the square windows over which the bins' mean channels are averaged, each a block of
        features; ``()`` for the bins' own pixels only.
    """

    bin_um: float = 8.0
    px_per_bin: int = 8
    context_um: tuple[float, ...] = (32.0, 128.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "context_um", tuple(float(c) for c in self.context_um))
        if not (np.isfinite(self.bin_um) and self.bin_um > 0):
            msg = f"bin_um must be a positive number of microns, got {self.bin_um!r}."
            raise ValueError(msg)
        if int(self.px_per_bin) < 2:
            msg = f"px_per_bin must be at least 2, got {self.px_per_bin!r}."
            raise ValueError(msg)
        if any(c < self.bin_um for c in self.context_um):
            msg = f"context_um {self.context_um} must each be at least one bin ({self.bin_um:g} µm)."
            raise ValueError(msg)

    @property
    def windows(self) -> tuple[int, ...]:
        """Context windows in bins (odd, so centred on the bin)."""
        return tuple(2 * int(round(c / self.bin_um / 2)) + 1 for c in self.context_um)

    @property
    def margin(self) -> int:
        """Bins read around a tile so that its context windows are complete."""
        return max((w // 2 for w in self.windows), default=0)

    @property
    def names(self) -> list[str]:
        own = [f"{c}_mean" for c in CHANNELS] + [f"{c}_std" for c in SPREAD_CHANNELS]
        context = [f"{c}_mean_ctx{w:g}um" for w in self.context_um for c in CHANNELS]
        return own + context

    @property
    def n_features(self) -> int:
        return len(self.names)

    def record(self) -> dict:
        return {"bin_um": float(self.bin_um), "px_per_bin": int(self.px_per_bin), "context_um": list(self.context_um)}


@dataclass(frozen=True)
class BinGrid:
    """Square bins of ``side`` full-resolution pixels from the origin ``(x0, y0)`` (default the image's).

    Bin ``(row, col)`` covers ``x in [x0 + col * side, x0 + (col + 1) * side)`` and the same for ``y``;
    ``n_rows`` x ``n_cols`` bins cover the image. Training bags use the image-anchored grid; a super-resolved
    map may be anchored elsewhere (e.g. on a Visium HD run's bins) since bin features do not depend on it.
    """

    side: float
    n_rows: int
    n_cols: int
    x0: float = 0.0
    y0: float = 0.0

    @classmethod
    def for_image(cls, side: float, width: float, height: float, x0: float = 0.0, y0: float = 0.0) -> BinGrid:
        return cls(float(side), int(math.ceil((height - y0) / side)), int(math.ceil((width - x0) / side)), x0, y0)

    def centres(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """``(n, 2)`` bin centres ``(x, y)`` in full-resolution pixels."""
        x = self.x0 + (np.asarray(cols) + 0.5) * self.side
        return np.column_stack([x, self.y0 + (np.asarray(rows) + 0.5) * self.side])

    def box(self, rows: slice, cols: slice) -> tuple[float, float, float, float]:
        """``(x, y, width, height)`` in pixels of the bins ``rows`` x ``cols``."""
        x, y = self.x0 + cols.start * self.side, self.y0 + rows.start * self.side
        return x, y, (cols.stop - cols.start) * self.side, (rows.stop - rows.start) * self.side

    def index(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, col) of the bins holding the points ``(x, y)``."""
        rows = np.floor((np.asarray(y) - self.y0) / self.side).astype(np.int64)
        return rows, np.floor((np.asarray(x) - self.x0) / self.side).astype(np.int64)

    def bins_in_discs(self, centres: np.ndarray, radius: float) -> list[np.ndarray]:
        """For each disc (centre ``(x, y)``, ``radius`` px), the ``(k, 2)`` (row, col) of bins centred inside it.

        A disc smaller than a bin still gets the bin under its centre.
        """
        reach = int(math.ceil(radius / self.side)) + 1
        offsets = np.arange(-reach, reach + 1)
        out = []
        for x, y in np.asarray(centres, dtype=np.float64):
            r0, c0 = (int(v) for v in self.index(x, y))
            rows, cols = np.meshgrid(r0 + offsets, c0 + offsets, indexing="ij")
            rows, cols = rows.ravel(), cols.ravel()
            centre = self.centres(rows, cols)
            inside = np.hypot(centre[:, 0] - x, centre[:, 1] - y) <= radius
            inside &= (rows >= 0) & (cols >= 0) & (rows < self.n_rows) & (cols < self.n_cols)
            if not inside.any():
                inside = (rows == r0) & (cols == c0)
            out.append(np.column_stack([rows[inside], cols[inside]]))
        return out


def slide_bin_side(adata, library_id: str, bin_um: float) -> float:
    """A bin's side in the slide's full-resolution pixels, with a clear error when it cannot be known or is too small."""
    mpp = slide_mpp(adata, library_id)
    if mpp is None:
        msg = (
            f"Slide {library_id!r} has no scalefactors['{MICRONS_PER_PIXEL}'], so bins of {bin_um:g} µm cannot be "
            f"laid on its image. Set adata.uns['spatial'][{library_id!r}]['scalefactors']['{MICRONS_PER_PIXEL}'] "
            "(read_wsi(mpp=...) for whole-slide images)."
        )
        raise KeyError(msg)
    side = bin_um / float(mpp)
    if side < MIN_BIN_PIXELS:
        msg = (
            f"Bins of {bin_um:g} µm are {side:.1f} pixels wide on slide {library_id!r} ({float(mpp):.2f} µm/px): "
            f"at least {MIN_BIN_PIXELS} pixels are needed to describe a bin's tissue. Use bins of at least "
            f"{MIN_BIN_PIXELS * float(mpp):.0f} µm on this image, or a higher-resolution scan."
        )
        raise ValueError(msg)
    return side


def read_box(image, x0: float, y0: float, width: float, height: float, out_w: int, out_h: int) -> np.ndarray:
    """The full-resolution box ``[x0, x0 + width) x [y0, y0 + height)`` as ``(out_h, out_w, 3)`` uint8; white outside.

    ``image``: an in-memory ``(H, W, 3)`` array or a :class:`~stpredict.io.WholeSlide` (read lazily).
    """
    if not isinstance(image, np.ndarray):  # a whole-slide image: read from the pyramid, then exactly to size
        patch = image.read(int(round(x0)), int(round(y0)), int(round(width)), int(round(height)), out_side=out_w)
        if patch.shape[:2] != (out_h, out_w):
            patch = np.asarray(Image.fromarray(patch).resize((out_w, out_h), Image.Resampling.BILINEAR))
        return patch
    left, top = int(math.floor(x0)), int(math.floor(y0))
    right, bottom = int(math.ceil(x0 + width)), int(math.ceil(y0 + height))
    canvas = np.full((bottom - top, right - left, 3), _WHITE, dtype=np.uint8)
    h, w = image.shape[:2]
    xl, xh, yl, yh = max(left, 0), min(right, w), max(top, 0), min(bottom, h)
    if xl < xh and yl < yh:
        canvas[yl - top : yh - top, xl - left : xh - left] = image[yl:yh, xl:xh, :3]
    box = (x0 - left, y0 - top, x0 - left + width, y0 - top + height)
    method = Image.Resampling.BOX if out_w < width else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(canvas).resize((out_w, out_h), method, box=box))


def pixel_channels(rgb: np.ndarray) -> np.ndarray:
    """``(h, w, len(CHANNELS))`` float32 channels of an RGB uint8 image (see :data:`CHANNELS`)."""
    from skimage.color import rgb2hed

    colour = rgb.astype(np.float32) / 255.0
    hed = rgb2hed(rgb).astype(np.float32)
    grey = colour @ np.array([0.299, 0.587, 0.114], np.float32)
    gy, gx = np.gradient(grey)
    nuclear = (hed[..., 0] > hed[..., 1]).astype(np.float32)
    tissue = (grey < _GREY_TISSUE).astype(np.float32)
    planes = [*np.moveaxis(colour, 2, 0), hed[..., 0], hed[..., 1], np.hypot(gx, gy), nuclear, tissue]
    return np.stack(planes, axis=2)


def block_mean(values: np.ndarray, k: int) -> np.ndarray:
    """``(R * k, C * k, ...)`` -> ``(R, C, ...)``: the means of ``k`` x ``k`` blocks."""
    if k == 1:
        return values
    r, c = values.shape[0] // k, values.shape[1] // k
    return values.reshape(r, k, c, k, *values.shape[2:]).mean(axis=(1, 3))


def _block_stats(channels: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-bin mean of every channel and std of the spread channels, for bins of ``p`` x ``p`` pixels."""
    mean = block_mean(channels, p)
    spread = [CHANNELS.index(name) for name in SPREAD_CHANNELS]
    square = block_mean(channels[..., spread] ** 2, p)
    std = np.sqrt(np.maximum(square - mean[..., spread] ** 2, 0.0))
    return mean, std


def tile_features(image, grid: BinGrid, spec: DenseFeatures, rows: slice, cols: slice) -> np.ndarray:
    """``(n_rows, n_cols, spec.n_features)`` float32 features of the bins ``rows`` x ``cols`` of ``grid``.

    Reads the tile with a margin of ``spec.margin`` bins, so that context windows are complete (outside the
    image counts as white glass).
    """
    m, p = spec.margin, int(spec.px_per_bin)
    r0, r1, c0, c1 = rows.start - m, rows.stop + m, cols.start - m, cols.stop + m
    x, y, width, height = grid.box(slice(r0, r1), slice(c0, c1))
    rgb = read_box(image, x, y, width, height, (c1 - c0) * p, (r1 - r0) * p)
    mean, std = _block_stats(pixel_channels(rgb), p)
    blocks = [mean, std] + [ndimage.uniform_filter(mean, size=(w, w, 1), mode="nearest") for w in spec.windows]
    inner = (slice(m, m + rows.stop - rows.start), slice(m, m + cols.stop - cols.start))
    return np.concatenate([b[inner] for b in blocks], axis=2).astype(np.float32)


def iter_tiles(row_range: tuple[int, int], col_range: tuple[int, int], tile: int) -> Iterator[tuple[slice, slice]]:
    """Tiles of at most ``tile`` x ``tile`` bins covering the given row and column ranges."""
    for r in range(row_range[0], row_range[1], tile):
        for c in range(col_range[0], col_range[1], tile):
            yield slice(r, min(r + tile, row_range[1])), slice(c, min(c + tile, col_range[1]))


def features_at(image, grid: BinGrid, spec: DenseFeatures, bins: np.ndarray, tile: int = 64) -> np.ndarray:
    """Features of the bins ``(k, 2)`` (row, col) of ``grid``, reading only the tiles that hold some of them."""
    bins = np.asarray(bins, dtype=np.int64).reshape(-1, 2)
    out = np.empty((len(bins), spec.n_features), dtype=np.float32)
    if not len(bins):
        return out
    tile_of = (bins[:, 0] // tile) * (grid.n_cols // tile + 1) + bins[:, 1] // tile
    for key in np.unique(tile_of):
        members = np.flatnonzero(tile_of == key)
        r0, c0 = (bins[members[0]] // tile) * tile
        rows, cols = slice(r0, min(r0 + tile, grid.n_rows)), slice(c0, min(c0 + tile, grid.n_cols))
        block = tile_features(image, grid, spec, rows, cols)
        out[members] = block[bins[members, 0] - r0, bins[members, 1] - c0]
    return out
