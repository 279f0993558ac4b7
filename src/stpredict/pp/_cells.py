"""Nuclei on a grid of bins, read tile by tile: what a cell-level model sees of each cell.

A tile of bins (:mod:`stpredict.pp._dense`) is read with a margin, its nuclei are segmented at the image's
resolution (:func:`stpredict.pp.segment_nuclei`; objects over :data:`MAX_NUCLEUS_AREA_UM2` are left out) and
each nucleus whose centroid lies in the tile gets

- the pixel counts of the bins it covers (so a bin-level prediction can be averaged over it, as iStar
  assigns superpixels to cells),
- its features: the area-weighted mean of those bins' features (its own pixels and their 32/128 µm context)
  and the nucleus' own statistics (:data:`NUCLEUS_STATS`),
- its centroid and outline.

A nucleus belongs to the tile holding its centroid, so nuclei on tile borders are whole and counted once.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage.color import rgb2hed
from skimage.measure import find_contours
from skimage.segmentation import relabel_sequential

from ._dense import BinGrid, DenseFeatures, features_at, iter_tiles, read_box, tile_features
from ._nuclei import haematoxylin_threshold, segment_nuclei

#: a nucleus' outline: this many points along its contour (full-resolution px), in ``obsm['outline']``
OUTLINE_POINTS = 16
#: µm read around a tile so that nuclei on its border are segmented whole
CELL_MARGIN_UM = 16.0
#: larger segmented objects are clumps or stroma, not a nucleus (~18 µm across), and are left out
MAX_NUCLEUS_AREA_UM2 = 250.0
#: neighbours closer than this (centre to centre) count towards a nucleus' crowding
CROWDING_UM = 20.0
#: a nucleus' own statistics; ``no_nucleus`` is 1 for the stand-in of a spot where no nucleus was found
NUCLEUS_STATS = (
    "log_area_um2",
    "haematoxylin_mean",
    "haematoxylin_std",
    "eosin_mean",
    "grey_mean",
    "eccentricity",
    "neighbours_20um",
    "no_nucleus",
)


@dataclass(frozen=True)
class CellFeatures:
    """What describes a cell: its bins' features (``dense``) and the nucleus' own statistics."""

    dense: DenseFeatures

    @property
    def names(self) -> list[str]:
        return [f"bins_{n}" for n in self.dense.names] + [f"nucleus_{s}" for s in NUCLEUS_STATS]

    @property
    def n_features(self) -> int:
        return len(self.names)

    def empty_spot(self, bin_features: np.ndarray) -> np.ndarray:
        """The stand-in cell of a spot without nuclei: its bins' features, no nucleus (statistics 0, flag 1)."""
        stats = np.zeros((len(bin_features), len(NUCLEUS_STATS)), np.float32)
        stats[:, -1] = 1.0
        return np.concatenate([bin_features, stats], axis=1)


@dataclass(frozen=True)
class TileCells:
    """The nuclei of one tile (those with their centroid in it), in the pixels of the image read."""

    counts: sp.csr_matrix  # (cells, bins): pixels of each nucleus in each of the bins it touches
    bins: np.ndarray  # (bins, 2): their (row, col) on the grid
    bin_features: np.ndarray | None  # (bins, dense features), or None until read
    nucleus: np.ndarray  # (cells, NUCLEUS_STATS)
    centroids: np.ndarray  # (cells, 2) x, y
    area_px: np.ndarray  # (cells,)
    outlines: np.ndarray | None  # (cells, OUTLINE_POINTS, 2) x, y

    def bin_mean(self, per_bin: np.ndarray) -> np.ndarray:
        """The area-weighted mean over each nucleus of a per-bin quantity ``(tile bins, k)``."""
        return np.asarray(self.counts @ per_bin) / self.area_px[:, None]

    def features(self) -> np.ndarray:
        """``(cells, CellFeatures.n_features)``: the bins' features under each nucleus, then its statistics."""
        return np.concatenate([self.bin_mean(self.bin_features), self.nucleus], axis=1).astype(np.float32)


def outline(mask: np.ndarray, n_points: int = OUTLINE_POINTS) -> np.ndarray:
    """``(n_points, 2)`` ``(x, y)`` points along the outer contour of a boolean mask (pixel coordinates)."""
    contours = find_contours(np.pad(mask, 1).astype(np.float32), 0.5)
    contour = max(contours, key=len) - 1.0  # (row, col) on the padded mask
    along = np.linspace(0, len(contour) - 1, n_points, endpoint=False)
    return np.column_stack([np.interp(along, np.arange(len(contour)), contour[:, k]) for k in (1, 0)])


