"""Honest cross-validation: per fold, genes, penalties and "highly predictive" genes come from training slides."""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from tqdm.auto import tqdm

from .._constants import COUNTS_LAYER
from .._leakage import check_folds_no_leakage
from .._logging import logger
from .._predictions import write_predictions
from .._recipe import FeatureRecipe
from .._validate import as_gene_list, check_adata, library_ids, spot_libraries
from ..models._base import get_model
from ..pp._features import compute_image_features
from ..pp._genes import select_genes
from ..pp._normalize import layer_scale
from ._evaluate import evaluate, summarize
from ._fit import fit
from ._splits import Fold, make_splits


def _fold_slice(adata: AnnData, mask: np.ndarray, layers: set) -> AnnData:
    """The spots of ``mask`` with only the layers a fold reads (a full copy would copy every layer per fold)."""
    view = adata[mask]
    obs = view.obs.copy()
    for column in obs.columns[[isinstance(t, pd.CategoricalDtype) for t in obs.dtypes]]:
        obs[column] = obs[column].cat.remove_unused_categories()  # as AnnData.copy() does
    return AnnData(
        X=view.X.copy() if view.X is not None else None,
        obs=obs,
        var=view.var.copy(),
        obsm={key: view.obsm[key] for key in adata.obsm},
        layers={key: view.layers[key] for key in layers if key is not None and key in adata.layers},
        uns=dict(adata.uns),  # shallow: folds add their own keys without touching adata's
    )


def _check_folds(adata: AnnData, folds: Sequence[Fold], allow_overlap: bool) -> None:
    """Refuse folds that test on training slides, by name or as a relabelled copy, or name unknown slides."""
    if not folds:
        msg = "splits is empty: give folds from st.tl.make_splits or a split method name."
        raise ValueError(msg)
    known = set(library_ids(adata))
    for fold in folds:
        unknown = sorted((set(fold.train) | set(fold.test)) - known)
        if unknown:
            msg = f"Fold {fold.name!r} names slide(s) {unknown} that are not in adata (slides: {sorted(known)})."
            raise KeyError(msg)
        both = sorted(set(fold.train) & set(fold.test))
        if both:
            msg = f"Fold {fold.name!r} has slide(s) {both} in both its training and test slides."
            raise ValueError(msg)
        if not fold.train or not fold.test:
            msg = f"Fold {fold.name!r} has no {'training' if not fold.train else 'test'} slides."
            raise ValueError(msg)
    if not allow_overlap:
        check_folds_no_leakage(adata, folds)


