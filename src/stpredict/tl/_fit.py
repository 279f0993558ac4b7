"""``st.tl.fit`` / ``st.tl.predict`` / ``st.tl.load_model``: train once, predict on new H&E slides later."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from os import PathLike
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._device import resolve_device
from .._leakage import slide_fingerprints
from .._logging import logger
from .._recipe import FeatureRecipe, jsonable
from .._validate import as_gene_list, check_adata, check_genes_present, get_matrix, get_rep, library_ids
from ..models import Predictor
from ..models._base import get_model
from ..models._conformal import calibrate as calibrate_out_of_fold
from ..models._inputs import build_inputs, spot_patients
from ..models._novelty import NoveltyReference
from ..models._predictor import representation_recipe
from ..models._validation import validation_groups
from ..pp._genes import default_genes
from ..pp._normalize import layer_scale


def default_recipe(method: str) -> dict[str, Any]:
    """The recipe of a representation computed on the fly with ``st.pp.image_features``' defaults."""
    return FeatureRecipe(method).record()


def _training_representation(adata: AnnData, use_rep: str | None, default_rep: str | None):
    """``(features, key, recipe)`` of the training slides: stored in ``obsm``, or the default computed on the fly."""
    from ..pp._features import compute_image_features

    key = use_rep or default_rep
    if key is None:
        msg = "This model needs `use_rep=` (an .obsm key)."
        raise ValueError(msg)
    if key in adata.obsm:
        return get_rep(adata, key), key, representation_recipe(adata, key)
    if use_rep is not None:
        get_rep(adata, use_rep)  # raises the explanatory KeyError
    method = key.removeprefix("X_")
    logger.info("fit: computing the %s representation from the images (store it with st.pp.image_features)", method)
    return compute_image_features(adata, method=method).astype(np.float64), key, default_recipe(method)


def _training_mpp(adata: AnnData) -> float | None:
    """Median microns per pixel of the training slides (``None`` when none records it)."""
    from ..pp._patches import slide_mpp

    values = [v for v in (slide_mpp(adata, k) for k in library_ids(adata)) if v is not None]
    return float(np.median(values)) if values else None


def _target_provenance(adata: AnnData, layer: str | None) -> dict[str, Any]:
    """What produced the target layer (``st.pp.normalize``/``smooth`` parameters), as recorded in ``uns``."""
    found: dict[str, Any] = {"layer": layer, "scale": layer_scale(adata, layer)}
    for step in ("stpredict_normalize", "stpredict_smooth"):
        record = adata.uns.get(step, {})
        if layer in record:
            found[step.removeprefix("stpredict_")] = jsonable(record[layer])
    return found


def _checked_genes(adata_train: AnnData, genes: Sequence[str] | str | None) -> list[str]:
    listed = as_gene_list(genes)
    if listed is not None and not listed:
        msg = "genes=[] asks for no genes; pass gene names, or genes=None for the training slides' selection."
        raise ValueError(msg)
    chosen = listed or default_genes(adata_train)
    if len(set(chosen)) != len(chosen):
        dupes = pd.Index(chosen)[pd.Index(chosen).duplicated()].unique()[:5].tolist()
        msg = f"genes lists {dupes} more than once."
        raise ValueError(msg)
    check_genes_present(adata_train, chosen, "adata_train")
    return chosen