def _nucleus_stats(rgb: np.ndarray, labels: np.ndarray, centroids_um: np.ndarray, mpp: float) -> np.ndarray:
    """:data:`NUCLEUS_STATS` of every label of ``labels`` (1..n) on the RGB tile ``rgb`` at ``mpp`` µm/px.

    Computed on the nuclei's pixels only (a tile is mostly not nucleus).
    """
    ys, xs = np.nonzero(labels)
    which, n = labels[ys, xs], int(labels.max()) + 1
    pixels = rgb[ys, xs][:, None, :3]
    hed = rgb2hed(pixels)[:, 0]
    grey = pixels[:, 0].astype(np.float64) @ np.array([0.299, 0.587, 0.114]) / 255.0
    area = np.bincount(which, minlength=n)[1:].astype(np.float64)

    def mean(values: np.ndarray) -> np.ndarray:
        return np.bincount(which, weights=values, minlength=n)[1:] / area

    h_mean = mean(hed[:, 0])
    h_std = np.sqrt(np.maximum(mean(hed[:, 0] ** 2) - h_mean**2, 0.0))
    # eccentricity from the second central moments of each nucleus' pixels
    my, mx = mean(ys), mean(xs)
    cyy, cxx, cxy = (
        mean(ys.astype(np.float64) ** 2) - my**2,
        mean(xs.astype(np.float64) ** 2) - mx**2,
        mean(xs * ys) - mx * my,
    )
    half, spread = (cxx + cyy) / 2, np.sqrt(((cxx - cyy) / 2) ** 2 + cxy**2)
    major, minor = np.maximum(half + spread, 1e-9), np.maximum(half - spread, 0.0)
    crowding = cKDTree(centroids_um).query_ball_point(centroids_um, CROWDING_UM, return_length=True) - 1
    columns = [np.log(area * mpp**2), h_mean, h_std, mean(hed[:, 1]), mean(grey), np.sqrt(1.0 - minor / major)]
    return np.column_stack([*columns, crowding, np.zeros(n - 1)]).astype(np.float32)


