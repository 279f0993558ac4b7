"""``st.pp.pseudo_spots``: Visium-like spots made of fine bins or cells (Visium HD, Xenium, CosMx).

The standard way to test super-resolution: train on pseudo-spots (the sum of the bins or cells inside each
spot's disc, as a spot would have captured them), predict bins, and score at the bins against what was
measured there.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from scipy.spatial import cKDTree

from .._constants import (
    ARRAY_COL,
    ARRAY_ROW,
    COUNTS_LAYER,
    GRID_KEY,
    LIBRARY_KEY,
    PATIENT_KEY,
    SPATIAL_KEY,
    SPOT_SHAPE_KEY,
)
from .._logging import logger
from .._validate import check_adata, require_spatial, spatial_entry, spot_libraries
from ._patches import slide_mpp


def lattice(x0: float, y0: float, x1: float, y1: float, pitch: float, grid: str) -> pd.DataFrame:
    """Spot centres ``x``, ``y`` with ``array_row``/``array_col`` covering the box, ``pitch`` apart.

    ``'hex'``: Visium's layout (rows ``pitch * sqrt(3) / 2`` apart, odd rows shifted by half a pitch, array
    columns counted in half pitches as Space Ranger does); ``'square'``: legacy ST's.
    """
    if grid not in ("hex", "square"):
        msg = f"grid must be 'hex' (Visium) or 'square' (legacy ST), got {grid!r}."
        raise ValueError(msg)
    row_step = pitch * np.sqrt(3) / 2 if grid == "hex" else pitch
    rows = np.arange(int(np.floor((y1 - y0) / row_step)) + 1)
    cols = np.arange(int(np.floor((x1 - x0) / pitch)) + 1)
    r, c = np.meshgrid(rows, cols, indexing="ij")
    r, c = r.ravel(), c.ravel()
    shift = (r % 2) * 0.5 if grid == "hex" else 0.0
    x = x0 + (c + shift) * pitch
    y = y0 + r * row_step
    array_col = 2 * c + (r % 2) if grid == "hex" else c
    inside = x <= x1
    return pd.DataFrame({"x": x, "y": y, ARRAY_ROW: r, ARRAY_COL: array_col})[inside].reset_index(drop=True)


def pseudo_spots(
    fine: AnnData,
    *,
    diameter_um: float = 55.0,
    pitch_um: float = 100.0,
    grid: str = "hex",
    min_members: int = 1,
    layer: str | None = None,
) -> AnnData:
    """Aggregate bins or cells into spots: the counts of the members whose centres lie in each spot's disc.

    Parameters
    ----------
    fine
        Bins (``st.io.read_visium_hd``) or cells (``st.io.read_xenium(..., cells=True)``, ``read_cosmx``) with
        raw counts, centres in ``obsm['spatial']`` and the slide's pixel size in ``uns['spatial']``. Never modified.
    diameter_um, pitch_um
        Spot diameter and centre-to-centre distance in µm (Visium: 55 and 100; legacy ST: 100 and 200).
    grid
        ``'hex'`` (Visium) or ``'square'`` (legacy ST).
    min_members
        Spots with fewer members (e.g. off the tissue) are left out.
    layer
        Counts to sum (default ``X``; ``layers['counts']`` is summed too when present).

    Returns
    -------
    A new AnnData of spots: ``X`` the summed counts, ``obs`` ``array_row``/``array_col``, ``library_id``
    (and ``patient``), ``n_members``; ``obsm['spatial']`` the spot centres; ``uns['spatial']`` the slide's
    image with ``spot_diameter_fullres`` set; ``uns['pseudo_spots']`` the geometry and ``membership``, a sparse
    spots x ``fine.n_obs`` matrix (1 where a member lies in the spot).

    Examples
    --------
    >>> import tempfile
    >>> import stpredict as st
    >>> bins = st.io.read_visium_hd(st.datasets.visium_hd_example(tempfile.mkdtemp()), bin_size=8)
    >>> spots = st.pp.pseudo_spots(bins, diameter_um=55, pitch_um=100)
    >>> spots.n_obs, int(spots.obs["n_members"].median())
    (9, 37)
    """
    check_adata(fine, "fine")
    if not (0 < diameter_um and 0 < pitch_um):
        msg = f"diameter_um and pitch_um must be positive, got {diameter_um!r}, {pitch_um!r}."
        raise ValueError(msg)
    centres = require_spatial(fine)
    counts = fine.X if layer is None else fine.layers[layer]
    counts = sp.csr_matrix(counts)
    libraries = spot_libraries(fine)
    parts, members = [], []
    for library_id in pd.unique(libraries):
        where = np.flatnonzero(libraries == library_id)
        part, membership = _slide_spots(fine, library_id, centres[where], diameter_um, pitch_um, grid, min_members)
        full = sp.csr_matrix(
            (membership.data, where[membership.indices], membership.indptr), (membership.shape[0], fine.n_obs)
        )
        parts.append(part)
        members.append(full)
    membership = sp.vstack(members).tocsr() if members else sp.csr_matrix((0, fine.n_obs))
    obs = pd.concat(parts) if parts else pd.DataFrame()
    spots = AnnData(
        X=(membership @ counts).astype(np.float32).tocsr(),
        obs=obs.drop(columns=["x", "y"]),
        var=fine.var.copy(),
        obsm={SPATIAL_KEY: obs[["x", "y"]].to_numpy(np.float64)},
    )
    if COUNTS_LAYER in fine.layers and layer != COUNTS_LAYER:
        spots.layers[COUNTS_LAYER] = (membership @ sp.csr_matrix(fine.layers[COUNTS_LAYER])).astype(np.float32).tocsr()
    spots.uns[SPATIAL_KEY] = {str(lib): _spot_entry(fine, str(lib), diameter_um, grid) for lib in pd.unique(libraries)}
    spots.uns["pseudo_spots"] = {
        "diameter_um": float(diameter_um),
        "pitch_um": float(pitch_um),
        "grid": grid,
        "min_members": int(min_members),
        "n_fine": int(fine.n_obs),
        "membership": membership,
    }
    logger.info("pseudo_spots: %d spots of %g µm from %d bins/cells", spots.n_obs, diameter_um, fine.n_obs)
    return spots


def _slide_spots(fine, library_id, centres, diameter_um, pitch_um, grid, min_members):
    """One slide's spots (obs with centres) and its spots x members membership (local member indices)."""
    mpp = slide_mpp(fine, library_id)
    if mpp is None:
        msg = (
            f"Slide {library_id!r} has no scalefactors['microns_per_pixel']: spots in µm cannot be laid on it. Read "
            "it with st.io (the readers record it) or set adata.uns['spatial'][library_id]['scalefactors']."
        )
        raise KeyError(msg)
    radius, pitch = diameter_um / 2 / float(mpp), pitch_um / float(mpp)
    # spots wholly inside the members' extent: an edge spot would hold part of a disc
    (x0, y0), (x1, y1) = centres.min(axis=0) + radius, centres.max(axis=0) - radius
    spots = lattice(x0, y0, max(x0, x1), max(y0, y1), pitch, grid)
    tree = cKDTree(centres)
    found = tree.query_ball_point(spots[["x", "y"]].to_numpy(), r=radius)
    sizes = np.array([len(f) for f in found])
    keep = sizes >= max(1, int(min_members))
    found = [sorted(f) for f, k in zip(found, keep, strict=True) if k]
    spots = spots[keep].reset_index(drop=True)
    indptr = np.concatenate([[0], np.cumsum([len(f) for f in found])]).astype(np.int64)
    indices = np.concatenate(found).astype(np.int64) if found else np.empty(0, np.int64)
    membership = sp.csr_matrix((np.ones(len(indices), np.float32), indices, indptr), (len(found), len(centres)))
    spots[LIBRARY_KEY] = library_id
    spots["n_members"] = np.diff(indptr).astype(np.int64)
    if PATIENT_KEY in fine.obs:
        patients = fine.obs.loc[spot_libraries(fine) == library_id, PATIENT_KEY].dropna().unique()
        if len(patients):
            spots[PATIENT_KEY] = str(patients[0])
    spots.index = [f"{library_id}_spot_{r}_{c}" for r, c in zip(spots[ARRAY_ROW], spots[ARRAY_COL], strict=True)]
    return spots, membership


def _spot_entry(fine: AnnData, library_id: str, diameter_um: float, grid: str) -> dict:
    entry = dict(spatial_entry(fine, library_id) or {})
    entry["scalefactors"] = {
        **entry["scalefactors"],
        "spot_diameter_fullres": diameter_um / slide_mpp(fine, library_id),
    }
    entry["metadata"] = {**entry.get("metadata", {}), SPOT_SHAPE_KEY: "circle", GRID_KEY: grid}
    return entry
