"""Honest comparison as one call: every model on the same folds and genes, per held-out slide and pooled.

Pooling all held-out spots before correlating lets differences between slides (depth, tissue composition)
that image and expression share inflate the Pearson; per-slide scores do not. Papers report either, which
is why published numbers for the same model can differ several-fold. :func:`benchmark` reports both side by
side, and compares every model with a reference on the slides it was not trained on (paired by slide).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import stats

from .._logging import logger
from .._metrics import column_pearson
from .._validate import check_adata, get_matrix, spot_libraries
from ._cross_validate import cross_validate
from ._splits import Fold, make_splits

METRICS = ("pcc_m", "pcc_h", "mse", "mae")


def _model_specs(models) -> dict[str, tuple[str, dict]]:
    """``{label: (registered model, model_params)}`` from names or ``{label: {'model': ..., 'model_params': ...}}``."""
    if isinstance(models, str):
        models = [models]
    if isinstance(models, Mapping):
        specs = {}
        for label, spec in models.items():
            spec = dict(spec)
            unknown = sorted(set(spec) - {"model", "model_params"})
            if "model" not in spec or unknown:
                msg = (
                    f"benchmark: models[{label!r}] must be {{'model': name, 'model_params': {{...}}}}"
                    + (f"; unknown key(s) {unknown}" if unknown else "")
                    + "."
                )
                raise ValueError(msg)
            specs[str(label)] = (spec["model"], dict(spec.get("model_params", {})))
        return specs
    names = list(models)
    if len(set(names)) != len(names):
        msg = f"benchmark: a model is named twice in {names}; give labels with a mapping to run two settings."
        raise ValueError(msg)
    return {name: (name, {}) for name in names}


def pooled_scores(adata: AnnData, key: str, layer: str, slides: Sequence[str]) -> dict[str, float]:
    """PCC(M), MSE and MAE over all spots of ``slides`` pooled, from the predictions in ``obsm[key]``.

    Every gene is correlated over the held-out spots where it was predicted (gene selection may differ
    between folds), then averaged over genes.
    """
    mask = np.isin(spot_libraries(adata), list(slides))
    predicted = adata.obsm[key].loc[adata.obs_names[mask]]
    genes = predicted.columns.tolist()
    truth = get_matrix(adata[mask], layer, columns=adata.var_names.get_indexer(genes)).astype(np.float64)
    values = predicted.to_numpy(dtype=np.float64)
    r = column_pearson(truth, values)
    error = values - truth
    return {
        "pcc_m": float(np.nan_to_num(r, nan=0.0).mean()) if len(r) else np.nan,
        "mse": float(np.nanmean(error**2)),
        "mae": float(np.nanmean(np.abs(error))),
    }


def paired_comparison(
    table: pd.DataFrame, reference: str, *, metric: str = "pcc_m", n_bootstrap: int = 2000, random_state: int = 0
) -> pd.DataFrame:
    """Each model against ``reference`` on the held-out slides they share: mean difference, interval, test.

    ``ci_low``/``ci_high``: a 95 % bootstrap interval of the mean difference, resampling slides; ``p_value``:
    the two-sided Wilcoxon signed-rank test of the per-slide differences (``NaN`` below 2 slides); ``wins``:
    slides where the model scores higher.

    Examples
    --------
    >>> import pandas as pd
    >>> table = pd.DataFrame({"model": ["a"] * 3 + ["b"] * 3, "library_id": ["s1", "s2", "s3"] * 2,
    ...                       "pcc_m": [0.2, 0.3, 0.4, 0.25, 0.33, 0.46]})
    >>> paired_comparison(table, "a")[["model", "mean_difference", "wins", "n_slides"]]
      model  mean_difference  wins  n_slides
    0     b         0.046667     3         3
    """
    per_slide = table[table["library_id"] != "pooled"].pivot_table(index="library_id", columns="model", values=metric)
    if reference not in per_slide:
        msg = f"benchmark: the reference {reference!r} is not among the models {list(per_slide.columns)}."
        raise ValueError(msg)
    rng = np.random.default_rng(random_state)
    rows = []
    for model in per_slide.columns.drop(reference):
        difference = (per_slide[model] - per_slide[reference]).dropna().to_numpy()
        n = len(difference)
        draws = difference[rng.integers(0, n, size=(n_bootstrap, n))].mean(axis=1) if n else np.array([np.nan])
        p = np.nan
        if n >= 2 and np.any(difference != 0):
            p = float(stats.wilcoxon(difference, alternative="two-sided").pvalue)
        rows.append(
            {
                "model": model,
                "reference": reference,
                "metric": metric,
                "mean_difference": float(difference.mean()) if n else np.nan,
                "ci_low": float(np.quantile(draws, 0.025)),
                "ci_high": float(np.quantile(draws, 0.975)),
                "p_value": p,
                "wins": int((difference > 0).sum()),
                "n_slides": n,
            }
        )
    return pd.DataFrame(rows)


def benchmark(
    adata: AnnData,
    models: Sequence[str] | Mapping[str, Mapping[str, Any]] = ("ridge", "ridge_spatial"),
    *,
    splits: Sequence[Fold] | str = "leave_one_patient_out",
    allow_shared_patients: bool = False,
    reference: str | None = "ridge",
    genes: Sequence[str] | None = None,
    gene_selection: Mapping[str, Any] = MappingProxyType({"method": "top_expressed", "n_genes": 250}),
    layer: str = "log1p",
    use_rep: str | None = None,
    n_bootstrap: int = 2000,
    key_added: str = "benchmark",
    random_state: int | None = 0,
    show_progress_bar: bool = True,
    **cross_validate_kwargs: Any,
) -> pd.DataFrame:
    """Cross-validate several models on the same folds and genes; a tidy table per held-out slide and pooled.

    Every model is run by :func:`cross_validate` on the same folds (``splits`` resolved once), so each
    held-out slide is predicted by models that never saw it, and the genes of a fold are chosen on its
    training slides alone (identically for every model). Nothing about the test slides is chosen anywhere.

    Parameters
    ----------
    adata
        All slides, with targets in ``layers[layer]``.
    models
        Registered model names, or ``{label: {'model': name, 'model_params': {...}}}`` to compare settings
        (e.g. a model against its ablations, :func:`~stpredict.tl.model_ablations`).
    splits
        Folds from :func:`make_splits`, or a ``make_splits`` method name (by patient by default).
    allow_shared_patients
        With a method name: allow folds that put one patient's slides on both sides (see :func:`make_splits`).
    reference
        The model every other is compared with, slide by slide (``None``: no comparison).
    genes, gene_selection, layer, use_rep
        As in :func:`cross_validate`.
    n_bootstrap
        Resamples of the held-out slides for the comparison's intervals.
    key_added
        Each model's held-out predictions go to ``obsm[f'{key_added}_{label}']``; the table and the
        comparison to ``uns[key_added]``.
    random_state
        Seed of the models and of the bootstrap.
    show_progress_bar
        Progress over folds.
    **cross_validate_kwargs
        Passed to :func:`cross_validate` (``trainer_params``, ``device``, ``n_highly_predictive``, ...).

    Returns
    -------
    One row per model and held-out slide (``library_id``, ``fold``, PCC(M), PCC(H), MSE, MAE, fit time)
    and one ``library_id='pooled'`` row per model (all held-out spots correlated together; PCC(H) is not
    defined there). ``uns[key_added]['comparison']``: :func:`paired_comparison` against ``reference``.

    Examples
    --------
    >>> import stpredict as st
    >>> adata = st.datasets.her2st_crop()
    >>> st.pp.normalize(adata)
    >>> import warnings
    >>> with warnings.catch_warnings():  # the crop's three sections come from one patient
    ...     warnings.simplefilter("ignore")
    ...     table = st.tl.benchmark(adata, ["ridge", "ridge_spatial"], splits="leave_one_slide_out",
    ...                             allow_shared_patients=True, gene_selection={"n_genes": 20},
    ...                             show_progress_bar=False)
    >>> table.pivot(index="library_id", columns="model", values="pcc_m").index.tolist()
    ['C2', 'C3', 'C4', 'pooled']
    >>> adata.uns["benchmark"]["comparison"][["model", "reference", "n_slides"]]
               model reference  n_slides
    0  ridge_spatial     ridge         3
    """
    check_adata(adata)
    specs = _model_specs(models)
    if reference is not None and reference not in specs:
        msg = f"benchmark: the reference {reference!r} is not among the models {list(specs)}; add it or pass None."
        raise ValueError(msg)
    if isinstance(splits, str):
        folds = make_splits(adata, method=splits, allow_shared_patients=allow_shared_patients)
    else:
        folds = list(splits)
    held_out = sorted({slide for fold in folds for slide in fold.test})
    eval_layer = cross_validate_kwargs.get("eval_layer") or layer
    rows = []
    for label, (model, params) in specs.items():
        logger.info("benchmark: %s", label)
        key = f"{key_added}_{label}"
        per_slide = cross_validate(
            adata, splits=folds, model=model, model_params=params, genes=genes, gene_selection=gene_selection,
            layer=layer, use_rep=use_rep, key_added=key, random_state=random_state,
            show_progress_bar=show_progress_bar, full_layer=False, **cross_validate_kwargs,
        )  # fmt: skip
        slide_rows = per_slide[["fold", "library_id", *METRICS, "n_genes", "fit_s"]].copy()
        slide_rows.insert(0, "model", label)
        pooled = {"model": label, "fold": "all", "library_id": "pooled", "pcc_h": np.nan}
        pooled.update(pooled_scores(adata, key, eval_layer, held_out))
        pooled.update(n_genes=int(adata.obsm[key].shape[1]), fit_s=float(per_slide["fit_s"].sum()))
        rows.extend([slide_rows, pd.DataFrame([pooled])])
    table = pd.concat(rows, ignore_index=True)
    table["library_id"] = table["library_id"].astype(str)
    comparison = None
    if reference is not None and len(specs) > 1:
        comparison = paired_comparison(
            table, reference, n_bootstrap=n_bootstrap, random_state=0 if random_state is None else random_state
        )
    adata.uns[key_added] = {
        "table": table,
        "comparison": comparison,
        "params": {
            "models": {label: {"model": m, "model_params": p} for label, (m, p) in specs.items()},
            "reference": reference,
            "folds": [{"name": f.name, "train": f.train, "test": f.test} for f in folds],
            "layer": layer,
        },
    }
    return table
