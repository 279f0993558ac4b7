"""Normalisation of raw counts into model targets."""

from __future__ import annotations

import gzip
from functools import lru_cache
from importlib.resources import files
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._constants import COUNTS_LAYER
from .._docs import doc_params
from .._logging import logger, warn
from .._validate import check_adata


@lru_cache(maxsize=1)
def gene_lengths() -> pd.Series:
    """Exon-union gene lengths (bp) by gene symbol, GENCODE v43 basic (as SEPAL uses for TPM).

    Examples
    --------
    >>> import stpredict as st
    >>> int(st.pp.gene_lengths()["ERBB2"]) > 1000
    True
    """
    path = files("stpredict.pp").joinpath("_data", "gene_length_by_symbol.tsv.gz")
    with gzip.open(str(path), "rt") as handle:
        table = pd.read_csv(handle, sep="\t")
    return table.set_index("symbol")["length"].astype(float)


DENSE_LAYER_LIMIT = 2**28  # bytes of a dense float32 layer above which sparse counts give a sparse layer


def _check_counts(adata: AnnData, matrix, where: str, layer: str | None) -> None:
    """Refuse what cannot be counts (NaN, inf, negatives) and warn about what does not look like counts.

    ``matrix``: dense, or sparse (only its stored values are checked: the others are zeros).
    """
    counts = matrix.data if sp.issparse(matrix) else matrix
    bad = ~np.isfinite(counts)
    if bad.any():
        if sp.issparse(matrix):
            coo = matrix.tocoo()
            spots, genes = coo.row[bad], coo.col[bad]
        else:
            spots, genes = np.nonzero(bad)
        msg = (
            f"{where} has {int(bad.sum())} NaN or infinite value(s) in {len(np.unique(spots))} spot(s), e.g. spot "
            f"{adata.obs_names[spots[0]]!r}, gene {adata.var_names[genes[0]]!r}. Normalising would spread them over the "
            "whole spot. Drop those spots or genes, or replace the values (e.g. with 0) before normalising."
        )
        raise ValueError(msg)
    if (counts < 0).any():
        msg = f"{where} has negative values: pass raw counts (layer='counts', or layer=None for adata.X)."
        raise ValueError(msg)
    produced_by_normalize = layer is not None and layer in adata.uns.get("stpredict_normalize", {})
    if produced_by_normalize:
        warn(
            f"{where} was written by st.pp.normalize: it is already normalised, and normalising it again distorts "
            "the values. Pass the raw counts (layer='counts')."
        )
    elif not np.allclose(counts, np.round(counts)):
        looks_logged = counts.max() < 30
        hint = (
            f"Its values look log-transformed already (maximum {counts.max():.2f})"
            if looks_logged
            else "It may hold normalised values"
        )
        warn(
            f"{where} holds non-integer values, so it is not raw counts. {hint}; normalising them again distorts "
            "them. Pass raw counts (layer='counts'), or use this layer directly as the target."
        )


