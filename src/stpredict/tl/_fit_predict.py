"""``st.tl.fit_predict``: the single entry point shared by every model."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._constants import COUNTS_LAYER, PATIENT_KEY
from .._device import resolve_device
from .._logging import logger
from .._validate import (
    as_gene_list,
    check_adata,
    check_genes_present,
    get_matrix,
    get_rep,
    library_ids,
    require_spatial,
    spot_libraries,
)
from ..pp._features import compute_image_features
from ._models import SpotData, get_model


def _default_genes(adata_train: AnnData, n_genes: int = 250) -> list[str]:
    """Genes chosen on the training slides: ``uns['selected']`` if present, else the 250 most expressed."""
    if "selected" in adata_train.uns and "genes" in adata_train.uns["selected"]:
        return list(adata_train.uns["selected"]["genes"])
    from ..pp._genes import select_genes

    layer = COUNTS_LAYER if COUNTS_LAYER in adata_train.layers else None
    chosen = select_genes(adata_train, method="top_expressed", n_genes=n_genes, layer=layer, copy=True)
    logger.info("fit_predict: no genes given; using the %d most expressed genes of the training slides", n_genes)
    return list(chosen.uns["selected"]["genes"])


def _representation(adata: AnnData, use_rep: str | None, default_rep: str | None, role: str) -> tuple[np.ndarray, str]:
    key = use_rep or default_rep
    if key is None:
        msg = "This model needs `use_rep=` (an .obsm key)."
        raise ValueError(msg)
    if key in adata.obsm:
        return get_rep(adata, key), key
    if use_rep is not None:
        msg = (
            f"{role}: representation {use_rep!r} not found in .obsm (available: {list(adata.obsm.keys())}). "
            "Compute it on both training and test slides, e.g. `st.pp.image_features(adata)`."
        )
        raise KeyError(msg)
    method = key.removeprefix("X_")
    logger.info(
        "%s: computing the %s representation from the images (store it with st.pp.image_features)", role, method
    )
    return compute_image_features(adata, method=method).astype(np.float64), key


def _spot_data(adata: AnnData, features: np.ndarray, targets: np.ndarray | None) -> SpotData:
    patient = (
        adata.obs[PATIENT_KEY].astype(object).to_numpy() if PATIENT_KEY in adata.obs else np.full(adata.n_obs, None)
    )
    return SpotData(
        features=features,
        library=spot_libraries(adata),
        patient=patient,
        spatial=require_spatial(adata),
        adata=adata,
        targets=targets,
    )


def fit_predict(
    adata_train: AnnData,
    adata_test: AnnData,
    *,
    model: str = "ridge",
    genes: Sequence[str] | None = None,
    layer: str | None = "log1p",
    use_rep: str | None = None,
    key_added: str | None = None,
    device: str = "auto",
    random_state: int | None = 0,
    model_params: Mapping[str, Any] = MappingProxyType({}),
    copy: bool = False,
) -> AnnData | None:
    """Train a model on slides with expression and predict expression of other slides from their images.

    Parameters
    ----------
    adata_train
        Training slides with measured targets in ``layers[layer]``. Never modified.
    adata_test
        Slides to predict: with or without expression (image and spot coordinates suffice). None of its
        slides may be among the training slides.
    model
        A name from :func:`available_models` (``'ridge'``: ridge regression on image features).
    genes
        Genes to predict; default ``adata_train.uns['selected']['genes']`` (see :func:`stpredict.pp.select_genes`),
        else the 250 most expressed genes of the training slides.
    layer
        Target layer of ``adata_train`` (``None`` for ``X``), e.g. ``'log1p'`` from :func:`stpredict.pp.normalize`
        or a smoothed layer.
    use_rep
        ``obsm`` image representation the model reads; ``None`` uses the model's default, computing it from
        the images when absent (without storing it).
    key_added
        Output key, default ``f'pred_{model}'``.
    device
        ``'auto'``, ``'cpu'`` or ``'cuda[:i]'`` for models that run on torch.
    random_state
        Seed of every random step.
    model_params
        Extra parameters of the model (e.g. ``{'alphas': [1, 10]}`` for ridge).
    copy
        Return a modified copy of ``adata_test`` instead of writing into it.

    Returns
    -------
    ``None`` or the modified copy of ``adata_test``, which receives

    - ``obsm[key_added]``: DataFrame spots x predicted genes (always, also for image-only slides);
    - ``layers[key_added]``: predictions aligned with ``var_names``, NaN for genes not predicted (when
      ``adata_test`` has genes);
    - ``uns[key_added]``: model, genes, parameters, training slides, validation details, device, timings.

    Examples
    --------
    >>> import stpredict as st
    >>> adata = st.datasets.her2st_crop()
    >>> st.pp.normalize(adata)
    >>> train, test = adata[adata.obs.library_id != "C4"].copy(), adata[adata.obs.library_id == "C4"].copy()
    >>> st.tl.fit_predict(train, test, genes=["ERBB2", "GNAS", "FASN"])
    >>> test.obsm["pred_ridge"].shape
    (70, 3)
    >>> scores = st.tl.evaluate(test, layer_pred="pred_ridge")
    """
    check_adata(adata_train, "adata_train")
    check_adata(adata_test, "adata_test")
    model_cls = get_model(model)
    train_slides, test_slides = library_ids(adata_train), library_ids(adata_test)
    overlap = sorted(set(train_slides) & set(test_slides))
    if overlap:
        msg = (
            f"Slide(s) {overlap} are in both adata_train and adata_test. Test slides must never be trained on: "
            "split by slide (or better, by patient: see `st.tl.make_splits`)."
        )
        raise ValueError(msg)
    genes = as_gene_list(genes) or _default_genes(adata_train)
    check_genes_present(adata_train, genes, "adata_train")
    if adata_test.n_vars > 0 and not adata_test.var_names.isin(genes).any():
        msg = (
            f"adata_test shares none of the {len(genes)} predicted genes (e.g. {genes[:3]} vs "
            f"{adata_test.var_names[:3].tolist()}). Check gene naming (symbols vs Ensembl ids)."
        )
        raise ValueError(msg)
    columns = adata_train.var_names.get_indexer(genes)
    targets = get_matrix(adata_train, layer, columns=columns)
    if not np.isfinite(targets).all():
        msg = f"Targets adata_train.layers[{layer!r}] contain NaN/inf for the chosen genes."
        raise ValueError(msg)

    resolved_device = resolve_device(device, model_cls.uses_device)
    started = time.perf_counter()
    x_train, rep = _representation(adata_train, use_rep, model_cls.default_rep, "adata_train")
    x_test, _ = _representation(adata_test, use_rep, model_cls.default_rep, "adata_test")
    if x_train.shape[1] != x_test.shape[1]:
        msg = f"Representation {rep!r} has {x_train.shape[1]} features in training but {x_test.shape[1]} in test."
        raise ValueError(msg)
    estimator = model_cls(random_state=random_state, device=resolved_device, **dict(model_params))
    estimator.fit(_spot_data(adata_train, x_train, targets))
    fitted = time.perf_counter()
    prediction = np.asarray(estimator.predict(_spot_data(adata_test, x_test, None)), dtype=np.float32)
    if prediction.shape != (adata_test.n_obs, len(genes)):
        msg = f"Model {model!r} returned shape {prediction.shape}, expected {(adata_test.n_obs, len(genes))}."
        raise RuntimeError(msg)

    key_added = key_added or f"pred_{model}"
    adata_test = adata_test.copy() if copy else adata_test
    adata_test.obsm[key_added] = pd.DataFrame(prediction, index=adata_test.obs_names, columns=genes)
    if adata_test.n_vars > 0:
        layer_values = np.full(adata_test.shape, np.nan, dtype=np.float32)
        present = adata_test.var_names.get_indexer(genes)
        layer_values[:, present[present >= 0]] = prediction[:, present >= 0]
        adata_test.layers[key_added] = layer_values
    validation = dict(estimator.validation_)
    if "gene_pearson" in validation:
        validation["gene_pearson"] = pd.Series(validation["gene_pearson"], index=genes)
    adata_test.uns[key_added] = {
        "model": model,
        "genes": genes,
        "layer": layer,
        "use_rep": rep,
        "params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in estimator.get_params().items()},
        "train_slides": train_slides,
        "validation": validation,
        "device": resolved_device,
        "random_state": random_state,
        "time_fit_s": fitted - started,
        "time_predict_s": time.perf_counter() - fitted,
    }
    logger.info(
        "fit_predict: %s trained on %s, predicted %d gene(s) for %s", model, train_slides, len(genes), test_slides
    )
    return adata_test if copy else None
