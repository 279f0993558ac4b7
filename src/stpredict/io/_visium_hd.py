"""Reader for 10x Visium HD Space Ranger output: square bins of 2, 8 or 16 µm (or any multiple of 2 µm).

Space Ranger writes one folder per bin size, ``outs/binned_outputs/square_008um/`` with
``filtered_feature_bc_matrix.h5`` and ``spatial/`` (``tissue_positions.parquet``, ``scalefactors_json.json``
with ``bin_size_um`` and ``microns_per_pixel``, ``tissue_hires_image.png``). Bins are squares with no gap
between them: an 8 µm bin is the 4 x 4 block of 2 µm bins ``(4r..4r+3, 4c..4c+3)``, so any multiple of
2 µm can be built from the 2 µm folder by summing counts over blocks.
"""

from __future__ import annotations

import json
import re
import warnings
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._constants import (
    ARRAY_COL,
    ARRAY_ROW,
    GRID_KEY,
    MICRONS_PER_PIXEL,
    SOURCE_IMAGE_KEY,
    SPATIAL_KEY,
    SPOT_SHAPE_KEY,
)
from .._logging import logger, warn
from ._image import decode_rgb, image_size, open_image
from ._slide import make_genes_unique, mark_slide

#: the bin sizes Space Ranger writes
SPACE_RANGER_BINS = (2, 8, 16)
_BIN_FOLDER = re.compile(r"square_(\d{3})um$")


def _bin_folder(root: Path, bin_size: int) -> Path:
    return root / "binned_outputs" / f"square_{bin_size:03d}um"


def _locate(path: Path, bin_size: int) -> tuple[Path, int]:
    """The bin folder to read and the factor its bins are aggregated by (1: read as they are)."""
    named = _BIN_FOLDER.search(path.name)
    if named:  # the user pointed at one bin folder
        size = int(named.group(1))
        if bin_size % size:
            msg = f"{str(path)!r} holds {size} µm bins; bin_size={bin_size} is not a multiple of {size}."
            raise ValueError(msg)
        return path, bin_size // size
    if not (path / "binned_outputs").is_dir():
        msg = (
            f"No 'binned_outputs/' folder in {str(path)!r}: pass the Space Ranger 'outs' folder of a Visium HD run "
            "(or one of its binned_outputs/square_XXXum folders). For standard Visium use st.io.read_visium."
        )
        raise FileNotFoundError(msg)
    if _bin_folder(path, bin_size).is_dir():
        return _bin_folder(path, bin_size), 1
    available = sorted(
        int(m.group(1)) for p in (path / "binned_outputs").iterdir() if (m := _BIN_FOLDER.search(p.name))
    )
    finer = [s for s in available if bin_size % s == 0]
    if not finer:
        msg = (
            f"No {bin_size} µm bins in {str(path / 'binned_outputs')!r} (it has {available} µm), and {bin_size} is not a "
            "multiple of any of them. Choose bin_size from those, or a multiple of 2 to aggregate the 2 µm bins."
        )
        raise FileNotFoundError(msg)
    size = max(finer)
    return _bin_folder(path, size), bin_size // size


def _read_counts(folder: Path, counts_file: str) -> AnnData:
    import scanpy as sc

    path = folder / counts_file
    if not path.is_file():
        msg = f"No count matrix {counts_file!r} in {str(folder)!r}."
        raise FileNotFoundError(msg)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not unique.*")
        return sc.read_10x_h5(path)


def _read_positions(folder: Path) -> pd.DataFrame:
    spatial = folder / "spatial"
    parquet, csv = spatial / "tissue_positions.parquet", spatial / "tissue_positions.csv"
    if parquet.is_file():
        positions = pd.read_parquet(parquet)
    elif csv.is_file():
        positions = pd.read_csv(csv)
    else:
        msg = f"No spatial/tissue_positions.parquet in {str(folder)!r}: the bin positions are needed."
        raise FileNotFoundError(msg)
    needed = {"barcode", "in_tissue", ARRAY_ROW, ARRAY_COL, "pxl_row_in_fullres", "pxl_col_in_fullres"}
    missing = needed - set(positions.columns)
    if missing:
        msg = f"{str(parquet)!r} lacks the columns {sorted(missing)} that Space Ranger writes."
        raise ValueError(msg)
    return positions.set_index("barcode")


