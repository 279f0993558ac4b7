"""Reader for NanoString CosMx SMI flat files with an H&E of the same section: pseudo-spots or cells on the H&E.

CosMx exports transcripts (``*_tx_file.csv[.gz]``: ``fov``, ``cell_ID``, ``x_global_px``, ``y_global_px``,
``target``, ...), the cell matrix (``*_exprMat_file.csv[.gz]``: ``fov``, ``cell_ID`` and one column per target)
and cell metadata (``*_metadata_file.csv[.gz]``: ``CenterX_global_px``, ``CenterY_global_px``, ``Area``, ...), in
global pixels of the instrument (0.12028 µm, the default ``pixel_size``). A CosMx run images immunofluorescence
stains, not H&E: the H&E of the section (stained afterwards, or a serial section) must be registered to the run
by the user (e.g. with QuPath or VALIS), giving a 3 x 3 affine matrix from H&E pixels to CosMx global pixels, the
same convention as Xenium Explorer's alignment. Spots are then built and placed as for Xenium.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._logging import logger
from ._image import HIRES_MAX_SIDE
from ._xenium import check_run, place_on_he, read_alignment, run_targets

#: µm per CosMx global pixel (NanoString's SMI documentation)
COSMX_PIXEL_SIZE = 0.12028
#: targets that are not genes: negative probes, false codes, system controls
COSMX_CONTROL_PREFIXES = ("NegPrb", "Negative", "FalseCode", "SystemControl")


def _one_file(root: Path, kind: str) -> Path:
    found = sorted(root.glob(f"*{kind}.csv*"))
    if len(found) != 1:
        what = "no" if not found else f"{len(found)}"
        msg = f"{what} *{kind}.csv[.gz] file(s) in {str(root)!r}; pass a CosMx flat-file export folder of one run."
        raise FileNotFoundError(msg)
    return found[0]


def _transcripts(root: Path, pixel_size: float) -> pd.DataFrame:
    table = pd.read_csv(_one_file(root, "tx_file"), usecols=["x_global_px", "y_global_px", "target"])
    names = table["target"].astype(str)
    keep = ~names.str.startswith(COSMX_CONTROL_PREFIXES)
    return pd.DataFrame(
        {"gene": names[keep].to_numpy(), "x": table["x_global_px"][keep].to_numpy(float) * pixel_size,
         "y": table["y_global_px"][keep].to_numpy(float) * pixel_size}
    )  # fmt: skip


def _cells(root: Path, pixel_size: float) -> tuple[sp.csr_matrix, pd.DataFrame, list[str], np.ndarray, float]:
    matrix = pd.read_csv(_one_file(root, "exprMat_file"))
    meta = pd.read_csv(_one_file(root, "metadata_file"))
    key = ["fov", "cell_ID"]
    matrix = matrix[matrix["cell_ID"] != 0]  # cell 0: transcripts outside every cell
    meta = meta.set_index(key).loc[pd.MultiIndex.from_frame(matrix[key])]
    genes = [c for c in matrix.columns if c not in key and not str(c).startswith(COSMX_CONTROL_PREFIXES)]
    counts = sp.csr_matrix(matrix[genes].to_numpy(np.float32))
    obs = pd.DataFrame(index=[f"fov{f}_cell{c}" for f, c in zip(matrix["fov"], matrix["cell_ID"], strict=True)])
    centres_um = meta[["CenterX_global_px", "CenterY_global_px"]].to_numpy(float) * pixel_size
    area_um2 = float(np.median(meta["Area"])) * pixel_size**2 if "Area" in meta else 78.5
    return counts, obs, genes, centres_um, float(2 * np.sqrt(area_um2 / np.pi))


def read_cosmx(
    path: str | PathLike,
    *,
    he_image: str | PathLike,
    alignment: str | PathLike | np.ndarray,
    level: Literal["spots", "cells"] = "spots",
    spot_size_um: float = 55.0,
    min_transcripts: int = 10,
    pixel_size: float = COSMX_PIXEL_SIZE,
    library_id: str | None = None,
    patient: str | None = None,
    hires_max_side: int = HIRES_MAX_SIDE,
) -> AnnData:
    """Read a CosMx run as training slides on a registered H&E: pseudo-spots or cells with their expression.

    Parameters
    ----------
    path
        The CosMx flat-file folder (``*_tx_file.csv[.gz]``; ``*_exprMat_file`` and ``*_metadata_file`` for
        ``level='cells'``).
    he_image
        The H&E image of the section (TIFF, OME-TIFF or pyramidal: opened lazily).
    alignment
        A 3 x 3 affine matrix (or a CSV holding it) mapping H&E pixels to CosMx global pixels, from registering
        the H&E to the run's morphology image.
    level
        ``'spots'``: transcripts summed over a square grid of ``spot_size_um``; ``'cells'``: CosMx's cells.
    spot_size_um, min_transcripts
        Pseudo-spot side, and the fewest transcripts a pseudo-spot keeps.
    pixel_size
        µm per CosMx global pixel (0.12028 for the SMI; check the run's documentation).
    library_id, patient, hires_max_side
        As for :func:`read_xenium`.

    Returns
    -------
    AnnData as :func:`read_xenium` returns it: counts in ``X`` and ``layers['counts']``, ``obsm['spatial']`` on
    the H&E's pixels, ``obsm['spatial_um']``, the H&E in ``uns['spatial']`` with its pixel size from the
    alignment; control probes are dropped.

    Examples
    --------
    >>> import stpredict as st
    >>> adata = st.io.read_cosmx("cosmx_run/", he_image="section_he.tif", alignment="he_to_cosmx.csv")  # doctest: +SKIP
    """
    root = Path(path)
    check_run(root, "CosMx export", level)
    matrix = read_alignment(alignment)
    counts, obs, genes, centres_um, diameter_um = run_targets(
        level, lambda: _transcripts(root, pixel_size), lambda: _cells(root, pixel_size), spot_size_um, min_transcripts
    )
    technology = (
        f"NanoString CosMx (pseudo-spots of {spot_size_um:g} um)" if level == "spots" else "NanoString CosMx (cells)"
    )
    library_id = str(library_id or root.name)
    adata = place_on_he(
        counts, obs, genes, centres_um, diameter_um, pixel_size=pixel_size, he_image=he_image, matrix=matrix,
        library_id=library_id, patient=patient, level=level, technology=technology, hires_max_side=hires_max_side,
    )  # fmt: skip
    logger.info("read CosMx %s: %d %s x %d genes on the H&E", library_id, adata.n_obs, level, adata.n_vars)
    return adata
