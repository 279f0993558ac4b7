"""Several slides in one AnnData, following the scanpy/squidpy multi-library convention."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Literal

import anndata as ad
import pandas as pd
from anndata import AnnData

from .._constants import LIBRARY_KEY, PATIENT_KEY, SPATIAL_KEY
from .._logging import logger, warn
from .._validate import check_adata, library_ids


def concat(adatas: Sequence[AnnData], *, join: Literal["inner", "outer"] = "inner") -> AnnData:
    """Concatenate slides into one AnnData.

    Each slide keeps its entry in ``uns['spatial'][library_id]`` and its spots are told apart by
    ``obs['library_id']``. Slides rarely measure the same genes (HER2ST sections differ), so genes
    are intersected by default.

    Parameters
    ----------
    adatas
        Slides as read by :func:`stpredict.io.read_st` / :func:`stpredict.io.read_visium`.
    join
        ``'inner'`` keeps the genes shared by all slides; ``'outer'`` keeps all, filling zeros.

    Returns
    -------
    One AnnData with all spots.

    Examples
    --------
    >>> import stpredict as st
    >>> files = st.datasets.her2st_crop_files()
    >>> slides = [st.io.read_st(f["counts"], f["spots"], f["image"], patient="C") for f in files.values()]
    >>> adata = st.io.concat(slides)
    >>> sorted(adata.uns["spatial"])
    ['C2', 'C3', 'C4']
    """
    if len(adatas) == 0:
        msg = "`adatas` is empty: pass at least one slide."
        raise ValueError(msg)
    seen: dict[str, int] = {}
    for i, adata in enumerate(adatas):
        check_adata(adata, f"adatas[{i}]")
        for lib in library_ids(adata):
            if lib in seen:
                msg = (
                    f"Slide {lib!r} occurs in adatas[{seen[lib]}] and adatas[{i}]. "
                    "Library ids must be unique: pass `library_id=` when reading."
                )
                raise ValueError(msg)
            seen[lib] = i
    n_union = len(functools.reduce(pd.Index.union, [a.var_names for a in adatas]))
    out = ad.concat(list(adatas), join=join, uns_merge="unique", merge="same")
    if join == "inner" and n_union != out.n_vars:
        logger.info("concat: kept %d genes shared by all slides (of %d in any slide)", out.n_vars, n_union)
    if not out.obs_names.is_unique:
        out.obs_names_make_unique()
    for key in (LIBRARY_KEY, PATIENT_KEY):
        if key in out.obs:
            out.obs[key] = pd.Categorical(out.obs[key].astype("string").fillna(pd.NA).astype(object))
    missing = [lib for lib in seen if lib not in out.uns.get(SPATIAL_KEY, {})]
    if missing:
        warn(f"concat: no uns['spatial'] entry for slide(s) {missing}: their images cannot be used.")
    return out
