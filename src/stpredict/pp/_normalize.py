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
from .._logging import logger
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
    copy
        Return a modified copy instead of writing into ``adata``.

    Returns
    -------
    ``None``, or the modified copy when ``copy=True``. Writes ``adata.layers[key_added]`` (dense float32)
    and ``adata.uns['stpredict_normalize'][key_added]`` (parameters).

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
    adata = adata.copy() if copy else adata
    counts = adata.X if layer is None else adata.layers[layer]
    counts = counts.toarray() if sp.issparse(counts) else np.asarray(counts, dtype=np.float64)
    counts = counts.astype(np.float64, copy=False)
    if (counts < 0).any():
        msg = f"{'adata.X' if layer is None else f'adata.layers[{layer!r}]'} has negative values: pass raw counts."
        raise ValueError(msg)

    params: dict = {"method": method, "layer": layer}
    if method == "log1p":
        key_added = key_added or "log1p"
        totals = counts.sum(axis=1, keepdims=True)
        empty = int((totals == 0).sum())
        if empty:
            logger.warning("normalize: %d spot(s) have no counts; their values stay 0", empty)
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
            logger.warning(
                "normalize(tpm): %d gene(s) without a known length get NaN, e.g. %s", len(missing), list(missing[:5])
            )
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