def _scalefactors(folder: Path) -> dict:
    path = folder / "spatial" / "scalefactors_json.json"
    if not path.is_file():
        msg = f"No spatial/scalefactors_json.json in {str(folder)!r}: it gives microns per pixel and image scales."
        raise FileNotFoundError(msg)
    values = json.loads(path.read_text())
    if not values.get(MICRONS_PER_PIXEL):
        msg = f"{str(path)!r} has no 'microns_per_pixel' (Space Ranger >= 3 writes it for Visium HD)."
        raise ValueError(msg)
    return values


def aggregate_bins(adata: AnnData, factor: int, bin_size: int) -> AnnData:
    """Sum the counts of ``factor`` x ``factor`` blocks of bins into one bin; centres are the blocks' mean.

    A block is kept when any of its bins is on tissue (the filtered matrix holds only those).

    Examples
    --------
    >>> import numpy as np, anndata as ad, pandas as pd
    >>> bins = ad.AnnData(np.ones((4, 1)), obs=pd.DataFrame({"array_row": [0, 0, 1, 1], "array_col": [0, 1, 0, 1]}))
    >>> bins.obsm["spatial"] = np.array([[0.0, 0], [1, 0], [0, 1], [1, 1]])
    >>> big = aggregate_bins(bins, 2, 4)
    >>> big.X.toarray().tolist(), big.obsm["spatial"].tolist()
    ([[4.0]], [[0.5, 0.5]])
    """
    block_row = adata.obs[ARRAY_ROW].to_numpy() // factor
    block_col = adata.obs[ARRAY_COL].to_numpy() // factor
    blocks = pd.MultiIndex.from_arrays([block_row, block_col])
    codes, unique = pd.factorize(blocks)
    membership = sp.csr_matrix(
        (np.ones(len(codes), dtype=np.float32), (codes, np.arange(len(codes)))), shape=(len(unique), len(codes))
    )
    counts = membership @ sp.csr_matrix(adata.X, dtype=np.float32)
    sizes = np.asarray(membership.sum(axis=1)).ravel()
    centres = (membership @ np.asarray(adata.obsm[SPATIAL_KEY], dtype=np.float64)) / sizes[:, None]
    rows, cols = unique.get_level_values(0).to_numpy(), unique.get_level_values(1).to_numpy()
    obs = pd.DataFrame(
        {ARRAY_ROW: rows, ARRAY_COL: cols, "n_bins": sizes.astype(int)},
        index=[f"s_{bin_size:03d}um_{r:05d}_{c:05d}-1" for r, c in zip(rows, cols, strict=True)],
    )
    out = AnnData(X=sp.csr_matrix(counts), obs=obs, var=adata.var.copy())
    out.obsm[SPATIAL_KEY] = centres
    return out


