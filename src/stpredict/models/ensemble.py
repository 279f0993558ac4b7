"""A model that combines registered models, weighted by how they predict held-out training slides.

``st.tl.fit(adata, model='ensemble')`` is the "give me the best you have" model. The training groups
(patients, else slides, else spatial blocks) are split into folds; every member is fitted without each fold
and predicts it, so every training spot gets an out-of-fold prediction from every member, and the members'
non-negative weights are chosen on all of them (cross-fitted stacking, the "super learner"). Whether the
blend beats its best single member is itself checked by cross-validation over the same folds (weights chosen
without each fold, scored on it); if it does not, that member alone is used. The members with a weight are
refitted on all training slides and the prediction is the weighted mean of theirs. Test slides play no part:
which members are used is decided inside the training slides of every fit, never by a hand-written list.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
from scipy.optimize import nnls

from .._logging import logger
from .._metrics import mean_pearson, per_slide_pearson
from ._base import Model, Validation, get_model
from ._crossfit import group_folds, out_of_fold
from ._inputs import ModelInputs
from ._params import Params
from ._validation import held_out_mask, scoring_units, validation_groups

#: the baselines and seed methods that read only the ``obsm`` representation (no pixels): fast on any slide
DEFAULT_MEMBERS = ("ridge", "ridge_spatial", "mlp", "merge", "spahgc")
#: named candidate lists, defined by what the models read (not by any test score): ``'fast'`` (the default) and
#: ``'best'``, every seed method and baseline, the pixel-reading seed methods (M2TGLGO, TRIPLEX, SEPAL) included;
#: each fit keeps the candidates its inner cross-validation gives a weight
MEMBER_PRESETS = {"fast": DEFAULT_MEMBERS, "best": (*DEFAULT_MEMBERS, "m2tglgo", "triplex", "sepal")}


@dataclass(frozen=True)
class EnsembleParams(Params):
    """The members (names or a preset), their own ``model_params``, and how their weights are chosen."""

    models: tuple[str, ...] = DEFAULT_MEMBERS  # or a name of MEMBER_PRESETS, resolved on construction
    member_params: dict[str, Any] = field(default_factory=dict)
    weights: Literal["stacking", "equal"] = "stacking"
    stacking_folds: int = 3

    def __post_init__(self) -> None:
        if isinstance(self.models, str):
            if self.models not in MEMBER_PRESETS:
                msg = f"ensemble: models={self.models!r}; name members or a preset of {sorted(MEMBER_PRESETS)}."
                raise ValueError(msg)
            object.__setattr__(self, "models", MEMBER_PRESETS[self.models])
        super().__post_init__()
        members = list(self.models)
        if not members or len(set(members)) != len(members):
            msg = f"ensemble: `models` must name distinct registered models, got {members!r}."
            raise ValueError(msg)
        if "ensemble" in members:
            msg = "ensemble: an ensemble cannot contain itself; list other models in `models`."
            raise ValueError(msg)
        unknown = sorted(set(self.member_params) - set(members))
        if unknown:
            msg = f"ensemble: member_params for {unknown}, which are not in models={members!r}."
            raise ValueError(msg)
        folds = self.stacking_folds
        if isinstance(folds, bool) or not isinstance(folds, int | np.integer) or folds < 1:
            msg = f"ensemble: stacking_folds must be a positive integer, got {folds!r}."
            raise ValueError(msg)


def unit_standardised(values: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """Each column centred and scaled to unit variance within every unit (slide): what PCC(M) sees."""
    out = np.zeros_like(values, dtype=np.float64)
    for name in np.unique(unit):
        rows = unit == name
        block = values[rows] - values[rows].mean(axis=0)
        scale = block.std(axis=0)
        out[rows] = np.divide(block, scale, out=np.zeros_like(block), where=scale > 0)
    return out


def stacking_weights(predictions: Sequence[np.ndarray], targets: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """Non-negative weights summing to 1 that best fit held-out ``targets`` from the members' predictions.

    Least squares on values standardised per slide and gene, so that a weight rewards a member for the
    spot-to-spot pattern it gets right (what PCC(M) scores), not for its per-slide level.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = rng.normal(size=(200, 3))
    >>> good, noise = y + 0.3 * rng.normal(size=y.shape), rng.normal(size=y.shape)
    >>> stacking_weights([good, noise], y, np.zeros(200)).round(2)
    array([1., 0.])
    """
    y = unit_standardised(targets, unit).ravel()
    design = np.column_stack([unit_standardised(p, unit).ravel() for p in predictions])
    weights, _ = nnls(design, y)
    if weights.sum() <= 0:  # no member correlates with the held-out targets: fall back to equal weights
        return np.full(len(predictions), 1 / len(predictions))
    return weights / weights.sum()


def cross_validated_blend(
    predictions: Sequence[np.ndarray], targets: np.ndarray, unit: np.ndarray, fold: np.ndarray
) -> np.ndarray:
    """The stacked blend of every spot with weights chosen on the other folds (``fold`` numbers the spots)."""
    blended = np.empty_like(targets, dtype=np.float64)
    for name in np.unique(fold):
        rows = fold == name
        inner = stacking_weights([p[~rows] for p in predictions], targets[~rows], unit[~rows])
        blended[rows] = sum(w * p[rows] for w, p in zip(inner, predictions, strict=True))
    return blended


def choose_blend(member_scores: Sequence[float], blend_score: float | None) -> int | None:
    """The member to use alone (its index), or ``None`` for the stacked blend.

    ``member_scores``: each member's own out-of-fold PCC(M); ``blend_score``: the blend's, with weights chosen
    without each inner fold (:func:`cross_validated_blend`), or ``None`` when it cannot be checked (one fold:
    the blend is used). The higher wins, a tie going to the single member (simpler).

    Examples
    --------
    >>> choose_blend([0.30, 0.25], blend_score=0.34), choose_blend([0.30, 0.25], blend_score=0.29)
    (None, 0)
    >>> choose_blend([0.30, 0.25], blend_score=None) is None
    True
    """
    if blend_score is None:
        return None
    best = int(np.argmax(member_scores))
    return best if member_scores[best] >= blend_score else None


class EnsembleModel(Model):
    """A weighted mean of registered models' predictions, weights chosen on held-out training groups.

    Parameters (``model_params``): ``models``, the candidate members, or a preset: ``'fast'`` (default:
    ridge, ridge_spatial, mlp, merge and spahgc, which read only the representation) or ``'best'`` (those and
    the seed methods that read pixels, M2TGLGO, TRIPLEX and SEPAL: several times the CPU time of ``'fast'``);
    ``member_params``, ``{member: model_params}``; ``weights``: ``'stacking'`` (non-negative least squares on
    the held-out groups' per-slide standardised values, see :func:`stacking_weights`, then the blend checked
    against each member alone by cross-validation, :func:`choose_blend`) or ``'equal'``; ``stacking_folds``
    (default 3), how many folds of whole training groups give the out-of-fold predictions the weights are
    chosen on (``1``: a single held-out group of about a fifth of the groups, the cheapest and noisiest choice).

    Every candidate is fitted ``stacking_folds`` times without a fold, and the members given a weight once more
    on all training spots. Its ``validation`` is the chosen answer's out-of-fold Pearson: the blend's with
    cross-validated weights, or the chosen member's own. ``validation.selected`` records the weights, the
    choice (``'stacking'`` or the member used alone) and every candidate's out-of-fold score.

    Examples
    --------
    >>> import stpredict as st
    >>> adata = st.datasets.her2st_crop()
    >>> st.pp.normalize(adata)
    >>> train = adata[adata.obs.library_id != "C4"].copy()
    >>> predictor = st.tl.fit(train, model="ensemble", genes=["ERBB2", "GNAS", "FASN"],
    ...                       model_params={"models": ["ridge", "ridge_spatial"]}, device="cpu")
    >>> weights = predictor.validation.selected["weights"]
    >>> sorted(weights), round(sum(weights.values()), 6)
    (['ridge', 'ridge_spatial'], 1.0)
    """

    Net = EnsembleParams
    uses_device = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        members = self.net_params.models
        self.members_ = [self._new_member(name) for name in members]  # checks every member's parameters now
        self.weights_ = np.full(len(members), 1 / len(members))
        self._graph_names = self._plan_graphs()

    # --- what the members need ------------------------------------------------------------------------

    def _new_member(self, name: str) -> Model:
        member = get_model(name)(
            random_state=self.random_state,
            device=self.device,
            trainer_params=self.trainer_params,
            show_progress_bar=self.show_progress_bar,
            **dict(self.net_params.member_params.get(name, {})),
        )
        for attribute in ("n_features_", "n_genes_", "genes_", "target_scale_"):
            setattr(member, attribute, getattr(self, attribute, None))
        return member

    def _plan_graphs(self) -> list[dict[str, str]]:
        """Per member, its graph names -> the ensemble's (one graph per distinct spec, shared by members)."""
        self._graphs: dict[str, Mapping[str, Any]] = {}
        plan = []
        for member in self.members_:
            names = {}
            for name, spec in member.graph_specs().items():
                shared = next((k for k, v in self._graphs.items() if dict(v) == dict(spec)), None)
                if shared is None:
                    shared = name if name not in self._graphs else f"{member.name}_{name}"
                    self._graphs[shared] = spec
                names[name] = shared
            plan.append(names)
        return plan

    def graph_specs(self) -> Mapping[str, Mapping[str, Any]]:
        return dict(self._graphs)

    def reads_representation(self) -> bool:
        return any(m.reads_representation() for m in self.members_)

    def reads_pixels(self) -> bool:
        return any(m.reads_pixels() for m in self.members_)

    def _member_inputs(self, inputs: ModelInputs, index: int) -> ModelInputs:
        graphs = {name: inputs.graphs[shared] for name, shared in self._graph_names[index].items()}
        return replace(inputs, graphs=graphs)

    # --- fit / predict ----------------------------------------------------------------------------------

    def _fit_members(self, inputs: ModelInputs, targets: np.ndarray, used: Sequence[bool] | None = None) -> list[Model]:
        """Every member (or those ``used``) fitted on ``inputs``; the others stay unfitted (weight 0, never run)."""
        fitted = []
        for index, name in enumerate(self.net_params.models):
            member = self._new_member(name)
            if used is None or used[index]:
                member.fit(self._member_inputs(inputs, index), targets)
            fitted.append(member)
        return fitted

    def _held_out_folds(self, inputs: ModelInputs) -> tuple[list[np.ndarray], np.ndarray, str]:
        """The folds whose out-of-fold predictions choose the weights, every spot's group, the group kind."""
        if self.net_params.stacking_folds == 1:
            held, _, groups, kind = held_out_mask(inputs, random_state=self.random_state)
            return [held], groups, kind
        groups, kind = validation_groups(inputs, random_state=self.random_state)
        return group_folds(groups, self.net_params.stacking_folds, self.random_state), groups, kind

    def _fit_predict(self, train: ModelInputs, targets: np.ndarray, held: ModelInputs) -> list[np.ndarray]:
        fitted = self._fit_members(train, targets)
        return [member.predict(self._member_inputs(held, index)) for index, member in enumerate(fitted)]

    def fit(self, inputs: ModelInputs, targets: np.ndarray) -> EnsembleModel:
        self._record_shapes(inputs, targets)
        folds, groups, kind = self._held_out_folds(inputs)
        held = np.logical_or.reduce(folds)
        unit = scoring_units(inputs, groups, kind)[held]
        # the inner folds that check the blend: the stacking folds, or the held-out group's slides when one
        fold = np.argmax(folds, axis=0)[held] if len(folds) > 1 else unit
        names = list(self.net_params.models)
        predictions = [p[held] for p in out_of_fold(self._fit_predict, inputs, targets, folds, "ensemble")]
        member_scores = [mean_pearson(targets[held], p, unit) for p in predictions]
        choice, chosen = "equal", None
        if self.net_params.weights == "stacking":
            self.weights_ = stacking_weights(predictions, targets[held], unit)
            # what the validation scores: the blend with its weights chosen without each inner fold (not on the
            # very values it is scored on); with one inner fold it cannot be checked, and is used
            if len(np.unique(fold)) > 1:
                chosen = cross_validated_blend(predictions, targets[held], unit, fold)
            blend_score = None if chosen is None else mean_pearson(targets[held], chosen, unit)
            alone = choose_blend(member_scores, blend_score)
            choice = "stacking" if alone is None else names[alone]
            if alone is not None:
                self.weights_, chosen = np.eye(len(names))[alone], predictions[alone]
        if chosen is None:
            chosen = sum(w * p for w, p in zip(self.weights_, predictions, strict=True))
        gene_pearson = per_slide_pearson(targets[held], chosen, unit)
        self.validation_ = Validation(
            groups=kind,
            held_out=sorted(np.unique(groups[held]).tolist()),
            score=float(np.nan_to_num(gene_pearson, nan=0.0).mean()),
            gene_pearson=gene_pearson,
            selected={
                "choice": choice,
                "weights": dict(zip(names, map(float, self.weights_), strict=True)),
                "member_scores": dict(zip(names, member_scores, strict=True)),
                "stacking_folds": len(folds),
            },
        )
        logger.info(
            "ensemble: %s; refitting the members with a weight on all training spots", self.validation_.selected
        )
        self.members_ = self._fit_members(inputs, targets, used=self.weights_ > 0)
        return self

    def predict(self, inputs: ModelInputs) -> np.ndarray:
        out = np.zeros((inputs.n_spots, self.n_genes_), dtype=np.float64)
        for index, (weight, member) in enumerate(zip(self.weights_, self.members_, strict=True)):
            member.device = self.device  # the predictor may have moved the ensemble to another device
            if weight > 0:  # members stacking gave no weight are not run
                out += weight * member.predict(self._member_inputs(inputs, index))
        return out.astype(np.float32)

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {"weights": np.asarray(self.weights_, dtype=np.float64)}
        for index, member in enumerate(self.members_):
            if self.weights_[index] > 0:
                state.update({f"member{index}.{k}": v for k, v in member.state_dict().items()})
        return state

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        self.weights_ = np.asarray(state["weights"], dtype=np.float64)
        self.members_ = [self._new_member(name) for name in self.net_params.models]
        for index, member in enumerate(self.members_):
            prefix = f"member{index}."
            if self.weights_[index] > 0:  # members without a weight were never fitted
                member.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
