"""Reader for 10x Xenium output with a post-run H&E: pseudo-spots (or cells) placed on the H&E image.

Xenium measures single transcripts at micron positions (``transcripts.parquet``: ``feature_name``,
``x_location``/``y_location`` in µm, ``qv``) and segments cells (``cells.parquet``, ``cell_feature_matrix.h5``).
The H&E stained after the run is a separate image, registered to the Xenium morphology image by an affine
matrix (Xenium Explorer's ``*_imagealignment.csv``: H&E pixel -> Xenium pixel, whose size is
``experiment.xenium``'s ``pixel_size``, 0.2125 µm). Training targets are either **pseudo-spots**
(transcripts summed over a square grid of a chosen size, as HEST does for Xenium) or **cells**; their centres
are mapped onto the H&E image through the inverse of the alignment, so the same models train on them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from os import PathLike
from pathlib import Path
from typing import Literal

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
from ._image import HIRES_MAX_SIDE, downscaled_copy, image_size, require_spots_inside
from ._slide import mark_slide

#: feature names of Xenium's control probes and codewords (not genes)
CONTROL_PREFIXES = ("NegControl", "BLANK", "UnassignedCodeword", "Deprecated", "antisense", "Intergenic")
XENIUM_PIXEL_SIZE = 0.2125


def read_alignment(alignment: str | PathLike | np.ndarray) -> np.ndarray:
    """The 3 x 3 affine matrix (H&E pixel -> Xenium pixel) of a Xenium image alignment CSV, or checked as given."""
    is_array = isinstance(alignment, np.ndarray)
    matrix = np.asarray(alignment, float) if is_array else pd.read_csv(alignment, header=None).to_numpy(float)
    if matrix.shape != (3, 3) or not np.allclose(matrix[2], [0, 0, 1]):
        where = "the alignment" if is_array else repr(str(alignment))
        msg = f"{where} is not a 3 x 3 affine alignment matrix (last row 0, 0, 1); got shape {matrix.shape}."
        raise ValueError(msg)
    return matrix


def _pixel_size(root: Path) -> float:
    path = root / "experiment.xenium"
    if not path.is_file():
        return XENIUM_PIXEL_SIZE
    return float(json.loads(path.read_text()).get("pixel_size", XENIUM_PIXEL_SIZE))


def _transcripts(root: Path, min_qv: float) -> pd.DataFrame:
    parquet, csv = root / "transcripts.parquet", root / "transcripts.csv.gz"
    if parquet.is_file():
        table = pd.read_parquet(parquet, columns=None)
    elif csv.is_file():
        table = pd.read_csv(csv)
    else:
        msg = f"No transcripts.parquet in {str(root)!r}: pass the Xenium output folder."
        raise FileNotFoundError(msg)
    names = table["feature_name"].astype(str)
    if names.str.startswith("b'").any():  # older bundles store bytes
        names = names.str.slice(2, -1)
    genes = ~names.str.startswith(CONTROL_PREFIXES)
    if "is_gene" in table:
        genes &= table["is_gene"].astype(bool)
    keep = genes & (table["qv"] >= min_qv)
    return pd.DataFrame(
        {"gene": names[keep].to_numpy(), "x": table["x_location"][keep].to_numpy(float),
         "y": table["y_location"][keep].to_numpy(float)}
    )  # fmt: skip


def _pseudo_spots(
    transcripts: pd.DataFrame, spot_size_um: float
) -> tuple[sp.csr_matrix, pd.DataFrame, list[str], np.ndarray]:
    """Transcripts summed over a square grid: counts, obs (array row/col), genes, centres in µm."""
    col = np.floor(transcripts["x"].to_numpy() / spot_size_um).astype(np.int64)
    row = np.floor(transcripts["y"].to_numpy() / spot_size_um).astype(np.int64)
    spots, spot_index = np.unique(np.column_stack([row, col]), axis=0, return_inverse=True)
    genes, gene_index = np.unique(transcripts["gene"].to_numpy(), return_inverse=True)
    counts = sp.csr_matrix(
        (np.ones(len(transcripts), dtype=np.float32), (spot_index.ravel(), gene_index.ravel())),
        shape=(len(spots), len(genes)),
    )  # repeated (spot, gene) pairs are summed on conversion to CSR
    obs = pd.DataFrame({ARRAY_ROW: spots[:, 0], ARRAY_COL: spots[:, 1]})
    obs.index = [f"spot_{r}_{c}" for r, c in spots]
    centres = np.column_stack([(spots[:, 1] + 0.5) * spot_size_um, (spots[:, 0] + 0.5) * spot_size_um])
    return counts, obs, genes.tolist(), centres


def _cells(root: Path) -> tuple[sp.csr_matrix, pd.DataFrame, list[str], np.ndarray, float]:
    import scanpy as sc

    matrix, table = root / "cell_feature_matrix.h5", root / "cells.parquet"
    for path in (matrix, table):
        if not path.is_file():
            msg = f"No {path.name} in {str(root)!r}: cell-level targets need the cell matrix and the cells table."
            raise FileNotFoundError(msg)
    counts = sc.read_10x_h5(matrix, gex_only=True)
    cells = pd.read_parquet(table).set_index("cell_id")
    cells.index = cells.index.astype(str)
    cells = cells.loc[counts.obs_names.astype(str)]
    centres = cells[["x_centroid", "y_centroid"]].to_numpy(float)
    diameter = float(2 * np.sqrt(np.median(cells["cell_area"]) / np.pi)) if "cell_area" in cells else 10.0
    obs = pd.DataFrame(index=counts.obs_names.astype(str))
    return sp.csr_matrix(counts.X, dtype=np.float32), obs, counts.var_names.tolist(), centres, diameter


def check_run(root: Path, run: str, level: str) -> None:
    """An imaging run's output folder exists and ``level`` is one the readers build."""
    if not root.is_dir():
        msg = f"No {run} folder {str(root)!r}."
        raise FileNotFoundError(msg)
    if level not in ("spots", "cells"):
        msg = f"level must be 'spots' (pseudo-spots) or 'cells', got {level!r}."
        raise ValueError(msg)


