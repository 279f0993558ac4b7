"""Gene selection computed on training slides only, then applicable to any slide."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._constants import COUNTS_LAYER, LIBRARY_KEY
from .._docs import doc_params
from .._logging import logger, warn
from .._validate import check_adata, get_matrix, library_ids, require_grid, spot_libraries
from ._grid import grid_neighbours, infer_grid


def _training_mask(adata: AnnData, train: Sequence[str] | None, library_key: str) -> tuple[np.ndarray, list[str]]:
    libraries = library_ids(adata, library_key)
    if train is None:
        return np.ones(adata.n_obs, dtype=bool), libraries
    train = [train] if isinstance(train, str) else [str(t) for t in train]
    unknown = [t for t in train if t not in libraries]
    if unknown:
        msg = f"Training slide(s) {unknown} not in adata.obs[{library_key!r}] (slides: {libraries})."
        raise KeyError(msg)
    return np.isin(spot_libraries(adata, library_key), train), train


def _column_sums(matrix) -> np.ndarray:
    """Per-gene sums of a dense or sparse spots x genes matrix, as a 1-D array."""
    return np.asarray(matrix.sum(axis=0), dtype=np.float64).ravel()


def _detected(counts, slide: np.ndarray, min_fraction: float) -> np.ndarray:
    """Genes detected in every training slide and in at least ``min_fraction`` of the training spots.

    ``counts``: dense or sparse (a Visium HD slide's counts are never densified).
    """
    detected_everywhere = np.ones(counts.shape[1], dtype=bool)
    for lib in np.unique(slide):
        detected_everywhere &= _column_sums(counts[slide == lib]) > 0
    return detected_everywhere & (_column_sums(counts > 0) / max(counts.shape[0], 1) >= min_fraction)


def _top_expressed(counts, slide: np.ndarray, min_fraction: float) -> pd.DataFrame:
    return pd.DataFrame({"score": _column_sums(counts), "eligible": _detected(counts, slide, min_fraction)})


#: fewest spots (and detected genes) per slide for seurat_v3 highly variable genes
MIN_HVG_SPOTS = 30


def _hvg(counts: np.ndarray, slide: np.ndarray, var_names: pd.Index, n_genes: int) -> pd.DataFrame:
    import scanpy as sc

    ranks = []
    for lib in np.unique(slide):
        sub = AnnData(sp.csr_matrix(counts[slide == lib]), var=pd.DataFrame(index=var_names))
        detected = np.asarray(sub.X.sum(axis=0)).ravel() > 0
        sub = sub[:, detected].copy()
        # seurat_v3's loess (scikit-misc) crashes the process on a single spot and fails on a few: refuse first
        if sub.n_obs < MIN_HVG_SPOTS or sub.n_vars < MIN_HVG_SPOTS:
            msg = (
                f"method='hvg' on slide {lib!r}: {sub.n_obs} spot(s) and {sub.n_vars} detected gene(s); seurat_v3's "
                f"variance fit needs at least {MIN_HVG_SPOTS} of each per training slide. Leave the slide out of "
                "`train`, or use method='top_expressed'."
            )
            raise ValueError(msg)
        try:
            hvg = sc.pp.highly_variable_genes(
                sub, flavor="seurat_v3", n_top_genes=min(n_genes, sub.n_vars), inplace=False
            )
        except ValueError as error:  # loess near-singularities on small or degenerate slides
            msg = (
                f"method='hvg': seurat_v3's mean-variance fit (loess) failed on slide {lib!r} ({sub.n_obs} spots): "
                f"{error}. The slide has too few or too similar spots; use method='top_expressed' or more spots."
            )
            raise ValueError(msg) from error
        rank = pd.Series(np.nan, index=var_names)
        rank[sub.var_names] = hvg["highly_variable_rank"].to_numpy()
        ranks.append(rank)
    table = pd.concat(ranks, axis=1)
    eligible = table.notna().all(axis=1).to_numpy()  # an HVG of every training slide
    return pd.DataFrame({"score": -table.mean(axis=1).to_numpy(), "eligible": eligible})


def _moran(
    adata: AnnData, values: np.ndarray, mask: np.ndarray, libraries: list[str], library_key: str
) -> pd.DataFrame:
    from scanpy.metrics import morans_i

    rows_all, cols_all = require_grid(adata)
    slide = spot_libraries(adata, library_key)
    scores = []
    for lib in libraries:
        in_slide = mask & (slide == lib)
        rows, cols = rows_all[in_slide], cols_all[in_slide]
        graph = grid_neighbours(rows, cols, infer_grid(adata, lib, rows, cols), include_self=False)
        degree = np.asarray(graph.sum(axis=1)).ravel()
        graph = sp.csr_matrix(sp.diags(1.0 / np.where(degree > 0, degree, 1)) @ graph)  # row-normalised, as squidpy
        x = values[in_slide]
        varies = x.std(axis=0) > 0  # False for constant genes and for genes with NaN (e.g. no TPM length)
        score = np.full(x.shape[1], np.nan)
        if graph.nnz == 0:  # no two spots are neighbours: Moran's I is undefined (scanpy would divide by zero)
            warn(f"select_genes(moran): no two spots of slide {lib!r} are array neighbours; it is not scored.")
        elif varies.any():
            score[varies] = morans_i(graph, x[:, varies].T)
        scores.append(score)
    scores = np.vstack(scores) if scores else np.full((1, values.shape[1]), np.nan)
    n_scored = np.isfinite(scores).sum(axis=0)
    mean = np.where(n_scored > 0, np.nansum(scores, axis=0) / np.maximum(n_scored, 1), np.nan)
    return pd.DataFrame({"score": mean, "eligible": np.isfinite(mean)})


@doc_params("copy", "library_key")
def select_genes(
    adata: AnnData,
    *,
    method: Literal["top_expressed", "hvg", "moran"] = "top_expressed",
    n_genes: int = 250,
    train: Sequence[str] | None = None,
    layer: str | None = None,
    min_fraction: float = 0.1,
    library_key: str = LIBRARY_KEY,
    key_added: str = "selected",
    copy: bool = False,
) -> AnnData | None:
    """Choose target genes from the training slides only.

    - ``'top_expressed'`` (ST-Net, TRIPLEX "250 most expressed"): genes detected in every training slide and
      in at least ``min_fraction`` of the training spots, ranked by total raw counts.
    - ``'hvg'`` (SpaHGC): scanpy's ``seurat_v3`` highly variable genes per training slide (top ``n_genes``
      each, on raw counts), intersected across slides and ranked by mean HVG rank.
    - ``'moran'`` (SEPAL): Moran's I per training slide on the array grid (8 neighbours on legacy ST, 6 on
      Visium; row-normalised weights, the estimator of squidpy's ``spatial_autocorr``), averaged over slides.

    Parameters
    ----------
    adata
        Slides (training and possibly others: only ``train`` ones are looked at).
    method
        Selection rule.
    n_genes
        Number of genes to keep (fewer if fewer qualify).
    train
        Library ids of the training slides; ``None`` uses every slide of ``adata``.
    layer
        Values to use: raw counts for ``'top_expressed'``/``'hvg'`` (default ``layers['counts']``),
        log-normalised for ``'moran'`` (default ``layers['log1p']``).
    min_fraction
        Minimum fraction of training spots with a non-zero count, for ``'top_expressed'`` and (SEPAL's
        sparsity filter, when raw counts are in ``layers['counts']``) for ``'moran'``; genes must also be
        detected in every training slide.
    {library_key}
    key_added
        Writes ``var[key_added]`` (bool), ``var[f'{key_added}_score']``, ``var[f'{key_added}_rank']``
        (1 = best) and ``uns[key_added]`` (``genes`` in rank order, ``params``).
    {copy}

    Returns
    -------
    ``None`` or the modified copy.

    Examples
    --------
    >>> import stpredict as st
    >>> adata = st.datasets.her2st_crop()
    >>> st.pp.select_genes(adata, n_genes=50, train=["C2", "C3"])
    >>> len(adata.uns["selected"]["genes"]), adata.uns["selected"]["params"]["train"]
    (50, ['C2', 'C3'])
    """
    check_adata(adata)
    if method not in ("top_expressed", "hvg", "moran"):
        msg = f"Unknown gene selection method {method!r}; choose 'top_expressed', 'hvg' or 'moran'."
        raise ValueError(msg)
    if n_genes < 1:
        msg = f"`n_genes` must be positive, got {n_genes}."
        raise ValueError(msg)
    mask, train_libraries = _training_mask(adata, train, library_key)
    if layer is None:
        layer = "log1p" if method == "moran" else (COUNTS_LAYER if COUNTS_LAYER in adata.layers else None)
    values = get_matrix(adata, layer, dense=method == "moran")  # counts stay sparse (Visium HD: 500k bins)
    stored = values.data if sp.issparse(values) else values
    if method in ("top_expressed", "hvg") and ((stored < 0).any() or not np.allclose(stored, np.round(stored))):
        msg = f"Method {method!r} needs raw counts, but layer {layer!r} holds non-integer or negative values."
        raise ValueError(msg)
    slide = spot_libraries(adata, library_key)[mask]
    if method == "top_expressed":
        table = _top_expressed(values[mask], slide, min_fraction)
    elif method == "hvg":
        table = _hvg(values[mask], slide, adata.var_names, n_genes)
    else:
        table = _moran(adata, values, mask, train_libraries, library_key)
        if COUNTS_LAYER in adata.layers:  # SEPAL's sparsity filter, on raw counts (a smoothed layer has no zeros)
            counts = get_matrix(adata, COUNTS_LAYER, dense=False)[mask]
            table["eligible"] &= _detected(counts, slide, min_fraction)
    table.index = adata.var_names
    ranked = table[table["eligible"]].sort_values("score", ascending=False, kind="stable")
    genes = ranked.index[:n_genes].tolist()
    if len(genes) < n_genes:
        warn(f"select_genes({method}): only {len(genes)} gene(s) qualify (asked for {n_genes}).")
    if not genes:
        msg = f"No gene qualifies under {method!r} on training slides {train_libraries}."
        raise ValueError(msg)

    adata = adata.copy() if copy else adata
    rank = pd.Series(np.nan, index=adata.var_names)
    rank[ranked.index] = np.arange(1, len(ranked) + 1)
    adata.var[key_added] = adata.var_names.isin(genes)
    adata.var[f"{key_added}_score"] = table["score"].to_numpy(float)
    adata.var[f"{key_added}_rank"] = rank.to_numpy()
    adata.uns[key_added] = {
        "genes": genes,
        "params": {"method": method, "n_genes": n_genes, "train": train_libraries, "layer": layer},
    }
    logger.info("select_genes: %d gene(s) by %s on slides %s", len(genes), method, train_libraries)
    return adata if copy else None


def default_genes(adata_train: AnnData, n_genes: int = 250) -> list[str]:
    """Genes chosen on the training slides: ``uns['selected']`` if present, else the ``n_genes`` most expressed."""
    if "selected" in adata_train.uns and "genes" in adata_train.uns["selected"]:
        return list(adata_train.uns["selected"]["genes"])
    layer = COUNTS_LAYER if COUNTS_LAYER in adata_train.layers else None
    chosen = select_genes(adata_train, method="top_expressed", n_genes=n_genes, layer=layer, copy=True)
    logger.info("no genes given; using the %d most expressed genes of the training slides", n_genes)
    return list(chosen.uns["selected"]["genes"])
