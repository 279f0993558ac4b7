"""Reader for 10x Visium Space Ranger output, built on squidpy's reader."""

from __future__ import annotations

import warnings
from os import PathLike
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from .._constants import (
    GRID_KEY,
    MICRONS_PER_PIXEL,
    SOURCE_IMAGE_KEY,
    SPATIAL_KEY,
)
from .._logging import logger
from ._image import image_size
from ._slide import make_genes_unique, mark_slide

VISIUM_SPOT_DIAMETER_UM = 55.0


def read_visium(
    path: str | PathLike,
    *,
    library_id: str | None = None,
    patient: str | None = None,
    counts_file: str = "filtered_feature_bc_matrix.h5",
    source_image_path: str | PathLike | None = None,
    in_tissue_only: bool = True,
) -> AnnData:
    """Read a 10x Visium Space Ranger output folder.

    Uses :func:`squidpy.read.visium` and brings the result to stpredict's conventions.

    Parameters
    ----------
    path
        The Space Ranger ``outs`` folder (holding ``counts_file`` and ``spatial/``).
    library_id
        Name of the slide; defaults to the folder name.
    patient
        Individual the slide comes from (used to group cross-validation splits).
    counts_file
        Count matrix file inside ``path``.
    source_image_path
        Full-resolution H&E image (the TIFF given to Space Ranger). Needed for patch-based image
        features at full detail; without it the ``hires`` image is used.
    in_tissue_only
        Keep only spots flagged as lying on tissue.

    Returns
    -------
    AnnData with raw counts in ``X`` and ``layers['counts']``, ``obsm['spatial']`` in full-resolution
    pixels, ``obs['array_row']``, ``obs['array_col']``, ``obs['library_id']``, ``obs['patient']`` and
    ``uns['spatial'][library_id]`` (images, scale factors including ``microns_per_pixel``, metadata).
    Duplicated gene symbols (common in 10x references) are made unique with a warning.

    Examples
    --------
    >>> import stpredict as st
    >>> adata = st.io.read_visium("path/to/outs", patient="P1", source_image_path="image.tif")  # doctest: +SKIP
    """
    from .._imports import import_squidpy

    sq = import_squidpy()  # slow import: only when reading Visium

    path = Path(path)
    if not (path / counts_file).is_file():
        msg = f"No count matrix {counts_file!r} in {str(path)!r}. Pass the Space Ranger 'outs' folder."
        raise FileNotFoundError(msg)
    if not (path / "spatial").is_dir():
        msg = f"No 'spatial/' folder in {str(path)!r}: it holds the spot positions and images."
        raise FileNotFoundError(msg)
    library_id = str(library_id or path.name)
    if source_image_path is not None:
        image_size(source_image_path)  # fail early on a missing or unreadable image
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not unique.*")
        adata = sq.read.visium(path, counts_file=counts_file, library_id=library_id, load_images=True)
    make_genes_unique(adata, library_id)
    if in_tissue_only and "in_tissue" in adata.obs:
        adata = adata[adata.obs["in_tissue"].astype(int) == 1].copy()

    mark_slide(adata, library_id, patient, counts=sp.csr_matrix(adata.X, dtype=np.float32))
    adata.obsm[SPATIAL_KEY] = np.asarray(adata.obsm[SPATIAL_KEY], dtype=np.float64)

    slide = adata.uns[SPATIAL_KEY][library_id]
    scalefactors = slide.setdefault("scalefactors", {})
    diameter = scalefactors.get("spot_diameter_fullres")
    if diameter:
        scalefactors[MICRONS_PER_PIXEL] = VISIUM_SPOT_DIAMETER_UM / float(diameter)
    metadata = slide.setdefault("metadata", {})
    metadata[GRID_KEY] = "hex"
    metadata["technology"] = "10x Visium (55 um spots)"
    if source_image_path is not None:
        metadata[SOURCE_IMAGE_KEY] = str(Path(source_image_path).resolve())
    logger.info("read Visium slide %s: %d spots x %d genes", library_id, adata.n_obs, adata.n_vars)
    return adata
