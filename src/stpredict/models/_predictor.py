"""A fitted model you can keep and apply to new slides: predict, save, load.

Saved models are one safetensors file: arrays plus JSON metadata. Nothing in it can run code when
loaded (no pickle), it carries a format version, and a reloaded model predicts bit-identically on CPU.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._constants import derived_key, prediction_key
from .._files import atomic_path
from .._leakage import fingerprint_copies
from .._logging import logger, warn
from .._predictions import write_predictions
from .._recipe import FeatureRecipe, jsonable
from .._validate import check_adata, get_rep, library_ids, require_spatial, spot_libraries
from ._base import Model, Validation, get_model
from ._conformal import Calibration, check_interval
from ._inputs import build_inputs, spot_patients
from ._novelty import NoveltyReference

FORMAT = "stpredict-model"
FORMAT_VERSION = 1
#: predictor attributes written to and read back from a saved model's metadata as they are
RECORDED = (
    "genes",
    "layer",
    "target",
    "use_rep",
    "rep_recipe",
    "train_slides",
    "train_patients",
    "n_train_spots",
    "random_state",
    "timings",
    "versions",
    "created",
    "train_mpp",
    "train_fingerprints",
)
#: a slide whose pixel size differs from the training slides' by more than this is resampled (or refused)
MPP_TOLERANCE = 0.1


def representation_recipe(adata: AnnData, key: str) -> dict[str, Any] | None:
    """How ``obsm[key]`` was computed (a :class:`FeatureRecipe`'s record), or ``None`` if not recorded."""
    recipe = FeatureRecipe.of(adata, key)
    return None if recipe is None else recipe.record()


def _short(params: Mapping[str, Any]) -> str:
    """Parameters for a repr: long lists shown by their ends."""
    shown = {}
    for k, v in params.items():
        shown[k] = f"[{v[0]:g} .. {v[-1]:g}] ({len(v)})" if isinstance(v, list) and len(v) > 4 else v
    return ", ".join(f"{k}={v}" for k, v in shown.items())


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("stpredict", "numpy", "scikit-learn", "torch", "anndata"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:  # pragma: no cover
            continue
    return found


#: genes in PCC(H) when predictions record them (the 50 best on the training slides' validation)
HIGHLY_PREDICTIVE_N = 50


class Predictor:
    """A model fitted by :func:`stpredict.tl.fit`: apply it to new slides, save it, inspect it.

    Attributes
    ----------
    model_name, model
        Registered name and the fitted :class:`~stpredict.models.Model`.
    genes, layer, target
        Predicted genes, the training target layer and its recorded provenance (normalisation/smoothing).
    use_rep, rep_recipe, n_features
        ``obsm`` representation the model reads, how it was computed (``st.pp.image_features`` method,
        patch size, encoder checkpoint digest) and its width.
    train_slides, train_patients, n_train_spots
        What it was trained on.
    validation
        :class:`~stpredict.models.Validation` on held-out training groups.
    random_state, device, versions, timings, created
        Provenance.
    train_mpp
        Microns per pixel of the training slides' images (median), when recorded: patches of new slides
        scanned at another resolution are resampled to it.
    train_fingerprints
        Per training slide, its image identity (file path, digest of the ``hires`` pixels) and up to 256 spot
        centres: :meth:`predict` warns when a slide is a training slide under another name, also after
        :meth:`save`/:meth:`load`.
    calibration
        Out-of-fold residuals on training groups (``st.tl.fit(..., calibrate=True)``), for prediction intervals
        and :meth:`gene_reliability`; ``None`` when not calibrated.
    novelty
        Where the training spots lie in the representation, for the out-of-distribution score :meth:`predict`
        writes; ``None`` for models that read pixels only.
    """

    def __init__(
        self,
        *,
        model: Model,
        genes: list[str],
        layer: str | None,
        target: dict[str, Any],
        use_rep: str | None,
        rep_recipe: dict[str, Any] | None,
        train_slides: list[str],
        train_patients: list[str],
        n_train_spots: int,
        random_state: int | None,
        timings: dict[str, float],
        versions: dict[str, str] | None = None,
        created: str | None = None,
        train_mpp: float | None = None,
        train_fingerprints: dict[str, dict] | None = None,
        calibration: Calibration | None = None,
        novelty: NoveltyReference | None = None,
    ) -> None:
        self.model = model
        self.genes = list(genes)
        self.layer = layer
        self.target = target
        self.use_rep = use_rep
        self.rep_recipe = rep_recipe
        self.train_slides = list(train_slides)
        self.train_patients = list(train_patients)
        self.n_train_spots = int(n_train_spots)
        self.random_state = random_state
        self.timings = dict(timings)
        self.versions = versions or _versions()
        self.created = created or _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        self.train_mpp = float(train_mpp) if train_mpp is not None else None
        self.train_fingerprints = train_fingerprints or {}
        self.calibration = calibration
        self.novelty = novelty

    @property
    def model_name(self) -> str:
        return self.model.name

    @property
    def n_features(self) -> int:
        return int(self.model.n_features_)

    @property
    def validation(self) -> Validation:
        return self.model.validation_

    @property
    def device(self) -> str:
        return self.model.device

    @property
    def gene_pearson(self) -> pd.Series:
        """Validation Pearson per gene (training groups only), for choosing "highly predictive" genes."""
        return pd.Series(self.validation.gene_pearson, index=self.genes, name="validation_pearson")

    def highly_predictive(self, n: int = 50, *, reliable_only: bool = False) -> list[str]:
        """The ``n`` genes best predicted on the training slides' validation (PCC(H)'s genes).

        Chosen without looking at any test slide; pass them to :func:`stpredict.tl.evaluate` as
        ``highly_predictive=``. ``reliable_only=True`` keeps only genes whose out-of-fold Pearson is
        significantly above zero (:meth:`gene_reliability`; needs ``st.tl.fit(..., calibrate=True)``).

        Examples
        --------
        >>> import stpredict as st
        >>> adata = st.datasets.her2st_crop()
        >>> st.pp.normalize(adata)
        >>> predictor = st.tl.fit(adata[adata.obs.library_id != "C4"].copy(), genes=["ERBB2", "GNAS", "FASN"])
        >>> len(predictor.highly_predictive(2))
        2
        """
        ranked = self.gene_pearson.dropna().sort_values(ascending=False).index
        if reliable_only:
            reliable = self.gene_reliability()["reliable"]
            ranked = [g for g in ranked if reliable[g]]
        return list(ranked[:n])

    def gene_reliability(self) -> pd.DataFrame:
        """How far each gene's prediction can be trusted, from out-of-fold predictions of training groups.

        Columns: ``expected_pearson`` (mean Pearson over slides, or spatial blocks when there are fewer than
        3 slides), its 95 % interval ``ci_low``/``ci_high``, ``n_units``, a one-sided t-test ``p_value`` that
        it exceeds 0, its Benjamini-Hochberg ``q_value``, and ``reliable`` (``q_value < 0.05``): genes not
        reliable are predicted no better than a constant, as far as the training slides can tell.

        Examples
        --------
        >>> import stpredict as st
        >>> adata = st.datasets.her2st_crop()
        >>> st.pp.normalize(adata)
        >>> train = adata[adata.obs.library_id != "C4"].copy()
        >>> predictor = st.tl.fit(train, genes=["ERBB2", "GNAS", "FASN"], calibrate=True)
        >>> predictor.gene_reliability().columns.tolist()
        ['expected_pearson', 'ci_low', 'ci_high', 'n_units', 'p_value', 'q_value', 'reliable']
        """
        return self._calibrated("gene_reliability()").reliability.copy()

    def _calibrated(self, what: str) -> Calibration:
        if self.calibration is None:
            msg = (
                f"{what} needs a calibrated model: fit it with st.tl.fit(..., calibrate=True), which refits the "
                "model without each of 3 folds of training groups to measure its out-of-fold errors."
            )
            raise ValueError(msg)
        return self.calibration

    def __repr__(self) -> str:
        recipe = f" ({self.rep_recipe['method']})" if self.rep_recipe else ""
        source = (
            f"obsm[{self.use_rep!r}]{recipe}, {self.n_features} features"
            if self.use_rep is not None
            else "the images (its own encoder)"
        )
        lines = [
            f"Predictor({self.model_name!r}): {len(self.genes)} genes from {source}",
            f"    trained on {len(self.train_slides)} slide(s) {self.train_slides[:6]}"
            f"{' ...' if len(self.train_slides) > 6 else ''}, {self.n_train_spots} spots, target layer {self.layer!r}",
            f"    validation: PCC {self.validation.score:.3f} on training {self.validation.groups}(s) "
            f"{self.validation.held_out[:4]}{' ...' if len(self.validation.held_out) > 4 else ''} kept out of fitting"
            + (f", {self._selected_text()}" if self.validation.selected else ""),
            f"    params: {_short(self.model.params)}",
        ]
        return "\n".join(lines)

    def _selected_text(self) -> str:
        selected = self.validation.selected
        shown = {k: v for k, v in selected.items() if not isinstance(v, Mapping)}
        text = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()]
        if isinstance(selected.get("weights"), Mapping):  # an ensemble: the members it uses
            used = {name: round(float(w), 2) for name, w in selected["weights"].items() if w > 0}
            text.append(f"weights={used}")
        return ", ".join(text)

    # --- applying ---------------------------------------------------------------------------------------------

    def representation(
        self, adata: AnnData, *, show_progress_bar: bool = False, target_mpp: float | None = None
    ) -> np.ndarray:
        """The representation the model reads, for the spots of ``adata``: stored, checked, or computed.

        ``(n_obs, 0)`` for a model that reads pixels only (``use_rep`` is ``None``). Computed representations
        use patches resampled to ``target_mpp`` (see :meth:`target_resolution`).
        """
        if self.use_rep is None:
            return np.empty((adata.n_obs, 0), dtype=np.float32)
        if self.use_rep in adata.obsm:
            stored = representation_recipe(adata, self.use_rep)
            if stored is not None and self.rep_recipe is not None:
                differs = FeatureRecipe.from_record(stored).differences(FeatureRecipe.from_record(self.rep_recipe))
                if differs:
                    detail = ", ".join(f"{k}: slide {a!r} vs model {b!r}" for k, (a, b) in differs.items())
                    msg = (
                        f"adata.obsm[{self.use_rep!r}] was computed differently from the representation this model "
                        f"was trained on ({detail}). Recompute it with st.pp.image_features(adata, "
                        f"**{ {k: self.rep_recipe[k] for k in ('method', 'size', 'unit')} }, key_added={self.use_rep!r}"
                        + (", checkpoint=<the same encoder file>" if self.rep_recipe.get("checkpoint_sha256") else "")
                        + "), or delete it and let predict compute it."
                    )
                    raise ValueError(msg)
            if target_mpp is not None and (stored or {}).get("target_mpp") != target_mpp:
                msg = (
                    f"adata.obsm[{self.use_rep!r}] was computed from the slide's own pixels, but this slide must be "
                    f"seen at the training resolution ({target_mpp:.3f} µm/px). Delete it (predict then computes it "
                    f"resampled), or recompute it with st.pp.image_features(..., target_mpp={target_mpp:.4g})."
                )
                raise ValueError(msg)
            features = get_rep(adata, self.use_rep)
        else:
            features = self._compute_representation(adata, show_progress_bar, target_mpp)
        if features.shape[1] != self.n_features:
            msg = (
                f"adata.obsm[{self.use_rep!r}] has {features.shape[1]} features but the model was trained on "
                f"{self.n_features}. Compute the same representation as for training ({self.rep_recipe or 'not recorded'})."
            )
            raise ValueError(msg)
        return features

    def _compute_representation(
        self, adata: AnnData, show_progress_bar: bool, target_mpp: float | None = None
    ) -> np.ndarray:
        from ..pp._features import compute_image_features, file_sha256

        recipe = self.rep_recipe
        if recipe is None:
            msg = (
                f"adata.obsm has no {self.use_rep!r} and the model does not record how it was computed: compute it "
                "as for the training slides, e.g. st.pp.image_features(adata, ...)."
            )
            raise KeyError(msg)
        checkpoint = recipe.get("checkpoint")
        if recipe.get("checkpoint_sha256"):
            if not (checkpoint and Path(checkpoint).is_file()):
                msg = (
                    f"adata.obsm has no {self.use_rep!r}; computing it needs the encoder checkpoint the model was "
                    f"trained with ({checkpoint!r}, sha256 {recipe['checkpoint_sha256'][:12]}...), which is not found. "
                    f"Compute it yourself: st.pp.image_features(adata, method={recipe['method']!r}, "
                    f"checkpoint=<that file>, key_added={self.use_rep!r})."
                )
                raise FileNotFoundError(msg)
            if file_sha256(checkpoint) != recipe["checkpoint_sha256"]:
                msg = f"The encoder checkpoint {checkpoint!r} changed since the model was trained (different sha256)."
                raise ValueError(msg)
        logger.info("predict: computing obsm[%r] (%s) from the images", self.use_rep, recipe["method"])
        return compute_image_features(
            adata,
            method=recipe["method"],
            size=recipe["size"],
            unit=recipe["unit"],
            checkpoint=checkpoint,
            pretrained=bool(recipe.get("pretrained")),
            device=self.device,
            show_progress_bar=show_progress_bar,
            target_mpp=target_mpp,
            stain_reference=recipe.get("stain_reference"),
            preprocessing=recipe.get("preprocessing"),
            segmentation=recipe.get("segmentation"),
        ).astype(np.float64)

    def target_resolution(self, adata: AnnData, *, harmonise: bool = True) -> float | None:
        """The pixel size (µm/px) to resample ``adata``'s patches to, or ``None`` to use them as they are.

        A model learns from patches of a given physical size and pixel size: a slide scanned at 0.25 µm/px
        shows the same 224 px patch as a quarter of the tissue a 0.69 µm/px training slide showed. When the
        training representation was computed at a fixed ``target_mpp``, that is used; otherwise slides whose
        ``microns_per_pixel`` differs from the training slides' (``train_mpp``) by more than 10 % are
        resampled to ``train_mpp`` (``harmonise=True``) or refused (``harmonise=False``).
        """
        from ..pp._patches import slide_mpp

        recorded = (self.rep_recipe or {}).get("target_mpp")
        if recorded is not None:
            return float(recorded)
        if self.train_mpp is None:
            return None
        resolutions = {library_id: slide_mpp(adata, library_id) for library_id in library_ids(adata)}
        unknown = [k for k, v in resolutions.items() if v is None]
        if unknown:
            warn(
                f"Slide(s) {unknown} record no microns_per_pixel, so their resolution cannot be checked against "
                f"the training slides' {self.train_mpp:.3f} µm/px: predictions are wrong if it differs. Set "
                "adata.uns['spatial'][library_id]['scalefactors']['microns_per_pixel']."
            )
        differing = {
            k: v for k, v in resolutions.items() if v is not None and abs(v / self.train_mpp - 1) > MPP_TOLERANCE
        }
        if not differing:
            return None
        detail = ", ".join(f"{k}: {v:.3f}" for k, v in differing.items())
        if not harmonise:
            msg = (
                f"Slide(s) scanned at another resolution than the training slides ({self.train_mpp:.3f} µm/px): "
                f"{detail} µm/px. Predict with harmonise=True to resample their patches to the training resolution, "
                "or compute the representation yourself at target_mpp= the training resolution."
            )
            raise ValueError(msg)
        logger.info("predict: resampling patches of %s to the training resolution %.3f µm/px", detail, self.train_mpp)
        return self.train_mpp

    def predict(
        self,
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
        """Predict expression of every spot of ``adata`` from its image (expression in ``adata`` is never read).

        Parameters
        ----------
        adata
            Slides with spot positions and images; measured genes are optional.
        key_added
            Output key, default ``f'pred_{model}'``.
        device
            Override the device the model runs on (``'cpu'``, ``'cuda'`` ...).
        harmonise
            Resample patches of slides scanned at another resolution than the training slides to the
            training resolution (``False``: refuse such slides). See :meth:`target_resolution`.
        full_layer
            Also write ``layers[key_added]`` aligned with all of ``adata``'s genes: ``None`` (default) when
            every gene of ``adata`` was predicted (no all-NaN column) and it takes at most 1 GiB (n_spots x
            n_genes x 4 bytes), ``True`` always (NaN for genes not predicted), ``False`` never. Predictions
            are always in ``obsm[key_added]``, which every analysis reads;
            :func:`~stpredict.tl.prediction_adata` makes an AnnData of them for scanpy at any size.
        show_progress_bar
            Progress bar while computing a missing representation.
        copy
            Return a modified copy instead of writing into ``adata``.
        interval
            Also write bounds that hold the measured value with this probability (e.g. ``0.9``), per spot and
            gene: split-conformal intervals from the training groups' out-of-fold errors (needs
            ``st.tl.fit(..., calibrate=True)``). Valid for slides like the training slides: see the
            out-of-distribution score below.
        interval_method
            ``'adaptive'`` (width follows how wrong the model was on training spots predicted alike) or
            ``'constant'`` (one width per gene).

        Returns
        -------
        ``None`` or the modified copy, with

        - ``obsm[key_added]``: DataFrame spots x predicted genes (also for image-only slides);
        - ``layers[key_added]``: predictions aligned with ``var_names`` (when every gene of ``adata`` was
          predicted, or with ``full_layer=True``);
        - ``obsp[f'{key_added}_{graph}_connectivities']``: spatial graphs the model used, if any;
        - ``obsm[f'{key_added}_{suffix}']``: what the model adds beside its predictions, if anything (SpaHGC:
          ``_references``, the training spots each spot retrieved);
        - ``obsm[f'{key_added}_lower']``, ``obsm[f'{key_added}_upper']``: interval bounds, same columns (with
          ``interval``);
        - ``obs[f'{key_added}_ood']``: the spot's out-of-distribution score (above 1: farther from the training
          images than 95 % of a held-out training slide's spots), for models that read a representation; a
          :class:`~stpredict.StPredictWarning` names slides whose median score exceeds 1;
        - ``uns[key_added]``: model, genes, parameters, training slides, validation, timings, the interval
          settings and each slide's OOD score.

        Examples
        --------
        >>> import stpredict as st
        >>> adata = st.datasets.her2st_crop()
        >>> st.pp.normalize(adata)
        >>> train, test = adata[adata.obs.library_id != "C4"].copy(), adata[adata.obs.library_id == "C4"].copy()
        >>> predictor = st.tl.fit(train, model="ridge_spatial", genes=["ERBB2", "GNAS"])
        >>> predictor.predict(test)
        >>> test.obsm["pred_ridge_spatial"].shape, "pred_ridge_spatial_grid_connectivities" in test.obsp
        ((70, 2), True)
        """
        from .._device import resolve_device

        check_adata(adata)
        slides = library_ids(adata)
        reused = sorted(set(slides) & set(self.train_slides))
        if reused:
            warn(f"Slide(s) {reused} were used to train this model: their predictions are in-sample, not a test.")
        copies = {k: v for k, v in self._training_copies(adata).items() if k not in reused}
        if copies:
            warn(
                f"Slide(s) {copies} (slide: training slide) show a training slide's image with its spots at the same "
                "positions: they were used to train this model under another name, so their predictions are "
                "in-sample, not a test."
            )
        if adata.n_vars > 0 and not adata.var_names.isin(self.genes).any():
            msg = (
                f"adata shares none of the {len(self.genes)} predicted genes (e.g. {self.genes[:3]} vs "
                f"{adata.var_names[:3].tolist()}). Check gene naming (symbols vs Ensembl ids), or predict on an "
                "image-only AnnData."
            )
            raise ValueError(msg)
        if interval is not None:
            self._calibrated("predict(..., interval=...)")
            check_interval(interval, interval_method)  # before the prediction's work, not after
        if device is not None:
            self.model.device = resolve_device(device, type(self.model).uses_device)
        started = time.perf_counter()
        target_mpp = self.target_resolution(adata, harmonise=harmonise)
        inputs, graphs = self.model_inputs(adata, show_progress_bar=show_progress_bar, target_mpp=target_mpp)
        prediction = np.asarray(self.model.predict(inputs), dtype=np.float32)
        expected = (adata.n_obs, len(self.genes))
        if prediction.shape != expected:
            msg = f"Model {self.model_name!r} returned shape {prediction.shape}, expected {expected}."
            raise RuntimeError(msg)
        elapsed = time.perf_counter() - started
        key_added = key_added or prediction_key(self.model_name)
        adata = adata.copy() if copy else adata
        self._write(adata, prediction, graphs, key_added, elapsed, full_layer)
        if interval is not None:
            self._write_interval(adata, prediction, key_added, interval, interval_method)
        if self.novelty is not None and inputs.features.shape[1] == self.n_features > 0:
            self._write_novelty(adata, inputs.features, key_added)
        logger.info(
            "predict: %s (trained on %s) predicted %d gene(s) for %s in %.1f s",
            self.model_name,
            self.train_slides,
            len(self.genes),
            slides,
            elapsed,
        )
        return adata if copy else None

    def _write_interval(
        self, adata: AnnData, prediction: np.ndarray, key_added: str, level: float, method: str
    ) -> None:
        lower, upper = self.calibration.interval(prediction.astype(np.float64), level, method)
        for side, values in (("lower", lower), ("upper", upper)):
            adata.obsm[derived_key(key_added, side)] = pd.DataFrame(
                values.astype(np.float32), index=adata.obs_names, columns=self.genes
            )
        adata.uns[key_added]["interval"] = {
            "level": float(level),
            "method": method,
            "calibration": self.calibration.metadata(),
        }
        new_patients = sorted({str(p) for p in spot_patients(adata) if p is not None} - set(self.train_patients))
        if self.calibration.groups != "patient" and new_patients:
            warn(
                f"The {level:.0%} intervals were calibrated on held-out {self.calibration.groups}s of the training "
                f"patient(s) {self.train_patients}, but patient(s) {new_patients} are new: a patient's expression can "
                "differ in level from the training patients' in ways no image shows (batch, sequencing depth), and "
                "the intervals may then hold the measured values less often than stated. Train (and calibrate) on "
                "slides of several patients for intervals that carry over to new patients."
            )

    def _write_novelty(self, adata: AnnData, features: np.ndarray, key_added: str) -> None:
        scores = self.novelty.spot_scores(features)
        adata.obs[derived_key(key_added, "ood")] = scores.astype(np.float32)
        libraries = spot_libraries(adata)
        per_slide = {str(s): float(np.median(scores[libraries == s])) for s in pd.unique(libraries)}
        adata.uns[key_added]["ood"] = {"slides": per_slide, "threshold": 1.0, "groups": self.novelty.groups}
        unusual = {s: round(v, 2) for s, v in per_slide.items() if v > 1}
        if unusual:
            warn(
                f"Slide(s) {unusual} (median out-of-distribution score) look unlike the training slides: most of "
                f"their spots lie farther from the training images than 95 % of a held-out training "
                f"{self.novelty.groups}'s spots, so predictions (and intervals) may be off. Check the scan "
                "resolution (target_mpp), try stain normalisation (st.pp.normalize_stain), or train on slides "
                f"like these. Per-spot scores: adata.obs[{key_added + '_ood'!r}]."
            )

    def _training_copies(self, adata: AnnData) -> dict[str, str]:
        """Slides of ``adata`` that are training slides under another name (see ``train_fingerprints``)."""
        if not self.train_fingerprints or "spatial" not in adata.obsm:
            return {}
        return fingerprint_copies(adata, self.train_fingerprints)

    def model_inputs(self, adata: AnnData, *, show_progress_bar: bool = False, target_mpp: float | None = None):
        """What the model reads of ``adata`` (representation, positions, graphs, images), and the graphs built.

        Returns ``(ModelInputs, {name: graph})``, as :meth:`predict` hands them to the model.

        Examples
        --------
        >>> import stpredict as st
        >>> adata = st.datasets.her2st_crop()
        >>> st.pp.normalize(adata)
        >>> predictor = st.tl.fit(adata[adata.obs.library_id != "C4"].copy(), model="ridge_spatial", genes=["ERBB2"])
        >>> inputs, graphs = predictor.model_inputs(adata[adata.obs.library_id == "C4"].copy())
        >>> inputs.features.shape, list(graphs)
        ((70, 44), ['grid'])
        """
        features = self.representation(adata, show_progress_bar=show_progress_bar, target_mpp=target_mpp)
        return build_inputs(
            adata,
            features,
            graphs=self.model.graph_specs(),
            needs_grid=type(self.model).needs_grid,
            needs_images=self.model.reads_pixels(),
            target_mpp=target_mpp,
        )

    def _write(
        self, adata: AnnData, prediction: np.ndarray, graphs, key_added: str, elapsed: float, full_layer: bool | None
    ) -> None:
        frame = pd.DataFrame(prediction, index=adata.obs_names, columns=self.genes)
        write_predictions(adata, key_added, frame, full_layer)
        for name, graph in graphs.items():
            graph.write(adata, derived_key(key_added, name), require_spatial(adata))
        for suffix, value in self.model.prediction_annotations().get("obsm", {}).items():
            if isinstance(value, pd.DataFrame):
                value = value.set_axis(adata.obs_names, axis=0)
            adata.obsm[derived_key(key_added, suffix)] = value
        adata.uns[key_added] = {
            "model": self.model_name,
            "genes": self.genes,
            "layer": self.layer,
            "target": self.target,
            "use_rep": self.use_rep,
            "params": self.model.params,
            "train_slides": self.train_slides,
            "validation": self.validation.to_dict(),
            # PCC(H)'s genes, chosen on the training slides' validation: st.tl.evaluate reads them from here
            "highly_predictive": self.highly_predictive(HIGHLY_PREDICTIVE_N),
            "device": self.device,
            "random_state": self.random_state,
            "time_fit_s": self.timings.get("fit_s"),
            "time_predict_s": elapsed,
        }

    # --- keeping ----------------------------------------------------------------------------------------------

    def _metadata(self) -> dict[str, Any]:
        return jsonable(
            {
                "model": self.model_name,
                "params": self.model.params,
                "n_features": self.n_features,
                "n_genes": len(self.genes),
                "device": self.device,
                **{name: getattr(self, name) for name in RECORDED},
            }
        ) | {"validation": self.validation.to_json()}

    def save(self, path: str | PathLike) -> Path:
        """Write the fitted model to ``path`` (safetensors: arrays + JSON metadata; no pickled objects).

        Examples
        --------
        >>> import stpredict as st
        >>> adata = st.datasets.her2st_crop()
        >>> st.pp.normalize(adata)
        >>> train, test = adata[adata.obs.library_id != "C4"].copy(), adata[adata.obs.library_id == "C4"].copy()
        >>> predictor = st.tl.fit(train, genes=["ERBB2", "GNAS"])
        >>> path = predictor.save("ridge.stpredict")
        >>> st.tl.load_model(path).predict(test)
        >>> test.obsm["pred_ridge"].shape
        (70, 2)
        """
        from safetensors.numpy import save_file

        path = Path(path)
        arrays = {f"model/{k}": np.ascontiguousarray(v) for k, v in self.model.state_dict().items()}
        meta = self._metadata()
        for name in ("calibration", "novelty"):
            part = getattr(self, name)
            if part is not None:
                arrays.update({f"{name}/{k}": v for k, v in part.state_dict().items()})
                meta[name] = jsonable(part.metadata())
        metadata = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "meta": json.dumps(meta)}
        with atomic_path(path) as tmp:  # an interrupted save never leaves a truncated model file
            save_file(arrays, str(tmp), metadata=metadata)
        logger.info("saved %s model to %s", self.model_name, path)
        return path

    @classmethod
    def load(cls, path: str | PathLike) -> Predictor:
        """Read a model written by :meth:`save` (see :func:`stpredict.tl.load_model`)."""
        metadata, arrays = _read_model_file(Path(path))
        meta = json.loads(metadata["meta"])
        model_cls = get_model(meta["model"])
        model = model_cls(random_state=meta["random_state"], device="cpu", **meta["params"])
        model.n_features_, model.n_genes_ = int(meta["n_features"]), int(meta["n_genes"])
        model.genes_ = list(meta["genes"])
        model.target_scale_ = (meta.get("target") or {}).get("scale")
        model.load_state_dict({k.removeprefix("model/"): v for k, v in arrays.items() if k.startswith("model/")})
        model.validation_ = Validation.from_json(meta["validation"])
        part = lambda name: {k.removeprefix(f"{name}/"): v for k, v in arrays.items() if k.startswith(f"{name}/")}  # noqa: E731
        calibration = (
            Calibration.from_state(part("calibration"), meta["calibration"], list(meta["genes"]))
            if "calibration" in meta
            else None
        )
        novelty = NoveltyReference.from_state(part("novelty"), meta["novelty"]) if "novelty" in meta else None
        return cls(
            model=model,
            calibration=calibration,
            novelty=novelty,
            **{name: meta[name] for name in RECORDED if name in meta},
        )


def _read_model_file(path: Path) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """Metadata and arrays of a saved model, refusing anything that is not one (never unpickling)."""
    from safetensors import safe_open

    if not path.is_file():
        msg = f"No model file at {str(path)!r}."
        raise FileNotFoundError(msg)
    try:
        with safe_open(str(path), framework="np") as handle:
            metadata = handle.metadata() or {}
            arrays = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118 - safe_open is not a dict
    except Exception as err:  # noqa: BLE001 - any parse failure means "not our format"
        msg = (
            f"{str(path)!r} is not a model saved by stpredict's Predictor.save (a safetensors file): {err}. "
            "stpredict never unpickles files, so models saved with pickle/torch.save/joblib cannot be loaded."
        )
        raise ValueError(msg) from None
    if metadata.get("format") != FORMAT:
        msg = f"{str(path)!r} is a safetensors file but not an stpredict model (format {metadata.get('format')!r})."
        raise ValueError(msg)
    version = metadata.get("format_version", "")
    if not version.isdigit():
        msg = f"{str(path)!r} has an unknown model format version {version!r}."
        raise ValueError(msg)
    if int(version) > FORMAT_VERSION:
        msg = (
            f"{str(path)!r} was written in model format {version}, newer than this stpredict reads "
            f"({FORMAT_VERSION}); upgrade stpredict."
        )
        raise ValueError(msg)
    return metadata, arrays