def cross_validate(
    adata: AnnData,
    *,
    splits: Sequence[Fold] | str = "leave_one_patient_out",
    model: str = "ridge",
    genes: Sequence[str] | None = None,
    gene_selection: Mapping[str, Any] = MappingProxyType({"method": "top_expressed", "n_genes": 250}),
    layer: str = "log1p",
    eval_layer: str | None = None,
    mask_layer: str | None = None,
    use_rep: str | None = None,
    n_highly_predictive: int = 50,
    key_added: str | None = None,
    model_params: Mapping[str, Any] = MappingProxyType({}),
    trainer_params: Mapping[str, Any] | None = None,
    device: str = "auto",
    random_state: int | None = 0,
    allow_overlap: bool = False,
    full_layer: bool | None = None,
    show_progress_bar: bool = True,
) -> pd.DataFrame:
    """Train and test a model fold by fold and score every held-out slide.

    Within each fold, only the training slides decide the target genes (``gene_selection``, unless
    ``genes`` is given), the model's hyper-parameters (inner validation on training patients/slides) and
    the "highly predictive" genes of PCC(H): the ``n_highly_predictive`` genes with the best validation
    Pearson reported by the model. Test slides only get scored.

    Parameters
    ----------
    adata
        All slides, with targets in ``layers[layer]``.
    splits
        Folds from :func:`make_splits`, or a ``make_splits`` method name.
    model
        Model name (see :func:`available_models`).
    genes
        Fixed genes for every fold; when ``None`` they are selected per fold with ``gene_selection``
        (arguments of :func:`stpredict.pp.select_genes`).
    gene_selection
        How genes are selected on each fold's training slides.
    layer
        Training target layer.
    eval_layer
        Layer the predictions are scored against (default: ``layer``).
    mask_layer
        Boolean layer of entries left out of every metric (see :func:`evaluate`), e.g. the
        ``'..._imputed'`` mask of ``st.pp.smooth(method='adaptive_median')`` for SEPAL's protocol.
    use_rep
        Image representation (see :func:`fit_predict`); computed once up front when missing.
    n_highly_predictive
        Number of genes in PCC(H).
    key_added
        Predictions of held-out spots go to ``adata.obsm[key_added]`` (spots x genes predicted in any fold,
        default key ``f'cv_{model}'``) and ``adata.layers[key_added]`` (see ``full_layer``); the
        per-gene and per-slide tables and parameters to ``adata.uns[key_added]``.
    model_params, trainer_params, device, random_state
        Passed to :func:`fit`.
    allow_overlap
        Skip the check that no test slide is a training slide under another name (same image and spot
        coordinates; see :func:`fit_predict`).
    full_layer
        Also write the predictions as a layer aligned with all genes (default: when every gene was predicted
        and the layer takes at most 1 GiB; see :meth:`~stpredict.models.Predictor.predict`). They are always in ``obsm[key_added]``.
    show_progress_bar
        Show a progress bar over folds.

    Returns
    -------
    Per held-out slide: ``fold``, ``library_id``, PCC(M), PCC(H), PCC-Patch, MSE, MAE, RMSE, R², and the
    fold's ``fit_s``/``predict_s`` wall time.

    Examples
    --------
    >>> import stpredict as st
    >>> adata = st.datasets.her2st_crop()
    >>> st.pp.normalize(adata)
    >>> folds = st.tl.make_splits(adata, method="leave_one_slide_out", allow_shared_patients=True)
    >>> table = st.tl.cross_validate(adata, splits=folds, gene_selection={"n_genes": 30},
    ...                              n_highly_predictive=10, show_progress_bar=False)
    >>> table.columns[:4].tolist()
    ['fold', 'library_id', 'pcc_m', 'pcc_h']
    """
    check_adata(adata)
    folds = make_splits(adata, method=splits) if isinstance(splits, str) else list(splits)
    _check_folds(adata, folds, allow_overlap)
    eval_layer = eval_layer or layer
    key_added = key_added or f"cv_{model}"
    fixed_genes = as_gene_list(genes)
    model_cls = get_model(model)
    estimator = model_cls(**dict(model_params))  # a misspelled parameter fails before any fold runs
    rep = (use_rep or model_cls.default_rep) if estimator.reads_representation() else use_rep
    precomputed = None
    if rep is not None and rep not in adata.obsm:
        if use_rep is not None:
            msg = f"Representation {use_rep!r} not in adata.obsm; compute it with st.pp.image_features."
            raise KeyError(msg)
        precomputed = compute_image_features(adata, method=rep.removeprefix("X_"), show_progress_bar=show_progress_bar)
        recipe = FeatureRecipe(rep.removeprefix("X_"))  # st.pp.image_features' defaults

    slides = spot_libraries(adata)
    needed = {layer, eval_layer, mask_layer, COUNTS_LAYER, dict(gene_selection).get("layer")}
    fold_predictions, per_gene_tables, per_slide_tables = [], [], []
    for fold in tqdm(folds, desc=f"cross-validate ({model})", disable=not show_progress_bar):
        train_mask, test_mask = np.isin(slides, fold.train), np.isin(slides, fold.test)
        train, test = _fold_slice(adata, train_mask, needed), _fold_slice(adata, test_mask, needed)
        if precomputed is not None:
            train.obsm[rep], test.obsm[rep] = precomputed[train_mask], precomputed[test_mask]
            recipe.store(train, rep)
        if fixed_genes is None:
            select_genes(train, **{"method": "top_expressed", "n_genes": 250, **dict(gene_selection)})
        started = time.perf_counter()
        predictor = fit(
            train,
            model=model,
            genes=fixed_genes,
            layer=layer,
            use_rep=rep,
            device=device,
            random_state=random_state,
            model_params=model_params,
            trainer_params=trainer_params,
        )
        fitted = time.perf_counter()
        predictor.predict(test, key_added="prediction", full_layer=False)
        predicted = time.perf_counter()
        info = test.uns["prediction"]
        highly_predictive = predictor.highly_predictive(n_highly_predictive)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # constant genes are reported in the log below
            per_gene = evaluate(
                test,
                layer_pred="prediction",
                layer_true=eval_layer,
                genes=info["genes"],
                mask_layer=mask_layer,
                inplace=False,
            )
        n_nan = int(per_gene["pearson"].isna().sum())
        if n_nan:
            logger.info(
                "fold %s: %d (slide, gene) pair(s) with constant values are left out of PCC(M)", fold.name, n_nan
            )
        per_slide = summarize(per_gene, highly_predictive).reset_index()
        per_slide.insert(0, "fold", fold.name)
        per_slide["fit_s"], per_slide["predict_s"] = fitted - started, predicted - fitted
        per_slide["val_score"] = predictor.validation.score  # inner validation, training slides only
        per_gene.insert(0, "fold", fold.name)
        per_gene_tables.append(per_gene)
        per_slide_tables.append(per_slide)
        fold_predictions.append(test.obsm["prediction"])

    per_slide = pd.concat(per_slide_tables, ignore_index=True)
    per_gene = pd.concat(per_gene_tables, ignore_index=True)
    per_gene["library_id"] = per_gene["library_id"].astype(str)
    # spots x every gene predicted in some fold; NaN for spots outside the test slides and genes of other folds
    frame = pd.concat(fold_predictions).reindex(index=adata.obs_names)
    write_predictions(adata, key_added, frame, full_layer)
    adata.uns[key_added] = {
        "per_slide": per_slide,
        "per_gene": per_gene,
        "summary": per_slide.drop(columns=["fold", "library_id", "n_genes", "fit_s", "predict_s", "val_score"])
        .mean(axis=0)
        .to_dict(),
        "params": {
            "model": model,
            "layer": layer,
            "scale": layer_scale(adata, layer),
            "eval_layer": eval_layer,
            "mask_layer": mask_layer,
            "use_rep": rep,
            "folds": [{"name": f.name, "train": f.train, "test": f.test} for f in folds],
            "gene_selection": dict(gene_selection) if fixed_genes is None else None,
            "n_highly_predictive": n_highly_predictive,
            "random_state": random_state,
        },
    }
    return per_slide