def run_targets(
    level: str,
    transcripts: Callable[[], pd.DataFrame],
    cells: Callable[[], tuple[sp.csr_matrix, pd.DataFrame, list[str], np.ndarray, float]],
    spot_size_um: float,
    min_transcripts: int,
) -> tuple[sp.csr_matrix, pd.DataFrame, list[str], np.ndarray, float]:
    """Counts, obs, genes, centres (µm) and spot diameter (µm) of an imaging run's pseudo-spots or cells.

    ``transcripts()``: gene, x, y (µm) of every kept transcript; ``cells()``: the run's own cells. Pseudo-spots
    with fewer than ``min_transcripts`` transcripts (background, edges) are dropped.
    """
    if level == "cells":
        return cells()
    counts, obs, genes, centres_um = _pseudo_spots(transcripts(), float(spot_size_um))
    keep = np.asarray(counts.sum(axis=1)).ravel() >= min_transcripts
    return counts[keep], obs[keep], genes, centres_um[keep], float(spot_size_um)


def place_on_he(
    counts: sp.csr_matrix,
    obs: pd.DataFrame,
    genes: list[str],
    centres_um: np.ndarray,
    diameter_um: float,
    *,
    pixel_size: float,
    he_image: str | PathLike,
    matrix: np.ndarray,
    library_id: str,
    patient: str | None,
    level: str,
    technology: str,
    hires_max_side: int,
) -> AnnData:
    """Spots or cells measured in an imaging run's coordinates (µm), placed on a registered H&E image.

    ``matrix`` maps H&E pixels to the run's pixels (``pixel_size`` µm); spots outside the H&E are dropped with a
    warning, and none inside is an error that names the likely cause.
    """
    width, height = image_size(he_image)
    he_mpp = pixel_size * float(np.sqrt(abs(np.linalg.det(matrix[:2, :2]))))
    to_he = np.linalg.inv(matrix)  # run pixels -> H&E pixels
    run_px = np.column_stack([centres_um / pixel_size, np.ones(len(centres_um))])
    centres = (run_px @ to_he.T)[:, :2]
    inside = (centres[:, 0] >= 0) & (centres[:, 0] < width) & (centres[:, 1] >= 0) & (centres[:, 1] < height)
    if inside.any() and not inside.all():  # the H&E may cover less than the measured region
        warn(f"{library_id!r}: {int((~inside).sum())} {level} outside the H&E image were dropped.")
        counts, obs, centres, centres_um = counts[inside], obs[inside], centres[inside], centres_um[inside]
    require_spots_inside(
        centres, width, height, library_id, obs.index, "fall outside",
        "Check that the alignment maps this H&E image's pixels to the run's pixels (not the inverse).",
    )  # fmt: skip
    adata = AnnData(X=counts, obs=obs, var=pd.DataFrame(index=pd.Index(genes, name="gene")))
    mark_slide(adata, library_id, patient, counts=counts)
    adata.obsm[SPATIAL_KEY] = centres
    adata.obsm["spatial_um"] = centres_um
    hires, scale = downscaled_copy(he_image, hires_max_side)
    metadata = {SOURCE_IMAGE_KEY: str(Path(he_image).resolve()), "technology": technology}
    if level == "spots":
        metadata |= {GRID_KEY: "square", SPOT_SHAPE_KEY: "square"}
    adata.uns[SPATIAL_KEY] = {
        library_id: {
            "images": {"hires": hires},
            "scalefactors": {
                "tissue_hires_scalef": float(scale),
                "spot_diameter_fullres": diameter_um / he_mpp,
                MICRONS_PER_PIXEL: he_mpp,
            },
            "metadata": metadata,
        }
    }
    return adata