@doc_params("copy")
def normalize(
    adata: AnnData,
    *,
    method: Literal["log1p", "tpm"] = "log1p",
    layer: str | None = COUNTS_LAYER,
    key_added: str | None = None,
    target_sum: float = 1e4,
    lengths: pd.Series | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Normalise raw counts into a new layer, leaving the counts untouched.

    - ``'log1p'`` (the field's default; TRIPLEX, ST-Net, HEST): scale each spot to ``target_sum``
      total counts, then ``log(1 + x)``.
    - ``'tpm'`` (SEPAL): divide by gene length, scale each spot to 1e6, then ``log2(1 + x)``. Genes without
      a known length are dropped from the layer (set to NaN) and listed in the log.

    Parameters
    ----------
    adata
        Slides with raw counts.
    method
        ``'log1p'`` or ``'tpm'``.
    layer
        Layer with raw counts (``None`` for ``X``).
    key_added
        Output layer; defaults to ``'log1p'`` or ``'log2_tpm'``.
    target_sum
        Total per spot for ``'log1p'``.
    lengths
        Gene lengths in bp indexed by gene name for ``'tpm'`` (default: GENCODE v43 exon-union lengths
        by symbol, :func:`gene_lengths`).
    {copy}

    Returns
    -------
    ``None``, or the modified copy when ``copy=True``. Writes ``adata.layers[key_added]`` (float32: dense, or
    CSR when the counts are sparse and a dense layer would exceed 256 MiB, e.g. a Visium HD slide) and
    ``adata.uns['stpredict_normalize'][key_added]`` (parameters).

    Examples
    --------
    >>> import stpredict as st
    >>> adata = st.datasets.her2st_crop()
    >>> st.pp.normalize(adata)
    >>> bool(np.allclose(np.expm1(adata.layers["log1p"]).sum(axis=1), 1e4))
    True
    """
    check_adata(adata)
    if method not in ("log1p", "tpm"):
        msg = f"Unknown method {method!r}; choose 'log1p' or 'tpm'."
        raise ValueError(msg)
    if layer is not None and layer not in adata.layers:
        msg = f"Layer {layer!r} with raw counts not found in adata.layers; pass `layer=None` to use adata.X."
        raise KeyError(msg)
    where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
    if adata.n_obs == 0 or adata.n_vars == 0:
        msg = f"adata has {adata.n_obs} spot(s) and {adata.n_vars} gene(s): there is nothing to normalise."
        raise ValueError(msg)
    source = adata.X if layer is None else adata.layers[layer]
    if source is None:
        msg = f"{where} is empty: this AnnData holds no expression values."
        raise ValueError(msg)
    if method == "log1p" and sp.issparse(source) and 4 * adata.n_obs * adata.n_vars > DENSE_LAYER_LIMIT:
        # e.g. Visium HD: 500,000 bins x 18,000 genes would be 34 GiB dense; log1p keeps zeros at zero
        values = sp.csr_matrix(source, dtype=np.float64, copy=True)
        _check_counts(adata, values, where, layer)
        adata = adata.copy() if copy else adata
        totals = np.asarray(values.sum(axis=1)).ravel()
        empty = int((totals == 0).sum())
        if empty:
            warn(f"normalize: {empty} spot(s) have no counts; their values stay 0.")
        scale = target_sum / np.where(totals == 0, 1.0, totals)
        values.data = np.log1p(values.data * np.repeat(scale, np.diff(values.indptr)))
        adata.layers[key_added or "log1p"] = values.astype(np.float32)
        adata.uns.setdefault("stpredict_normalize", {})[key_added or "log1p"] = {
            "method": method, "layer": layer, "target_sum": target_sum,
        }  # fmt: skip
        logger.info("normalize: added sparse layer %r (%s)", key_added or "log1p", method)
        return adata if copy else None
    counts = source.toarray() if sp.issparse(source) else np.asarray(source, dtype=np.float64)
    counts = counts.astype(np.float64, copy=False)
    _check_counts(adata, counts, where, layer)
    adata = adata.copy() if copy else adata

    params: dict = {"method": method, "layer": layer}
    if method == "log1p":
        key_added = key_added or "log1p"
        totals = counts.sum(axis=1, keepdims=True)
        empty = int((totals == 0).sum())
        if empty:
            warn(f"normalize: {empty} spot(s) have no counts; their values stay 0.")
        if counts is not source:  # a copy already (densified or cast): work in place, no second spots x genes array
            counts /= np.where(totals == 0, 1.0, totals) / target_sum
            values = np.log1p(counts, out=counts)
        else:
            values = np.log1p(counts / np.where(totals == 0, 1.0, totals) * target_sum)
        params["target_sum"] = target_sum
    else:
        key_added = key_added or "log2_tpm"
        lengths = gene_lengths() if lengths is None else lengths
        known = lengths.reindex(adata.var_names).to_numpy(float)
        has_length = np.isfinite(known) & (known > 0)
        if not has_length.any():
            msg = "No gene of adata.var_names has a known length: pass `lengths=` indexed by your gene names."
            raise ValueError(msg)
        missing = adata.var_names[~has_length]
        if len(missing):
            warn(f"normalize(tpm): {len(missing)} gene(s) without a known length get NaN, e.g. {list(missing[:5])}")
        rate = np.zeros_like(counts)
        rate[:, has_length] = counts[:, has_length] / known[has_length]
        totals = rate.sum(axis=1, keepdims=True)
        values = np.log2(1.0 + rate / np.where(totals == 0, 1.0, totals) * 1e6)
        values[:, ~has_length] = np.nan
        params["n_genes_without_length"] = int(len(missing))
    adata.layers[key_added] = values.astype(np.float32)
    adata.uns.setdefault("stpredict_normalize", {})[key_added] = params
    logger.info("normalize: added layer %r (%s)", key_added, method)
    return adata if copy else None


def layer_scale(adata: AnnData, layer: str | None) -> str | None:
    """The value scale of a layer, from what stpredict recorded: ``'counts'``, ``'log1p'``, ``'tpm'`` or ``None``.

    A smoothed layer has the scale of the layer it smoothed; ``layers['counts']`` is raw counts. Layers that
    stpredict did not write have an unknown scale (``None``). Used to tell a comparison of predictions with
    values on another scale (e.g. log predictions against raw counts).
    """
    seen = set()
    while layer is not None and layer not in seen:
        seen.add(layer)
        normalised = adata.uns.get("stpredict_normalize", {}).get(layer)
        if normalised is not None:
            return str(normalised.get("method"))
        smoothed = adata.uns.get("stpredict_smooth", {}).get(layer)
        if smoothed is None:
            break
        layer = smoothed.get("layer")
    return "counts" if layer == COUNTS_LAYER else None