def read_visium_hd(
    path: str | PathLike,
    *,
    bin_size: int = 8,
    library_id: str | None = None,
    patient: str | None = None,
    source_image_path: str | PathLike | None = None,
    counts_file: str = "filtered_feature_bc_matrix.h5",
    in_tissue_only: bool = True,
) -> AnnData:
    """Read a 10x Visium HD Space Ranger output at one bin size.

    Parameters
    ----------
    path
        The Space Ranger ``outs`` folder (holding ``binned_outputs/``), or one ``binned_outputs/square_XXXum``
        folder.
    bin_size
        Bin side in µm: 2, 8 or 16 are read as Space Ranger wrote them; other multiples of 2 (e.g. 32, or 24)
        are built by summing the counts of blocks of the finest bins available.
    library_id
        Name of the slide; defaults to the ``outs`` folder's parent name.
    patient
        Individual the slide comes from (used to group cross-validation splits).
    source_image_path
        The full-resolution H&E image given to Space Ranger (a TIFF or BigTIFF, pyramidal or not): opened
        lazily, region by region, for patches. Without it patches are cut from the ``hires`` PNG (about
        3-4 µm per pixel), far coarser than an 8 µm bin: a warning says so.
    counts_file
        Count matrix inside the bin folder.
    in_tissue_only
        Keep only bins under tissue.

    Returns
    -------
    AnnData with raw counts in ``X`` and ``layers['counts']``, ``obsm['spatial']`` (bin centres in
    full-resolution pixels), ``obs['array_row']``/``['array_col']`` on the bin grid, ``obs['library_id']``,
    ``obs['patient']``, and ``uns['spatial'][library_id]`` with ``images['hires']``, ``scalefactors``
    (``microns_per_pixel``, ``bin_size_um``, ``spot_diameter_fullres`` = the bin side in pixels) and
    ``metadata`` (``grid='square'``, ``spot_shape='square'``: plots and SpatialData export draw squares).

    Examples
    --------
    >>> import stpredict as st
    >>> adata = st.io.read_visium_hd("run/outs", bin_size=16, source_image_path="run/image.btf")  # doctest: +SKIP
    """
    root = Path(path)
    if isinstance(bin_size, bool) or not isinstance(bin_size, int | np.integer) or bin_size < 2 or bin_size % 2:
        msg = f"bin_size is a bin side in µm, a multiple of 2 (Visium HD's finest bins), got {bin_size!r}."
        raise ValueError(msg)
    folder, factor = _locate(root, int(bin_size))
    if library_id is None:
        outs = folder.parent.parent if folder.parent.name == "binned_outputs" else root
        library_id = outs.parent.name if outs.name == "outs" else outs.name
    library_id = str(library_id)
    if source_image_path is not None:
        image_size(source_image_path)  # fail early on a missing or unreadable image
    scalefactors = _scalefactors(folder)
    counts = _read_counts(folder, counts_file)
    make_genes_unique(counts, library_id)
    positions = _read_positions(folder)
    missing = counts.obs_names.difference(positions.index)
    if len(missing):
        msg = f"{len(missing)} barcode(s) of the count matrix have no position (e.g. {missing[:3].tolist()})."
        raise ValueError(msg)
    positions = positions.loc[counts.obs_names]
    if in_tissue_only:
        keep = positions["in_tissue"].astype(int).to_numpy() == 1
        counts, positions = counts[keep].copy(), positions[keep]
    counts.obs[ARRAY_ROW] = positions[ARRAY_ROW].to_numpy(int)
    counts.obs[ARRAY_COL] = positions[ARRAY_COL].to_numpy(int)
    counts.obsm[SPATIAL_KEY] = positions[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(np.float64)
    if factor > 1:
        counts = aggregate_bins(counts, factor, int(bin_size))
    adata = _to_conventions(counts, library_id, patient)
    adata.uns[SPATIAL_KEY] = {library_id: _slide_entry(folder, scalefactors, int(bin_size), source_image_path)}
    if source_image_path is None:
        warn(
            f"Slide {library_id!r}: no source_image_path, so patches come from the hires PNG at "
            f"{adata.uns[SPATIAL_KEY][library_id]['scalefactors']['hires_microns_per_pixel']:.1f} µm/px: a "
            f"{bin_size} µm bin is a few pixels there. Pass the full-resolution image given to Space Ranger."
        )
    logger.info("read Visium HD slide %s: %d %d-µm bins x %d genes", library_id, adata.n_obs, bin_size, adata.n_vars)
    return adata


def _to_conventions(counts: AnnData, library_id: str, patient: str | None) -> AnnData:
    matrix = sp.csr_matrix(counts.X, dtype=np.float32)
    adata = AnnData(X=matrix, obs=counts.obs.copy(), var=counts.var.copy())
    mark_slide(adata, library_id, patient, counts=matrix)
    adata.obsm[SPATIAL_KEY] = np.asarray(counts.obsm[SPATIAL_KEY], dtype=np.float64)
    return adata


def _slide_entry(folder: Path, scalefactors: dict, bin_size: int, source_image_path) -> dict:
    """``uns['spatial'][library_id]``: the hires image, scale factors for this bin size, metadata."""
    mpp = float(scalefactors[MICRONS_PER_PIXEL])
    hires_path = folder / "spatial" / "tissue_hires_image.png"
    images = {}
    if hires_path.is_file():
        with open_image(hires_path) as image:
            images["hires"] = decode_rgb(image, hires_path)
    hires_scale = float(scalefactors.get("tissue_hires_scalef", 1.0))
    metadata = {GRID_KEY: "square", SPOT_SHAPE_KEY: "square", "technology": f"10x Visium HD ({bin_size} um bins)"}
    if source_image_path is not None:
        metadata[SOURCE_IMAGE_KEY] = str(Path(source_image_path).resolve())
    return {
        "images": images,
        "scalefactors": {
            "tissue_hires_scalef": hires_scale,
            "tissue_lowres_scalef": float(scalefactors.get("tissue_lowres_scalef", np.nan)),
            MICRONS_PER_PIXEL: mpp,
            "bin_size_um": float(bin_size),
            "spot_diameter_fullres": bin_size / mpp,  # a square's side
            "hires_microns_per_pixel": mpp / hires_scale,
        },
        "metadata": metadata,
    }