def fit(
    adata_train: AnnData,
    *,
    model: str = "ridge",
    genes: Sequence[str] | None = None,
    layer: str | None = "log1p",
    use_rep: str | None = None,
    device: str = "auto",
    random_state: int | None = 0,
    model_params: Mapping[str, Any] = MappingProxyType({}),
    trainer_params: Mapping[str, Any] | None = None,
    show_progress_bar: bool = False,
    calibrate: bool | int = False,
) -> Predictor:
    """Train a model on slides with measured expression; apply it later to any H&E slide.

    Hyper-parameters, early stopping and the validation scores use held-out groups of these training
    slides only (patients, else slides, else spatial blocks).

    Parameters
    ----------
    adata_train
        Training slides with targets in ``layers[layer]``. Never modified.
    model
        A name from :func:`available_models`: ``'ridge'``, ``'ridge_spatial'`` (ridge on each spot's and its
        grid neighbours' mean representation), ``'mlp'`` ...
    genes
        Genes to predict; default ``adata_train.uns['selected']['genes']`` (see :func:`stpredict.pp.select_genes`),
        else the 250 most expressed genes of the training slides.
    layer
        Target layer (``None`` for ``X``), e.g. ``'log1p'`` from :func:`stpredict.pp.normalize` or a smoothed layer.
    use_rep
        ``obsm`` image representation the model reads; ``None`` uses the model's default, computing it from
        the images when absent (without storing it).
    device
        ``'auto'`` (CUDA when present), ``'cpu'`` or ``'cuda[:i]'`` for torch models.
    random_state
        Seed of every random step (same seed on CPU: identical predictions).
    model_params
        Parameters of the model; unknown keys are an error listing the accepted ones.
    trainer_params
        Passed to ``lightning.Trainer`` for neural models (e.g. ``{'strategy': 'ddp', 'devices': 4}``).
    show_progress_bar
        Training progress bar (neural models).
    calibrate
        Also measure how wrong the model is on training groups it did not see, for prediction intervals
        (``predict(..., interval=0.9)``) and per-gene reliability (:meth:`~stpredict.models.Predictor.gene_reliability`):
        the model is refitted without each of ``calibrate`` folds of training groups (``True``: 3 folds), so
        fitting costs that many times more. See ``docs/uncertainty.md``.

    Returns
    -------
    A :class:`~stpredict.models.Predictor`: ``.predict(adata)``, ``.save(path)``, ``.validation``.

    Examples
    --------
    >>> import stpredict as st
    >>> adata = st.datasets.her2st_crop()
    >>> st.pp.normalize(adata)
    >>> train = adata[adata.obs.library_id != "C4"].copy()
    >>> predictor = st.tl.fit(train, genes=["ERBB2", "GNAS", "FASN"])
    >>> predictor.validation.groups, predictor.train_slides
    ('slide', ['C2', 'C3'])
    """
    check_adata(adata_train, "adata_train")
    model_cls = get_model(model)
    n_folds = _calibration_folds(calibrate)

    def new_estimator():
        return model_cls(
            random_state=random_state,
            device=resolve_device(device, model_cls.uses_device),
            trainer_params=trainer_params,
            show_progress_bar=show_progress_bar,
            **dict(model_params),
        )

    estimator = new_estimator()
    chosen = _checked_genes(adata_train, genes)
    target = _target_provenance(adata_train, layer)
    targets = get_matrix(adata_train, layer, columns=adata_train.var_names.get_indexer(chosen))
    if not np.isfinite(targets).all():
        msg = f"Targets adata_train.layers[{layer!r}] contain NaN/inf for the chosen genes."
        raise ValueError(msg)
    started = time.perf_counter()
    if estimator.reads_representation():
        features, rep, recipe = _training_representation(adata_train, use_rep, model_cls.default_rep)
    else:
        if use_rep is not None:
            msg = (
                f"Model {model!r} with these model_params learns its own representation from the images, so "
                f"use_rep={use_rep!r} would be ignored: drop use_rep, or ask the model to read it"
                + (
                    f" (model_params={dict(model_cls.representation_params)!r})."
                    if model_cls.representation_params
                    else " (docs/models.md)."
                )
            )
            raise ValueError(msg)
        features, rep, recipe = np.empty((adata_train.n_obs, 0), dtype=np.float32), None, None
    inputs, _ = build_inputs(
        adata_train,
        features,
        graphs=estimator.graph_specs(),
        needs_grid=model_cls.needs_grid,
        needs_images=estimator.reads_pixels(),
    )

    def shaped(model):
        model.n_features_, model.n_genes_ = int(features.shape[1]), len(chosen)
        model.genes_ = list(chosen)  # models with gene priors (e.g. a Gene Ontology gene graph) read the names
        model.target_scale_ = target["scale"]  # sub-spot models average bins in linear units (expm1 of a log1p layer)
        return model

    shaped(estimator).fit(inputs, targets)
    if estimator.validation_ is None:
        msg = f"Model {model!r} did not record its validation (Model.fit must set `validation_`)."
        raise RuntimeError(msg)
    patients = [p for p in pd.unique(spot_patients(adata_train)) if p is not None]
    predictor = Predictor(
        model=estimator,
        genes=chosen,
        layer=layer,
        target=target,
        use_rep=rep,
        rep_recipe=recipe,
        train_slides=library_ids(adata_train),
        train_patients=[str(p) for p in patients],
        n_train_spots=adata_train.n_obs,
        random_state=random_state,
        timings={"fit_s": time.perf_counter() - started},
        train_mpp=_training_mpp(adata_train),
        train_fingerprints=slide_fingerprints(adata_train) if "spatial" in adata_train.obsm else None,
    )
    groups, kind = validation_groups(inputs, random_state=random_state)  # for the OOD reference and calibration
    if features.shape[1] > 0:  # models that learn their own representation from pixels get no OOD score
        try:
            predictor.novelty = NoveltyReference.from_training(features, groups, kind, random_state)
        except ValueError as error:
            logger.info("fit: no out-of-distribution score: %s", error)
    if n_folds:
        started = time.perf_counter()
        predictor.calibration = calibrate_out_of_fold(
            lambda: shaped(new_estimator()),
            inputs,
            targets,
            groups=groups,
            kind=kind,
            n_folds=n_folds,
            genes=chosen,
            random_state=random_state,
        )
        predictor.timings["calibrate_s"] = time.perf_counter() - started
    logger.info("fit: %s trained on %s (%.1f s)", model, predictor.train_slides, predictor.timings["fit_s"])
    return predictor


