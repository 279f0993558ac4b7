"""Cells for ``st.tl.super_resolve(..., cells=True)``: nuclei segmented tile by tile, each given its bins' mean.

Each tile of the model's bins is read with a margin, its nuclei are segmented at the image's resolution
(:func:`stpredict.pp.segment_nuclei`; objects over :data:`MAX_NUCLEUS_AREA_UM2` are left out), and a nucleus gets the area-weighted mean (in linear units) of the
model's predictions for the bins its pixels fall in, as iStar assigns superpixels to segmented cells. A
nucleus belongs to the tile holding its centroid, so nuclei on tile borders are whole and counted once.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
from scipy import ndimage
from skimage.measure import find_contours
from skimage.segmentation import relabel_sequential
from tqdm.auto import tqdm

from ..pp._dense import iter_tiles, read_box, tile_features
from ..pp._nuclei import segment_nuclei

#: a nucleus' outline: this many points along its contour (full-resolution px), in ``obsm['outline']``
OUTLINE_POINTS = 16
#: µm read around a tile so that nuclei on its border are segmented whole
CELL_MARGIN_UM = 16.0
#: larger segmented objects are clumps or stroma, not a nucleus (~18 µm across), and are left out
MAX_NUCLEUS_AREA_UM2 = 250.0


def outline(mask: np.ndarray, n_points: int = OUTLINE_POINTS) -> np.ndarray:
    """``(n_points, 2)`` ``(x, y)`` points along the outer contour of a boolean mask (pixel coordinates)."""
    contours = find_contours(np.pad(mask, 1).astype(np.float32), 0.5)
    contour = max(contours, key=len) - 1.0  # (row, col) on the padded mask
    along = np.linspace(0, len(contour) - 1, n_points, endpoint=False)
    points = np.column_stack([np.interp(along, np.arange(len(contour)), contour[:, k]) for k in (1, 0)])
    return points


def _tile_cells(model, image, grid, dense, core_rows: slice, core_cols: slice, columns, mpp: float, margin: int):
    """Cells whose centroid lies in the core tile: (linear values, centroids, outlines, areas) in image px."""
    rows = slice(max(core_rows.start - margin, 0), core_rows.stop + margin)
    cols = slice(max(core_cols.start - margin, 0), core_cols.stop + margin)
    x0, y0, width, height = grid.box(rows, cols)
    rgb = read_box(image, x0, y0, width, height, max(1, round(width)), max(1, round(height)))
    labels = relabel_sequential(segment_nuclei(rgb, mpp))[0]  # small objects dropped leave gaps in the numbering
    if labels.max() == 0:
        return None
    features = tile_features(image, grid, dense, rows, cols)
    n_r, n_c = features.shape[:2]
    linear = model.bin_linear(features.reshape(-1, features.shape[-1]))[:, columns]
    # pixels -> bins of the tile, then nuclei x bins pixel counts: each nucleus' area-weighted bin mean
    ys, xs = np.nonzero(labels)
    scale_y, scale_x = labels.shape[0] / height, labels.shape[1] / width
    bin_r = np.minimum((ys / scale_y / grid.side).astype(np.int64), n_r - 1)
    bin_c = np.minimum((xs / scale_x / grid.side).astype(np.int64), n_c - 1)
    count = sp.csr_matrix((np.ones(len(ys)), (labels[ys, xs] - 1, bin_r * n_c + bin_c)), (labels.max(), n_r * n_c))
    area = np.asarray(count.sum(axis=1)).ravel()
    values = (count @ linear) / area[:, None]
    centroids = np.array(ndimage.center_of_mass(labels > 0, labels, np.arange(1, labels.max() + 1)))[:, ::-1]
    centroids = centroids / [scale_x, scale_y] + [x0, y0]
    in_rows, in_cols = grid.index(centroids[:, 0], centroids[:, 1])
    core = (in_rows >= core_rows.start) & (in_rows < core_rows.stop)
    core &= (in_cols >= core_cols.start) & (in_cols < core_cols.stop)
    core &= area / (scale_x * scale_y) * mpp**2 <= MAX_NUCLEUS_AREA_UM2
    boxes = ndimage.find_objects(labels)
    shapes = np.zeros((labels.max(), OUTLINE_POINTS, 2))
    for i in np.flatnonzero(core):
        box = boxes[i]
        points = outline(labels[box] == i + 1)
        shapes[i] = (points + [box[1].start, box[0].start] + 0.5) / [scale_x, scale_y] + [x0, y0]
    return values[core], centroids[core], shapes[core], area[core] / (scale_x * scale_y)


def predict_cells(model, image, grid, dense, rows, cols, columns, mpp, region, show_progress_bar):
    """Every cell of the bins ``rows`` x ``cols`` (model bins) inside ``region`` (image px, or ``None``)."""
    from ._super_resolve import TILE_BINS

    margin = max(1, math.ceil(CELL_MARGIN_UM / dense.bin_um))
    parts = []
    for r, c in tqdm(list(iter_tiles(rows, cols, TILE_BINS)), desc="cells", unit="tile", disable=not show_progress_bar):
        found = _tile_cells(model, image, grid, dense, r, c, columns, mpp, margin)
        if found is None:
            continue
        if region is not None:
            x0, y0, x1, y1 = region
            inside = (found[1][:, 0] >= x0) & (found[1][:, 0] < x1) & (found[1][:, 1] >= y0) & (found[1][:, 1] < y1)
            found = tuple(part[inside] for part in found)
        parts.append(found)
    if not parts:
        return (np.empty((0, len(columns))), np.empty((0, 2)), np.empty((0, OUTLINE_POINTS, 2)), np.empty(0))
    return tuple(np.concatenate(p) for p in zip(*parts, strict=True))
