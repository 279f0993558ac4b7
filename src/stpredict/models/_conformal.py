"""Prediction intervals with a coverage guarantee, and how far each gene's prediction can be trusted.

Both come from **out-of-fold** predictions of the training spots: the training groups (patients, else
slides, else spatial blocks, as every validation) are split into folds, the model is refitted without each
fold and predicts it (:mod:`._crossfit`). Test slides play no part.

Intervals are split-conformal (Vovk et al. 2005; Lei et al. 2018), per gene:

- ``constant``: prediction ± the conformal quantile of the absolute out-of-fold residuals;
- ``adaptive`` (locally weighted): residuals are divided by a local scale before taking the quantile, and the
  interval is prediction ± quantile × the local scale of the new spot. The local scale of a spot is the mean
  absolute residual of the calibration spots nearest to it in the space of predicted expression profiles (their
  first principal components): spots predicted alike (a tissue state) share how wrong the model tends to be
  there. A calibration spot's own scale is taken from the spots of the *other* groups, so its score stays out
  of sample.

With exchangeable calibration and test spots the coverage is at least the nominal level (finite-sample, up
to the refitted model's difference from the fold models: the "CV+" approximation of Barber et al. 2021).
A slide unlike the training groups breaks exchangeability: the out-of-distribution score
(:mod:`._novelty`) says when.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

from .._metrics import column_pearson
from ._base import Model
from ._crossfit import group_folds, out_of_fold
from ._inputs import ModelInputs

#: calibration spots kept (a random subset beyond it: still exchangeable, and the model file stays small)
MAX_CALIBRATION_SPOTS = 5000
#: principal components of the predicted profile that place a spot for the local scale
N_COMPONENTS = 20
#: calibration spots averaged into a local scale
N_NEIGHBOURS = 50
#: false discovery rate below which a gene counts as reliably predicted (:func:`gene_reliability_table`)
RELIABILITY_FDR = 0.05
#: interval kinds :meth:`Calibration.interval` makes
INTERVAL_METHODS = ("adaptive", "constant")


def check_interval(level: float, method: str = "adaptive") -> None:
    """Refuse a coverage level outside (0, 1) or an unknown interval method, with what to pass instead."""
    if method not in INTERVAL_METHODS:
        msg = f"interval_method must be one of {INTERVAL_METHODS}, got {method!r}."
        raise ValueError(msg)
    if isinstance(level, bool) or not isinstance(level, int | float | np.number) or not 0 < level < 1:
        msg = f"An interval level (interval=) lies strictly between 0 and 1 (e.g. 0.9), got {level!r}."
        raise ValueError(msg)


def conformal_quantile(scores: np.ndarray, level: float) -> np.ndarray:
    """Per column, split-conformal's quantile: the ``ceil((n + 1) * level)``-th smallest of ``n`` scores.

    ``inf`` when that rank exceeds ``n`` (too few calibration spots for the level): the interval is then
    unbounded, which is the honest answer.

    Examples
    --------
    >>> import numpy as np
    >>> scores = np.arange(1.0, 10.0)[:, None]  # 9 scores: 1, 2, ..., 9
    >>> conformal_quantile(scores, 0.8)  # rank ceil(10 * 0.8) = 8
    array([8.])
    >>> conformal_quantile(scores, 0.95)  # rank 10 > 9
    array([inf])
    """
    check_interval(level)
    n = scores.shape[0]
    rank = int(np.ceil((n + 1) * level))
    if rank > n:
        return np.full(scores.shape[1], np.inf)
    return np.partition(scores, rank - 1, axis=0)[rank - 1]


def _scoring_units(library: np.ndarray, spatial: np.ndarray, random_state: int | None) -> np.ndarray:
    """Units per-gene Pearson is computed in: slides when there are at least 3, else ~4 spatial blocks per slide."""
    if len(np.unique(library)) >= 3:
        return library
    units = np.empty(len(library), dtype=object)
    for slide in np.unique(library):
        rows = library == slide
        n_blocks = int(min(4, rows.sum() // 20))
        labels = (
            KMeans(n_clusters=n_blocks, n_init=4, random_state=random_state).fit_predict(spatial[rows])
            if n_blocks >= 2
            else np.zeros(rows.sum(), dtype=int)
        )
        units[rows] = [f"{slide}/block{label}" for label in labels]
    return units.astype(str)


def gene_reliability_table(
    targets: np.ndarray, predictions: np.ndarray, units: np.ndarray, genes: list[str], alpha: float = RELIABILITY_FDR
) -> pd.DataFrame:
    """Per gene: mean out-of-fold Pearson over units, its 95 % interval, and whether it is above zero.

    A one-sided t-test over units (slides, or spatial blocks) that the expected Pearson exceeds 0, with
    Benjamini-Hochberg control of the false discovery rate at ``alpha`` over genes: ``reliable`` genes are
    those a user can act on; the rest are indistinguishable from no prediction at all.
    """
    per_unit = np.vstack([column_pearson(targets[units == u], predictions[units == u]) for u in np.unique(units)])
    per_unit = np.nan_to_num(per_unit, nan=0.0)  # a gene constant within a unit carries no pattern there
    n_units = per_unit.shape[0]
    mean = per_unit.mean(axis=0)
    if n_units >= 2:
        se = per_unit.std(axis=0, ddof=1) / np.sqrt(n_units)
        with np.errstate(divide="ignore", invalid="ignore"):
            p_value = stats.t.sf(np.divide(mean, se, out=np.full_like(mean, np.inf), where=se > 0), df=n_units - 1)
        p_value = np.where((se == 0) & (mean <= 0), 1.0, p_value)
        half = stats.t.ppf(0.975, df=n_units - 1) * se
    else:
        p_value, half = np.ones_like(mean), np.full_like(mean, np.inf)
    q_value = stats.false_discovery_control(p_value) if len(p_value) else p_value
    return pd.DataFrame(
        {
            "expected_pearson": mean,
            "ci_low": mean - half,
            "ci_high": mean + half,
            "n_units": n_units,
            "p_value": p_value,
            "q_value": q_value,
            "reliable": q_value < alpha,
        },
        index=pd.Index(genes, name="gene"),
    )


@dataclass
class Calibration:
    """Out-of-fold residuals of the training spots, and what turns them into intervals at any level.

    Attributes
    ----------
    residuals
        ``(n_calibration, n_genes)`` absolute out-of-fold residuals ``|y - ŷ|``.
    scores
        The same divided by each spot's local scale (from the other groups' calibration spots).
    places
        ``(n_calibration, n_components)`` where the calibration spots lie in predicted-profile space.
    centre, spread, components
        Standardisation and principal axes that place a spot from its predicted profile.
    reliability
        Per gene expected Pearson and its test against zero (:func:`gene_reliability_table`).
    groups, n_groups, n_folds, n_spots
        The kind and number of training groups held out, the folds, and the out-of-fold spots (all of them,
        before subsampling to :data:`MAX_CALIBRATION_SPOTS`).
    """

    residuals: np.ndarray
    scores: np.ndarray
    places: np.ndarray
    centre: np.ndarray
    spread: np.ndarray
    components: np.ndarray
    reliability: pd.DataFrame
    groups: str
    n_groups: int
    n_folds: int
    n_spots: int

    @classmethod
    def from_out_of_fold(
        cls,
        targets: np.ndarray,
        predictions: np.ndarray,
        groups: np.ndarray,
        kind: str,
        n_folds: int,
        *,
        library: np.ndarray,
        spatial: np.ndarray,
        genes: list[str],
        random_state: int | None = 0,
    ) -> Calibration:
        """Calibrate on out-of-fold ``predictions`` of ``targets`` (rows: training spots with their ``groups``)."""
        reliability = gene_reliability_table(
            targets, predictions, _scoring_units(library, spatial, random_state), genes
        )
        keep = np.arange(len(targets))
        if len(keep) > MAX_CALIBRATION_SPOTS:
            keep = np.sort(np.random.default_rng(random_state).choice(keep, MAX_CALIBRATION_SPOTS, replace=False))
        residuals = np.abs(targets[keep] - predictions[keep]).astype(np.float32)
        centre = predictions[keep].mean(axis=0)
        spread = predictions[keep].std(axis=0)
        spread[spread == 0] = 1.0
        standardised = (predictions[keep] - centre) / spread
        n_components = int(min(N_COMPONENTS, standardised.shape[1], len(keep) - 1))
        components = PCA(n_components=n_components, random_state=random_state).fit(standardised).components_
        places = (standardised @ components.T).astype(np.float32)
        scale = _scale_from_other_groups(places, residuals, groups[keep])
        return cls(
            residuals=residuals,
            scores=(residuals / scale).astype(np.float32),
            places=places,
            centre=centre.astype(np.float64),
            spread=spread.astype(np.float64),
            components=components.astype(np.float64),
            reliability=reliability,
            groups=kind,
            n_groups=len(np.unique(groups)),
            n_folds=int(n_folds),
            n_spots=len(targets),
        )

    def local_scale(self, predictions: np.ndarray) -> np.ndarray:
        """``(n_spots, n_genes)`` mean absolute residual of each spot's nearest calibration spots."""
        places = ((predictions - self.centre) / self.spread) @ self.components.T
        return _floored(_neighbour_residual(self.places, self.residuals, places), self.residuals)

    def interval(
        self, predictions: np.ndarray, level: float, method: str = "adaptive"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds around ``predictions`` that hold the truth with probability ``level``."""
        check_interval(level, method)
        if method == "constant":
            half = np.broadcast_to(conformal_quantile(self.residuals, level), predictions.shape)
        else:
            half = conformal_quantile(self.scores, level) * self.local_scale(predictions)
        return predictions - half, predictions + half

    # --- keeping ------------------------------------------------------------------------------------------

    ARRAYS = ("residuals", "scores", "places", "centre", "spread", "components")

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {name: np.ascontiguousarray(getattr(self, name)) for name in self.ARRAYS}
        for column in ("expected_pearson", "ci_low", "ci_high", "p_value", "q_value"):
            state[f"reliability.{column}"] = self.reliability[column].to_numpy(dtype=np.float64)
        return state

    def metadata(self) -> dict:
        return {
            "groups": self.groups,
            "n_groups": self.n_groups,
            "n_folds": self.n_folds,
            "n_spots": self.n_spots,
            "n_units": int(self.reliability["n_units"].iloc[0]) if len(self.reliability) else 0,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, np.ndarray], metadata: Mapping, genes: list[str]) -> Calibration:
        reliability = pd.DataFrame(
            {c: state[f"reliability.{c}"] for c in ("expected_pearson", "ci_low", "ci_high")},
            index=pd.Index(genes, name="gene"),
        )
        reliability["n_units"] = metadata["n_units"]
        reliability["p_value"] = state["reliability.p_value"]
        reliability["q_value"] = state["reliability.q_value"]
        reliability["reliable"] = reliability["q_value"] < RELIABILITY_FDR
        return cls(
            **{name: np.asarray(state[name]) for name in cls.ARRAYS},
            reliability=reliability,
            **{k: metadata[k] for k in ("groups", "n_groups", "n_folds", "n_spots")},
        )


def _floored(scale: np.ndarray, residuals: np.ndarray) -> np.ndarray:
    """A local scale never below 5 % of the gene's mean absolute residual.

    No zero-width interval from a neighbourhood of exact predictions (e.g. a gene never detected there).
    """
    floor = np.maximum(0.05 * residuals.mean(axis=0), 1e-6)
    return np.maximum(scale, floor)


def _scale_from_other_groups(places: np.ndarray, residuals: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Each calibration spot's local scale from the calibration spots of the other groups only."""
    scale = np.empty_like(residuals)
    names = np.unique(groups)
    for name in names:
        own = groups == name
        others = ~own if len(names) > 1 else np.ones_like(own)  # one group: no out-of-group neighbours exist
        scale[own] = _neighbour_residual(places[others], residuals[others], places[own])
    return _floored(scale, residuals)


def _neighbour_residual(places: np.ndarray, residuals: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Mean absolute residual of each query spot's :data:`N_NEIGHBOURS` nearest ``places`` (fewer if fewer)."""
    k = int(min(N_NEIGHBOURS, len(places)))
    _, index = NearestNeighbors(n_neighbors=k).fit(places).kneighbors(query)
    return residuals[index].mean(axis=1)


def calibrate(
    new_model: Callable[[], Model],
    inputs: ModelInputs,
    targets: np.ndarray,
    *,
    groups: np.ndarray,
    kind: str,
    n_folds: int,
    genes: list[str],
    random_state: int | None = 0,
) -> Calibration:
    """Refit ``new_model()`` without each fold of training groups, predict the fold, calibrate on the residuals.

    ``groups`` and ``kind`` are the training spots' validation groups (:func:`~._validation.validation_groups`),
    split into ``n_folds`` folds of whole groups.
    """
    folds = group_folds(groups, n_folds, random_state)

    def fit_predict(train: ModelInputs, train_targets: np.ndarray, held: ModelInputs) -> list[np.ndarray]:
        return [np.asarray(new_model().fit(train, train_targets).predict(held), dtype=np.float64)]

    (predictions,) = out_of_fold(fit_predict, inputs, targets, folds, "calibration")
    return Calibration.from_out_of_fold(
        targets,
        predictions,
        groups,
        kind,
        len(folds),
        library=np.asarray(inputs.library, dtype=str),
        spatial=inputs.spatial,
        genes=genes,
        random_state=random_state,
    )