def _calibration_folds(calibrate: bool | int) -> int:
    """Folds of training groups for conformal calibration: 0 (none), 3 for ``True``, else the number given."""
    if calibrate is False or calibrate is None:
        return 0
    if calibrate is True:
        return 3
    if isinstance(calibrate, int | np.integer) and calibrate >= 2:
        return int(calibrate)
    msg = f"calibrate must be True/False or a number of folds >= 2, got {calibrate!r}."
    raise ValueError(msg)


def predict(
    predictor: Predictor,
    adata: AnnData,
    *,
    key_added: str | None = None,
    device: str | None = None,
    harmonise: bool = True,
    full_layer: bool | None = None,
    show_progress_bar: bool = False,
    copy: bool = False,
    interval: float | None = None,
    interval_method: str = "adaptive",
) -> AnnData | None:
    """Apply a fitted model to new slides (same as ``predictor.predict(adata, ...)``).

    Writes ``obsm[key_added]`` (spots x genes), ``layers[key_added]`` (when every gene of ``adata`` was
    predicted, or with ``full_layer=True``) and ``uns[key_added]``; see :meth:`stpredict.models.Predictor.predict`. Slides scanned at another resolution
    than the training slides are resampled to it (``harmonise=False``: refused). With ``interval`` (a model
    fitted with ``calibrate=True``), also the bounds ``obsm[f'{key_added}_lower']`` and ``_upper``.

    Examples
    --------
    >>> import stpredict as st
    >>> adata = st.datasets.her2st_crop()
    >>> st.pp.normalize(adata)
    >>> predictor = st.tl.fit(adata[adata.obs.library_id != "C4"].copy(), genes=["ERBB2"])
    >>> files = st.datasets.her2st_crop_files()["C4"]
    >>> image_only = st.io.read_st(None, files["spots"], files["image"], library_id="C4")
    >>> st.tl.predict(predictor, image_only)
    >>> image_only.obsm["pred_ridge"].columns.tolist()
    ['ERBB2']
    """
    if not isinstance(predictor, Predictor):
        msg = f"`predictor` must come from st.tl.fit or st.tl.load_model, got {type(predictor).__name__}."
        raise TypeError(msg)
    return predictor.predict(
        adata,
        key_added=key_added,
        device=device,
        harmonise=harmonise,
        full_layer=full_layer,
        show_progress_bar=show_progress_bar,
        copy=copy,
        interval=interval,
        interval_method=interval_method,
    )


def load_model(path: str | PathLike) -> Predictor:
    """Read a model saved with ``predictor.save(path)``.

    The file holds arrays and JSON only: loading never runs code from it, and a file that is not an
    stpredict model (e.g. a pickle) is refused with an error. Genes and representation width are checked
    when predicting.

    Examples
    --------
    >>> import stpredict as st
    >>> adata = st.datasets.her2st_crop()
    >>> st.pp.normalize(adata)
    >>> st.tl.fit(adata, genes=["ERBB2", "GNAS"]).save("model.stpredict")
    PosixPath('model.stpredict')
    >>> st.tl.load_model("model.stpredict").genes
    ['ERBB2', 'GNAS']
    """
    return Predictor.load(path)