def read_xenium(
    path: str | PathLike,
    *,
    he_image: str | PathLike,
    alignment: str | PathLike | np.ndarray,
    level: Literal["spots", "cells"] = "spots",
    spot_size_um: float = 55.0,
    min_qv: float = 20.0,
    min_transcripts: int = 10,
    library_id: str | None = None,
    patient: str | None = None,
    hires_max_side: int = HIRES_MAX_SIDE,
) -> AnnData:
    """Read a Xenium run as training slides on its post-run H&E: pseudo-spots or cells with their expression.

    Parameters
    ----------
    path
        The Xenium output folder (``transcripts.parquet``, ``experiment.xenium``; ``cells.parquet`` and
        ``cell_feature_matrix.h5`` for ``level='cells'``).
    he_image
        The H&E image stained after the run (TIFF, OME-TIFF or pyramidal: opened lazily).
    alignment
        Xenium Explorer's alignment CSV (or the 3 x 3 matrix) mapping H&E pixels to Xenium pixels.
    level
        ``'spots'``: transcripts summed over a square grid of ``spot_size_um`` (pseudo-spots); ``'cells'``:
        Xenium's cells and their counts.
    spot_size_um
        Side of a pseudo-spot (55 µm: Visium-like; 100: legacy ST; any size).
    min_qv
        Transcripts below this quality are dropped (20, Xenium's own threshold); control probes and
        codewords are dropped always.
    min_transcripts
        Pseudo-spots with fewer transcripts (background, edges) are dropped.
    library_id, patient
        Slide and patient names (default: the folder name; unknown).
    hires_max_side
        Longer side of the downscaled H&E kept in ``uns``.

    Returns
    -------
    AnnData with counts in ``X`` and ``layers['counts']``, ``obsm['spatial']`` on the H&E's full-resolution
    pixels, ``obsm['spatial_um']`` (Xenium µm), and ``uns['spatial'][library_id]`` with the H&E (its
    ``microns_per_pixel`` from the alignment) and, for pseudo-spots, ``grid='square'`` and square spots.

    Examples
    --------
    >>> import stpredict as st
    >>> adata = st.io.read_xenium("xenium_run/", he_image="run_he.ome.tif",
    ...                           alignment="run_he_imagealignment.csv", spot_size_um=55)  # doctest: +SKIP
    """
    root = Path(path)
    check_run(root, "Xenium output", level)
    matrix = read_alignment(alignment)
    pixel_size = _pixel_size(root)
    counts, obs, genes, centres_um, diameter_um = run_targets(
        level, lambda: _transcripts(root, min_qv), lambda: _cells(root), spot_size_um, min_transcripts
    )
    library_id = str(library_id or root.name)
    technology = f"10x Xenium (pseudo-spots of {spot_size_um:g} um)" if level == "spots" else "10x Xenium (cells)"
    adata = place_on_he(
        counts, obs, genes, centres_um, diameter_um, pixel_size=pixel_size, he_image=he_image, matrix=matrix,
        library_id=library_id, patient=patient, level=level, technology=technology, hires_max_side=hires_max_side,
    )  # fmt: skip
    logger.info("read Xenium %s: %d %s x %d genes on the H&E", library_id, adata.n_obs, level, adata.n_vars)
    return adata
