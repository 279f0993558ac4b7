"""Scores of predicted against measured expression, per slide, as the field reports them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from .._constants import LIBRARY_KEY
from .._logging import logger, warn
from .._metrics import column_pearson
from .._predictions import get_predictions
from .._validate import as_gene_list, check_adata, check_genes_present, get_matrix, slide_masks
from ..pp._normalize import layer_scale

GENE_METRICS = ("pearson", "mse", "mae", "rmse", "r2")


def _gene_scores(y: np.ndarray, p: np.ndarray) -> dict[str, np.ndarray]:
    valid = np.isfinite(y) & np.isfinite(p)
    n = valid.sum(axis=0)
    err = np.where(valid, p - y, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mse = (err**2).sum(axis=0) / n
        mae = np.abs(err).sum(axis=0) / n
        ymean = np.where(valid, y, 0.0).sum(axis=0) / n
        tss = (np.where(valid, y - ymean, 0.0) ** 2).sum(axis=0)
        r2 = np.where(tss > 0, 1.0 - (err**2).sum(axis=0) / np.where(tss > 0, tss, 1.0), np.nan)
    return {"pearson": column_pearson(y, p), "mse": mse, "mae": mae, "rmse": np.sqrt(mse), "r2": r2}


def summarize(per_gene: pd.DataFrame, highly_predictive: Sequence[str] | None = None) -> pd.DataFrame:
    """Per-slide summary of a per-gene score table (as returned by :func:`evaluate`).

    ``pcc_m`` is the mean over genes of the per-gene Pearson; ``pcc_h`` the same over ``highly_predictive``
    genes; other columns are means over genes. ``pcc_patch`` is copied from ``per_gene.attrs`` when present.

    Examples
    --------
    >>> import pandas as pd
    >>> table = pd.DataFrame({"library_id": ["s1", "s1"], "gene": ["A", "B"], "pearson": [0.2, 0.4],
    ...                       "mse": [1.0, 3.0], "mae": [1.0, 1.0], "rmse": [1.0, 1.7], "r2": [0.1, 0.3]})
    >>> summarize(table, highly_predictive=["B"])[["pcc_m", "pcc_h", "mse"]]
                pcc_m  pcc_h  mse
    library_id
    s1            0.3    0.4  2.0
    """
    grouped = per_gene.groupby("library_id", sort=False, observed=True)
    summary = pd.DataFrame(
        {
            "pcc_m": grouped["pearson"].mean(),
            "pcc_h": np.nan,
            "mse": grouped["mse"].mean(),
            "mae": grouped["mae"].mean(),
            "rmse": grouped["rmse"].mean(),
            "r2": grouped["r2"].mean(),
            "n_genes": grouped["gene"].size(),
        }
    )
    if highly_predictive is not None:
        hp = per_gene[per_gene["gene"].isin(list(highly_predictive))]
        summary["pcc_h"] = hp.groupby("library_id", sort=False, observed=True)["pearson"].mean()
    patch = per_gene.attrs.get("pcc_patch")
    if patch is not None:
        summary["pcc_patch"] = pd.Series(patch)
        summary["r2_patch"] = pd.Series(per_gene.attrs.get("r2_patch", {}), dtype=float)
        summary = summary[["pcc_m", "pcc_h", "pcc_patch", "mse", "mae", "rmse", "r2", "r2_patch", "n_genes"]]
    return summary


def _prediction_scale(adata: AnnData, layer_pred: str) -> str | None:
    """Scale of the targets the predictions in ``layer_pred`` were trained on, as recorded in ``uns``."""
    record = adata.uns.get(layer_pred)
    if not isinstance(record, Mapping):
        return None
    if isinstance(record.get("target"), Mapping):  # Predictor.predict
        return record["target"].get("scale")
    return record.get("params", {}).get("scale")  # cross_validate


def _warn_if_scales_differ(adata: AnnData, layer_pred: str, layer_true: str) -> None:
    predicted, measured = _prediction_scale(adata, layer_pred), layer_scale(adata, layer_true)
    if predicted and measured and predicted != measured:
        warn(
            f"Predictions {layer_pred!r} are on the {predicted!r} scale (their training targets) but layer_true "
            f"{layer_true!r} is on the {measured!r} scale: the scores compare different transforms. Score against "
            f"a layer on the {predicted!r} scale (e.g. st.pp.normalize's output)."
        )


def evaluate(
    adata: AnnData,
    *,
    layer_pred: str,
    layer_true: str = "log1p",
    by: str = LIBRARY_KEY,
    genes: Sequence[str] | None = None,
    highly_predictive: Sequence[str] | None = None,
    mask_layer: str | None = None,
    key_added: str | None = None,
    inplace: bool = True,
) -> pd.DataFrame:
    """Score predictions against measured expression, slide by slide.

    Per slide (``obs[by]``) and gene: Pearson across spots, MSE, MAE, RMSE and R². Per slide: PCC(M) =
    mean per-gene Pearson (SEPAL's PCC-Gene), PCC(H) = the same over ``highly_predictive`` genes (choose
    them without looking at test slides, e.g. from validation folds), PCC-Patch and R²-Patch = means over
    spots of the Pearson and of the R² across genes; ``r2`` is the mean per-gene R² (R²-Gene).
    Means over slides summarise a data set. A gene whose prediction or truth is constant on a slide gets a
    NaN Pearson (with a warning) and is left out of the means.

    Parameters
    ----------
    adata
        Slides holding both layers.
    layer_pred
        Key of the predictions: ``obsm[layer_pred]`` (spots x predicted genes, written by every prediction)
        or ``layers[layer_pred]`` (aligned with ``var_names``, NaN for genes not predicted).
    layer_true
        Layer with the measured targets, on the same scale.
    by
        ``obs`` column defining slides.
    genes
        Genes to score; default: every gene with predictions.
    highly_predictive
        Genes for PCC(H). Default: the genes the predictions record in ``uns[layer_pred]['highly_predictive']``
        (every ``Predictor.predict`` records the 50 best on its training slides' validation), else PCC(H) is
        NaN.
    mask_layer
        Boolean layer of entries to ignore (e.g. ``f'{key}_imputed'`` written by
        ``st.pp.smooth(method='adaptive_median')``): every metric then reads the originally non-zero
        entries only, as SEPAL reports.
    key_added
        Where results are recorded; default ``f'{layer_pred}_eval'``.
    inplace
        Record per-gene means in ``adata.var[f'{key_added}_{metric}']`` and, in ``adata.uns[key_added]``,
        the per-slide table (``'per_slide'``), the mean over slides (``'summary'``) and parameters.

    Returns
    -------
    Tidy per-gene table: one row per (slide, gene) with ``library_id, gene, n_spots`` and the metrics.

    Examples
    --------
    >>> import numpy as np, stpredict as st
    >>> adata = st.datasets.her2st_crop()
    >>> st.pp.normalize(adata)
    >>> genes = ["ERBB2", "GNAS", "FASN"]
    >>> truth = adata[:, genes].layers["log1p"]
    >>> adata.layers["pred"] = np.full(adata.shape, np.nan, dtype=np.float32)
    >>> adata.layers["pred"][:, adata.var_names.get_indexer(genes)] = truth + 0.1  # a perfect ranking
    >>> table = st.tl.evaluate(adata, layer_pred="pred")
    >>> round(float(adata.uns["pred_eval"]["summary"]["pcc_m"]), 3)
    1.0
    """
    check_adata(adata)
    if highly_predictive is None:
        highly_predictive = (adata.uns.get(layer_pred) or {}).get("highly_predictive")
        if highly_predictive is not None:
            logger.info("evaluate: PCC(H) over the %d genes uns[%r] records (chosen on training slides)",
                        len(highly_predictive), layer_pred)  # fmt: skip
    pred, genes = get_predictions(adata, layer_pred, as_gene_list(genes))
    if not genes:
        msg = f"{layer_pred!r} holds no prediction (all NaN)."
        raise ValueError(msg)
    check_genes_present(adata, genes)
    _warn_if_scales_differ(adata, layer_pred, layer_true)
    columns = adata.var_names.get_indexer(genes)
    true = get_matrix(adata, layer_true, columns=columns)
    if mask_layer is not None:
        skip = get_matrix(adata, mask_layer, columns=columns, dtype=bool)
        true = np.where(skip, np.nan, true)
    if np.isnan(pred[~np.isnan(true)]).any():
        msg = f"{layer_pred!r} has NaN predictions for some of the scored genes; pass `genes=` to restrict."
        raise ValueError(msg)

    rows, patch, r2_patch = [], {}, {}
    n_constant = 0
    for library_id, mask in slide_masks(adata, by).items():
        scores = _gene_scores(true[mask], pred[mask])
        n_constant += int(np.isnan(scores["pearson"]).sum())
        frame = pd.DataFrame({"library_id": library_id, "gene": genes, "n_spots": int(mask.sum()), **scores})
        rows.append(frame)
        spot_pearson = column_pearson(true[mask].T, pred[mask].T)
        patch[library_id] = float(np.nanmean(spot_pearson)) if np.isfinite(spot_pearson).any() else np.nan
        spot_r2 = _gene_scores(true[mask].T, pred[mask].T)["r2"]
        r2_patch[library_id] = float(np.nanmean(spot_r2)) if np.isfinite(spot_r2).any() else np.nan
    if n_constant:
        warn(
            f"{n_constant} (slide, gene) pair(s) have constant prediction or truth: their Pearson is NaN "
            "and left out of PCC(M)."
        )
    per_gene = pd.concat(rows, ignore_index=True)
    per_gene["library_id"] = per_gene["library_id"].astype("category")
    per_gene.attrs["pcc_patch"] = patch
    per_gene.attrs["r2_patch"] = r2_patch
    per_slide = summarize(per_gene, highly_predictive)
    summary = per_slide.drop(columns="n_genes").mean(axis=0)
    logger.info("evaluate %s: PCC(M) = %.3f over %d slide(s)", layer_pred, summary["pcc_m"], len(per_slide))
    if inplace:
        key_added = key_added or f"{layer_pred}_eval"
        means = per_gene.groupby("gene", sort=False)[list(GENE_METRICS)].mean()
        for metric in GENE_METRICS:
            adata.var[f"{key_added}_{metric}"] = means[metric].reindex(adata.var_names).to_numpy()
        adata.uns[key_added] = {
            "per_slide": per_slide,
            "summary": summary.to_dict(),
            "params": {
                "layer_pred": layer_pred,
                "layer_true": layer_true,
                "by": by,
                "n_genes": len(genes),
                "highly_predictive": list(highly_predictive) if highly_predictive is not None else None,
                "mask_layer": mask_layer,
            },
        }
    return per_gene