def tile_cells(
    image,
    grid: BinGrid,
    dense: DenseFeatures,
    core_rows: slice,
    core_cols: slice,
    mpp: float,
    *,
    outlines: bool = True,
    features: bool = True,
    threshold: float | None = None,
) -> TileCells | None:
    """The nuclei with their centroid in the bins ``core_rows`` x ``core_cols`` (``None`` when there are none).

    ``mpp``: µm per pixel of the image read (``grid`` is in its pixels). The tile is read with a margin of
    :data:`CELL_MARGIN_UM` so that nuclei on its border are segmented whole. ``features=False``: the bins'
    features are left for the caller to read (:func:`cells_in_discs` reads a slide's at once). ``threshold``:
    the slide's segmentation threshold (:func:`slide_threshold`), so that the nuclei do not depend on the tile.
    """
    margin = max(1, math.ceil(CELL_MARGIN_UM / dense.bin_um))
    rows = slice(max(core_rows.start - margin, 0), core_rows.stop + margin)
    cols = slice(max(core_cols.start - margin, 0), core_cols.stop + margin)
    bx, by, bw, bh = grid.box(rows, cols)
    # read at the image's own pixels from whole-pixel bounds: a box read at a fractional offset would be
    # resampled, and the same nucleus would be segmented differently from one tile (or region) to the next
    x0, y0 = math.floor(bx), math.floor(by)
    width, height = math.ceil(bx + bw) - x0, math.ceil(by + bh) - y0
    rgb = read_box(image, x0, y0, width, height, width, height)
    labels = relabel_sequential(segment_nuclei(rgb, mpp, threshold))[0]  # dropped objects leave gaps: renumber
    if labels.max() == 0:
        return None
    n_r, n_c = rows.stop - rows.start, cols.stop - cols.start
    # pixels -> bins of the tile (by the pixel's centre), then nuclei x bins pixel counts
    ys, xs = np.nonzero(labels)
    bin_r, bin_c = grid.index(x0 + xs + 0.5, y0 + ys + 0.5)
    bin_r = np.clip(bin_r - rows.start, 0, n_r - 1)
    bin_c = np.clip(bin_c - cols.start, 0, n_c - 1)
    counts = sp.csr_matrix((np.ones(len(ys)), (labels[ys, xs] - 1, bin_r * n_c + bin_c)), (labels.max(), n_r * n_c))
    area = np.asarray(counts.sum(axis=1)).ravel()
    local = np.array(ndimage.center_of_mass(labels > 0, labels, np.arange(1, labels.max() + 1)))[:, ::-1] + 0.5
    centroids = local + [x0, y0]
    in_rows, in_cols = grid.index(centroids[:, 0], centroids[:, 1])
    core = (in_rows >= core_rows.start) & (in_rows < core_rows.stop)
    core &= (in_cols >= core_cols.start) & (in_cols < core_cols.stop)
    core &= area * mpp**2 <= MAX_NUCLEUS_AREA_UM2
    if not core.any():
        return None
    stats = _nucleus_stats(rgb, labels, local * mpp, mpp)
    shapes = None
    if outlines:
        boxes = ndimage.find_objects(labels)
        shapes = np.zeros((int(core.sum()), OUTLINE_POINTS, 2))
        for k, i in enumerate(np.flatnonzero(core)):
            box = boxes[i]
            shapes[k] = outline(labels[box] == i + 1) + [box[1].start + x0 + 0.5, box[0].start + y0 + 0.5]
    counts = counts[core]
    used = np.unique(counts.indices)
    bins = np.column_stack([rows.start + used // n_c, cols.start + used % n_c])
    bin_features = None
    if features:
        bin_features = tile_features(image, grid, dense, rows, cols).reshape(n_r * n_c, -1)[used]
    return TileCells(counts[:, used], bins, bin_features, stats[core], centroids[core], area[core], shapes)


def slide_threshold(image, grid: BinGrid, mpp: float, n_windows: int = 5, window_um: float = 256.0) -> float:
    """The slide's nucleus threshold, from ``n_windows`` x ``n_windows`` windows of ``window_um`` on a lattice.

    Windows are read at full resolution (nuclei are a few pixels: a thumbnail would blur them into the
    stroma); mostly white windows are skipped.
    """
    height, width = grid.n_rows * grid.side, grid.n_cols * grid.side
    side = min(window_um / mpp, width, height)
    windows = []
    for fy in np.linspace(0.1, 0.9, n_windows):
        for fx in np.linspace(0.1, 0.9, n_windows):
            x0, y0 = fx * width - side / 2, fy * height - side / 2
            rgb = read_box(image, x0, y0, side, side, max(1, round(side)), max(1, round(side)))
            if (rgb.mean(axis=2) < 220).mean() > 0.25:  # tissue
                windows.append(rgb)
    return haematoxylin_threshold(windows)


def iter_tile_cells(
    image, grid: BinGrid, dense: DenseFeatures, rows: tuple[int, int], cols: tuple[int, int], mpp: float,
    *, tile: int, outlines: bool = True, only: set[tuple[int, int]] | None = None, threshold: float | None = None,
) -> Iterator[TileCells]:  # fmt: skip
    """:func:`tile_cells` of every tile of ``tile`` x ``tile`` bins over ``rows`` x ``cols`` that holds nuclei.

    ``only``: the ``(row, col)`` of the first bin of the tiles to read (others are skipped); ``threshold``
    (default: the slide's, :func:`slide_threshold`).
    """
    if threshold is None:
        threshold = slide_threshold(image, grid, mpp)
    for r, c in iter_tiles(rows, cols, tile):
        if only is not None and (r.start, c.start) not in only:
            continue
        found = tile_cells(image, grid, dense, r, c, mpp, outlines=outlines, threshold=threshold)
        if found is not None:
            yield found


def cells_in_discs(image, grid: BinGrid, spec: CellFeatures, centres: np.ndarray, radius: float) -> list[np.ndarray]:
    """For each disc (``centres`` ``(x, y)``, ``radius``; pixels of the image read), its nuclei's features.

    Each disc's box is segmented on its own with the slide's threshold (a slide is not segmented where no spot
    lies; a nucleus is segmented as in a super-resolved map of the slide) and keeps the nuclei
    whose centroid lies inside the disc; the bins' features are read once for all of them.
    """
    dense = spec.dense
    mpp = dense.bin_um / grid.side
    threshold = slide_threshold(image, grid, mpp)
    found: list[TileCells | None] = []
    for x, y in np.asarray(centres, dtype=np.float64):
        (r0, r1), (c0, c1) = grid.index(np.array([x - radius, x + radius]), np.array([y - radius, y + radius]))
        box = slice(r0, r1 + 1), slice(c0, c1 + 1)
        cells = tile_cells(image, grid, dense, *box, mpp, outlines=False, features=False, threshold=threshold)
        if cells is not None:
            inside = np.hypot(cells.centroids[:, 0] - x, cells.centroids[:, 1] - y) <= radius
            cells = _subset(cells, inside) if inside.any() else None
        found.append(cells)
    present = [c for c in found if c is not None]
    if not present:
        return [np.empty((0, spec.n_features), np.float32) for _ in found]
    bins, where = np.unique(np.concatenate([c.bins for c in present]), axis=0, return_inverse=True)
    features = features_at(image, grid, dense, bins)
    out, start = [], 0
    for cells in found:
        if cells is None:
            out.append(np.empty((0, spec.n_features), np.float32))
            continue
        rows = where.ravel()[start : start + len(cells.bins)]
        start += len(cells.bins)
        out.append(replace(cells, bin_features=features[rows]).features())
    return out


def _subset(cells: TileCells, keep: np.ndarray) -> TileCells:
    counts = cells.counts[keep]
    used = np.unique(counts.indices)
    outlines = None if cells.outlines is None else cells.outlines[keep]
    features = None if cells.bin_features is None else cells.bin_features[used]
    return TileCells(counts[:, used], cells.bins[used], features, cells.nucleus[keep], cells.centroids[keep],
                     cells.area_px[keep], outlines)  # fmt: skip
