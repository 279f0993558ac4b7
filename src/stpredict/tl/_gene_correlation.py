"""How well predictions recover the gene-gene correlation structure of the measured expression (M2TGLGO)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from .._constants import LIBRARY_KEY
from .._docs import doc_params
from .._logging import logger
from .._predictions import get_predictions
from .._validate import (
    as_gene_list,
    check_adata,
    check_genes_present,
    get_matrix,
    library_ids,
    spot_libraries,
)


def correlation_matrix(values: np.ndarray) -> np.ndarray:
    """Pearson correlation between the columns of ``values`` (NaN for constant columns)."""
    centred = values - values.mean(axis=0)
    norms = np.sqrt((centred**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (centred.T @ centred) / np.outer(norms, norms)


def structure_score(true_corr: np.ndarray, pred_corr: np.ndarray) -> float:
    """Pearson between the off-diagonal entries of two correlation matrices (pairs defined in both).

    Examples
    --------
    >>> import numpy as np
    >>> c = np.array([[1.0, 0.5, -0.2], [0.5, 1.0, 0.1], [-0.2, 0.1, 1.0]])
    >>> round(structure_score(c, c), 6)
    1.0
    """
    upper = np.triu_indices_from(true_corr, k=1)
    a, b = true_corr[upper], pred_corr[upper]
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.std(a[ok]) == 0 or np.std(b[ok]) == 0:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


@doc_params("copy")
def gene_correlation(
    adata: AnnData,
    *,
    layer_true: str | None,
    layer_pred: str,
    genes: Sequence[str] | None = None,
    library_id: str | None = None,
    key_added: str = "gene_correlation",
    copy: bool = False,
) -> AnnData | None:
    """Measured and predicted gene-gene correlations, and how well the predicted structure recovers the measured.

    Parameters
    ----------
    adata
        Spots with measured expression in ``layers[layer_true]`` and predictions in ``layers[layer_pred]``.
    layer_true
        Measured expression (``None``: ``X``), e.g. ``'log1p'``.
    layer_pred
        Predictions, e.g. the layer written by ``predictor.predict(adata, key_added='pred')``.
    genes
        Genes to correlate; default every gene predicted on all spots (finite in ``layer_pred``).
    library_id
        Restrict to one slide's spots (default: all spots of ``adata``; correlations pooled over slides
        mix slide effects into them, so one slide at a time is advisable).
    key_added
        ``varp[f'{key_added}_true']`` and ``varp[f'{key_added}_pred']``: Pearson correlations among
        ``genes`` (sparse, ``genes`` x ``genes`` block filled, the rest empty), and ``uns[key_added]``:
        ``genes``, ``score`` (Pearson between the off-diagonal entries of the two matrices: 1 when the
        predicted structure is the measured one) and the parameters.
    {copy}

    Returns
    -------
    ``None``, or the modified copy when ``copy=True``.

    Examples
    --------
    >>> import stpredict as st
    >>> adata = st.datasets.her2st_crop()
    >>> st.pp.normalize(adata)
    >>> predictor = st.tl.fit(adata[adata.obs.library_id != "C4"].copy(), genes=["ERBB2", "GRB7", "KRT8", "ACTB"])
    >>> test = adata[adata.obs.library_id == "C4"].copy()
    >>> predictor.predict(test, key_added="pred")
    >>> st.tl.gene_correlation(test, layer_true="log1p", layer_pred="pred")
    >>> sorted(test.uns["gene_correlation"]["genes"]), test.varp["gene_correlation_true"].shape
    (['ACTB', 'ERBB2', 'GRB7', 'KRT8'], (13279, 13279))
    """
    check_adata(adata)
    mask = np.ones(adata.n_obs, dtype=bool)
    if library_id is not None:
        mask = spot_libraries(adata) == library_id
        if not mask.any():
            msg = f"Slide {library_id!r} not in adata.obs[{LIBRARY_KEY!r}] (slides: {library_ids(adata)})."
            raise KeyError(msg)
    predicted_all, predicted_genes = get_predictions(adata, layer_pred, as_gene_list(genes))
    predicted_all = predicted_all[mask]
    genes = as_gene_list(genes)
    if genes is None:
        genes = [g for g, ok in zip(predicted_genes, np.isfinite(predicted_all).all(axis=0), strict=True) if ok]
    check_genes_present(adata, genes)
    if len(genes) < 3:
        msg = (
            f"gene_correlation needs at least 3 genes predicted on every spot; {layer_pred!r} has {len(genes)}. "
            "Pass genes= or predict more genes."
        )
        raise ValueError(msg)
    columns = adata.var_names.get_indexer(genes)
    predicted = predicted_all[:, [predicted_genes.index(g) for g in genes]]
    if not np.isfinite(predicted).all():
        bad = [g for g, ok in zip(genes, np.isfinite(predicted).all(axis=0), strict=True) if not ok][:5]
        msg = f"{layer_pred!r} has NaN for genes {bad} (not predicted): leave them out of genes=."
        raise ValueError(msg)
    measured = get_matrix(adata, layer_true, columns=columns)[mask]
    true_corr, pred_corr = correlation_matrix(measured), correlation_matrix(predicted)
    score = structure_score(true_corr, pred_corr)
    adata = adata.copy() if copy else adata
    for suffix, corr in (("true", true_corr), ("pred", pred_corr)):
        adata.varp[f"{key_added}_{suffix}"] = _embedded(corr, columns, adata.n_vars)
    adata.uns[key_added] = {
        "genes": list(genes),
        "score": score,
        "layer_true": layer_true,
        "layer_pred": layer_pred,
        "library_id": library_id,
        "n_spots": int(mask.sum()),
    }
    logger.info("gene_correlation: %d genes, structure score %.3f (uns[%r])", len(genes), score, key_added)
    return adata if copy else None


def _embedded(corr: np.ndarray, columns: np.ndarray, n_vars: int) -> sp.csr_matrix:
    """The ``genes x genes`` block at its place in an ``n_vars x n_vars`` sparse matrix (NaN kept)."""
    rows, cols = np.meshgrid(columns, columns, indexing="ij")
    return sp.csr_matrix((corr.ravel(), (rows.ravel(), cols.ravel())), shape=(n_vars, n_vars))


def correlation_block(adata: AnnData, key: str, suffix: str, genes: Sequence[str]) -> np.ndarray:
    """The dense ``genes x genes`` block of ``varp[f'{key}_{suffix}']`` written by :func:`gene_correlation`."""
    name = f"{key}_{suffix}"
    if name not in adata.varp:
        msg = f"adata.varp[{name!r}] not found: run st.tl.gene_correlation(adata, ..., key_added={key!r}) first."
        raise KeyError(msg)
    columns = adata.var_names.get_indexer(list(genes))
    block = adata.varp[name][columns][:, columns]
    return block.toarray() if sp.issparse(block) else np.asarray(block)
