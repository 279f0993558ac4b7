"""Predictions in AnnData: written once per spot and predicted gene, read back by every analysis.

Every prediction writes ``obsm[key]``, a DataFrame of spots x predicted genes (float32), which every
analysis reads. The full-width ``layers[key]`` (aligned with ``var_names``), which scanpy's plotting reads,
is written by default only when it holds no empty column — every gene of ``adata`` was predicted — and is
small: predicting 50 genes of a 15,000-gene section would otherwise write a layer 99.7 % NaN (11 MB per
HER2ST section, 43 GB for 250 genes of a 600,000-bin Visium HD slide). :func:`prediction_adata` gives
scanpy an AnnData of the predicted genes at any size; ``full_layer=True`` writes the layer anyway.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from ._logging import logger, warn
from ._validate import check_adata, check_genes_present, get_matrix

#: largest full-width prediction layer written by default (n_spots x n_genes x 4 bytes)
FULL_LAYER_AUTO_MAX_BYTES = 1 << 30


def write_predictions(adata: AnnData, key: str, frame: pd.DataFrame, full_layer: bool | None = None) -> None:
    """Store ``frame`` (spots x predicted genes) in ``obsm[key]`` and, by ``full_layer``, in ``layers[key]``.

    ``full_layer=None`` writes the layer when every gene of ``adata`` was predicted (no column all NaN) and
    it takes at most :data:`FULL_LAYER_AUTO_MAX_BYTES`; ``True`` always (when ``adata`` has genes), with NaN
    for genes not predicted; ``False`` never.
    """
    frame = frame.astype(np.float32, copy=False)
    adata.obsm[key] = frame
    if key in adata.layers:
        del adata.layers[key]  # a stale layer from an earlier run must not disagree with obsm
    if adata.n_vars == 0 or full_layer is False:
        return
    # for every var column, its predicted gene (frame columns are unique; var_names need not be: a gene
    # named twice, as in Space Ranger output before var_names_make_unique, gets its prediction in both)
    source = frame.columns.get_indexer(adata.var_names)
    if full_layer is None and not _layer_wanted(adata, key, frame, source):
        return
    values = np.full(adata.shape, np.nan, dtype=np.float32)
    values[:, source >= 0] = frame.to_numpy(dtype=np.float32)[:, source[source >= 0]]
    adata.layers[key] = values


def _layer_wanted(adata: AnnData, key: str, frame: pd.DataFrame, source: np.ndarray) -> bool:
    """Whether the default writes ``layers[key]``: every gene predicted, and small enough (else say why not)."""
    n_predicted = int((source >= 0).sum())
    where = f"Predictions {key!r} are in adata.obsm[{key!r}] ({frame.shape[1]} genes)"
    hint = f"For scanpy plots use st.tl.prediction_adata(adata, {key!r}), or pass full_layer=True."
    if n_predicted < adata.n_vars:
        nan_share = 100 * (1 - n_predicted / adata.n_vars)
        logger.info(
            f"{where}; adata.layers[{key!r}] was not written ({n_predicted} of {adata.n_vars} genes predicted: "
            f"it would be {nan_share:.1f} % NaN). {hint}"
        )
        return False
    size = adata.n_obs * adata.n_vars * 4
    if size > FULL_LAYER_AUTO_MAX_BYTES:
        warn(
            f"{where}; the layer aligned with all {adata.n_vars} genes would take {size / 2**30:.1f} GiB and was "
            f"not written. {hint}"
        )
        return False
    return True


def get_predictions(adata: AnnData, key: str, genes: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Predictions as a dense ``(spots, genes)`` float array and their gene names.

    Read from ``obsm[key]`` (the spots x predicted genes DataFrame every prediction writes) when present,
    else from ``layers[key]`` (aligned with ``var_names``, NaN for genes not predicted), so that only the
    predicted genes are ever densified. ``genes=None`` returns every predicted gene.
    """
    frame = adata.obsm.get(key)
    if isinstance(frame, pd.DataFrame):
        names = [str(g) for g in frame.columns]
        chosen = names if genes is None else list(genes)
        missing = [g for g in chosen if g not in set(names)]
        if missing:
            msg = f"{len(missing)} gene(s) were not predicted in adata.obsm[{key!r}], e.g. {missing[:5]}."
            raise KeyError(msg)
        return frame[chosen].to_numpy(dtype=np.float64), chosen
    if key not in adata.layers:
        msg = (
            f"No predictions {key!r}: neither adata.obsm[{key!r}] (spots x predicted genes) nor "
            f"adata.layers[{key!r}]. Predict first, e.g. `predictor.predict(adata, key_added={key!r})`."
        )
        raise KeyError(msg)
    if genes is None:
        layer = adata.layers[key]
        predicted = np.zeros(adata.n_vars, dtype=bool)
        for start in range(0, adata.n_vars, 2048):  # column blocks: never a dense copy of the whole layer
            block = np.asarray(
                layer[:, start : start + 2048].toarray() if sp.issparse(layer) else layer[:, start : start + 2048]
            )
            predicted[start : start + block.shape[1]] = ~np.isnan(block).all(axis=0)
        genes = adata.var_names[predicted].tolist()
    check_genes_present(adata, genes)
    return get_matrix(adata, key, columns=adata.var_names.get_indexer(list(genes))), list(genes)


def prediction_adata(adata: AnnData, key: str) -> AnnData:
    """An AnnData of the predicted genes (``X`` = predictions), sharing ``adata``'s spots, positions and images.

    What scanpy and squidpy read, whatever the size of the slide: ``sc.pl.spatial(prediction_adata(adata,
    'pred_ridge'), color='ERBB2')``. ``obs``, ``obsm['spatial']`` and ``uns['spatial']`` are shared with
    ``adata`` (not copied); ``var`` holds ``adata.var``'s rows of the predicted genes when it has them.

    Examples
    --------
    >>> import stpredict as st
    >>> adata = st.datasets.her2st_crop()
    >>> st.pp.normalize(adata)
    >>> train, test = adata[adata.obs.library_id != "C4"].copy(), adata[adata.obs.library_id == "C4"].copy()
    >>> st.tl.fit_predict(train, test, genes=["ERBB2", "GNAS"])
    >>> pred = st.tl.prediction_adata(test, "pred_ridge")
    >>> pred.shape, pred.var_names.tolist(), "spatial" in pred.uns
    ((70, 2), ['ERBB2', 'GNAS'], True)
    """
    check_adata(adata)
    values, genes = get_predictions(adata, key)
    var = adata.var.reindex(genes) if len(adata.var.columns) else pd.DataFrame(index=genes)
    out = AnnData(values.astype(np.float32), obs=adata.obs, var=var)
    for name in ("spatial",):
        if name in adata.obsm:
            out.obsm[name] = adata.obsm[name]
    for name in ("spatial", key):
        if name in adata.uns:
            out.uns[name] = adata.uns[name]
    return out
