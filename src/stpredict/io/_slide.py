"""What every reader writes: raw counts, the slide and patient of every spot, gene names made unique."""

from __future__ import annotations

import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._constants import COUNTS_LAYER, LIBRARY_KEY, PATIENT_KEY
from .._logging import warn


def make_genes_unique(adata: AnnData, library_id: str) -> None:
    """Make repeated gene names unique in place (common in 10x references), with a warning naming them."""
    if adata.var_names.is_unique:
        return
    dupes = adata.var_names[adata.var_names.duplicated()].unique()[:5].tolist()
    warn(
        f"Slide {library_id!r}: gene symbols {dupes} occur more than once; they were made unique "
        "by appending '-1', '-2', ... (scanpy's var_names_make_unique)."
    )
    adata.var_names_make_unique()


def mark_slide(adata: AnnData, library_id: str, patient: str | None, *, counts: sp.csr_matrix | None) -> None:
    """What every reader writes, in place: raw counts and the slide and patient of every spot.

    ``counts`` (float32 CSR) goes to ``X`` and ``layers['counts']``; ``None`` (the table is not counts) leaves
    ``X`` and writes no layer. ``obs['library_id']`` and ``obs['patient']`` are categorical.
    """
    if counts is not None:
        adata.X = counts
        adata.layers[COUNTS_LAYER] = counts.copy()
    adata.obs[LIBRARY_KEY] = pd.Categorical([library_id] * adata.n_obs)
    adata.obs[PATIENT_KEY] = pd.Categorical([patient] * adata.n_obs)
