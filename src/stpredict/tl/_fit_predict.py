"""``st.tl.fit_predict``: fit on training slides and predict test slides in one call."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from anndata import AnnData

from .._leakage import check_no_leakage
from .._validate import check_adata, library_ids
from ._fit import fit


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
    trainer_params: Mapping[str, Any] | None = None,
    allow_overlap: bool = False,
    full_layer: bool | None = None,
    copy: bool = False,
    interval: float | None = None,
) -> AnnData | None:
    """Train a model on slides with expression and predict expression of other slides from their images.

    The same as ``st.tl.fit(adata_train, ...).predict(adata_test, ...)``, refusing test spots that are
    training spots: slides of the same name, spots of the same name, or a test slide with the same image and
    spot coordinates as a training slide (a relabelled copy).

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
        Parameters of the model (e.g. ``{'alphas': [1, 10]}`` for ridge); unknown keys are an error.
    trainer_params
        Passed to ``lightning.Trainer`` for neural models.
    allow_overlap
        Skip the spot-name and same-image checks (not the slide-name check), for users who know their test
        spots differ from the training spots despite sharing names or images.
    full_layer
        Whether to also write the layer aligned with all genes (default: when every gene of ``adata_test``
        was predicted and the layer takes at most 1 GiB); see
        :meth:`~stpredict.models.Predictor.predict`.
    copy
        Return a modified copy of ``adata_test`` instead of writing into it.
    interval
        Also calibrate the model (``st.tl.fit(..., calibrate=True)``: 3 more fits) and write prediction intervals
        of this coverage (e.g. ``0.9``) to ``obsm[f'{key_added}_lower']`` and ``_upper``.

    Returns
    -------
    ``None`` or the modified copy of ``adata_test``, which receives

    - ``obsm[key_added]``: DataFrame spots x predicted genes (always, also for image-only slides);
    - ``layers[key_added]``: predictions aligned with ``var_names`` (when every gene of ``adata_test`` was
      predicted, or with ``full_layer=True``);
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
    overlap = sorted(set(library_ids(adata_train)) & set(library_ids(adata_test)))
    if overlap:
        msg = (
            f"Slide(s) {overlap} are in both adata_train and adata_test. Test slides must never be trained on: "
            "split by slide (or better, by patient: see `st.tl.make_splits`)."
        )
        raise ValueError(msg)
    check_no_leakage(adata_train, adata_test, allow_overlap=allow_overlap)
    predictor = fit(
        adata_train,
        model=model,
        genes=genes,
        layer=layer,
        use_rep=use_rep,
        device=device,
        random_state=random_state,
        model_params=model_params,
        trainer_params=trainer_params,
        calibrate=interval is not None,
    )
    return predictor.predict(adata_test, key_added=key_added, full_layer=full_layer, copy=copy, interval=interval)
