"""Cells for ``st.tl.super_resolve(..., cells=True)``: nuclei found tile by tile, each given the model's value.

Nuclei come from :mod:`stpredict.pp._cells` (segmented per tile with a margin, each counted once, in the tile
holding its centroid). A bin-level model (iStar) gives a nucleus the area-weighted mean, in linear units, of
its predictions for the bins its pixels fall in, as iStar assigns superpixels to segmented cells; a cell-level
model (``spot2cell``) predicts each nucleus from its own features.
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from ..pp._cells import OUTLINE_POINTS, iter_tile_cells
from ..pp._dense import iter_tiles


def predict_cells(model, image, grid, dense, rows, cols, columns, mpp, region, show_progress_bar, *, tile: int):
    """Every cell of the bins ``rows`` x ``cols`` (model bins) inside ``region`` (image px, or ``None``).

    Reads tiles of ``tile`` x ``tile`` bins. Returns ``(linear values, centroids, outlines, areas)`` in the
    pixels of the image read.
    """
    n_tiles = len(list(iter_tiles(rows, cols, tile)))
    tiles = iter_tile_cells(image, grid, dense, rows, cols, mpp, tile=tile)
    parts = []
    for found in tqdm(tiles, total=n_tiles, desc="cells", unit="tile", disable=not show_progress_bar):
        part = (model.cells_linear(found)[:, columns], found.centroids, found.outlines, found.area_px)
        if region is not None:
            x0, y0, x1, y1 = region
            x, y = found.centroids[:, 0], found.centroids[:, 1]
            inside = (x >= x0) & (x < x1) & (y >= y0) & (y < y1)
            part = tuple(p[inside] for p in part)
        parts.append(part)
    if not parts:
        return (np.empty((0, len(columns))), np.empty((0, 2)), np.empty((0, OUTLINE_POINTS, 2)), np.empty(0))
    return tuple(np.concatenate(p) for p in zip(*parts, strict=True))
