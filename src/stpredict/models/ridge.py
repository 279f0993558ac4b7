"""Ridge regression on image features, and its spatial-context variant: the baselines every method must beat.

- ``'ridge'``: standardised features (optionally PCA) -> ridge, one penalty for all genes (HEST-Benchmark style).
- ``'ridge_spatial'``: the same on each spot's features concatenated with the mean features of its grid
  neighbours (8 on legacy ST, 6 on Visium), so graph models are compared with a model that already sees
  spatial context.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from sklearn.decomposition import PCA
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .._logging import logger
from .._metrics import per_slide_pearson
from ..pp._graph import SpotGraph, spot_graph_spec
from ._base import Model, Validation
from ._inputs import ModelInputs
from ._params import Params
from ._validation import scoring_units, validation_groups

DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-1, 5, 13))


#: spots per block when predicting (bounds the float64 temporaries)
PREDICT_ROWS = 32768


@dataclass(frozen=True)
class RidgeParams(Params):
    """The penalty grid and the optional PCA; the penalty is chosen on held-out training groups."""

    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    n_pcs: int | None = None  # PCA components before the ridge (None: no PCA)


@dataclass(frozen=True)
class SpatialRidgeParams(RidgeParams):
    """Ridge's, and the graph whose neighbours' mean features are appended."""

    spot_graph: SpotGraph = "grid"
    n_neighbours: int = 6  # for spot_graph='knn'


class RidgeModel(Model):
    """Standardised features (optionally PCA) -> ridge regression, one penalty for all genes.

    The penalty is chosen among ``alphas`` by the mean per-gene Pearson of out-of-group predictions on the
    training slides (groups: patients, else slides, else spatial blocks), scored slide by slide as PCC(M);
    then the model is refit on all training spots.

    Parameters (``model_params``): ``alphas`` (penalty grid), ``n_pcs`` (PCA components, ``None``: no PCA).
    """

    Net = RidgeParams

    def design(self, inputs: ModelInputs) -> np.ndarray:
        """The regression inputs of every spot."""
        return inputs.features.astype(np.float64)

    def _pipeline(self, alpha: float, n_features: int):
        steps = [StandardScaler()]
        n_pcs = self.net_params.n_pcs
        if n_pcs is not None and n_pcs < n_features:
            steps.append(PCA(n_components=n_pcs, random_state=self.random_state))
        steps.append(Ridge(alpha=alpha))
        return make_pipeline(*steps)

    def fit(self, inputs: ModelInputs, targets: np.ndarray) -> RidgeModel:
        self._record_shapes(inputs, targets)
        x, y = self.design(inputs), np.asarray(targets, dtype=np.float64)
        groups, kind = validation_groups(inputs, random_state=self.random_state)
        alphas = [float(a) for a in self.net_params.alphas]
        oof = {a: np.empty_like(y) for a in alphas}
        for group in np.unique(groups):
            held = groups == group
            for alpha in alphas:
                pipe = self._pipeline(alpha, x.shape[1]).fit(x[~held], y[~held])
                oof[alpha][held] = pipe.predict(x[held]).reshape(held.sum(), -1)
        units = scoring_units(inputs, groups, kind)
        gene_scores = {a: per_slide_pearson(y, oof[a], units) for a in alphas}
        mean_scores = {a: float(np.nan_to_num(s, nan=0.0).mean()) for a, s in gene_scores.items()}
        best = max(alphas, key=lambda a: mean_scores[a])
        if best in (min(alphas), max(alphas)) and len(alphas) > 1:
            logger.info(
                "%s: the chosen alpha %g is at the edge of the grid; consider widening `alphas`", self.name, best
            )
        self._store(self._pipeline(best, x.shape[1]).fit(x, y))
        self.validation_ = Validation(
            groups=kind,
            held_out=sorted(map(str, np.unique(groups))),
            score=mean_scores[best],
            gene_pearson=gene_scores[best],
            selected={"alpha": best, "score_by_alpha": {str(a): s for a, s in mean_scores.items()}},
        )
        logger.info(
            "%s: alpha=%g chosen on %d held-out %s(s), validation PCC %.3f",
            self.name,
            best,
            len(np.unique(groups)),
            kind,
            mean_scores[best],
        )
        return self

    def _store(self, pipeline) -> None:
        """Keep the fitted pipeline as arrays: prediction then needs no pickled scikit-learn objects."""
        scaler, ridge = pipeline[0], pipeline[-1]
        self.state_ = {
            "scaler_mean": scaler.mean_,
            "scaler_scale": scaler.scale_,
            "coef": np.atleast_2d(ridge.coef_),
            "intercept": np.atleast_1d(ridge.intercept_),
        }
        if len(pipeline) == 3:
            pca = pipeline[1]
            self.state_.update({"pca_mean": pca.mean_, "pca_components": pca.components_})

    def predict(self, inputs: ModelInputs) -> np.ndarray:
        s = self.state_
        design = self.design(inputs)
        out = np.empty((len(design), s["coef"].shape[0]), dtype=np.float32)
        # in row blocks: a Visium HD slide (600,000 spots x 250 genes) would need 2.4 GB of float64 temporaries
        for start in range(0, len(design), PREDICT_ROWS):
            z = (design[start : start + PREDICT_ROWS] - s["scaler_mean"]) / s["scaler_scale"]
            if "pca_components" in s:
                z = (z - s["pca_mean"]) @ s["pca_components"].T
            out[start : start + PREDICT_ROWS] = z @ s["coef"].T + s["intercept"]
        return out

    def state_dict(self) -> dict[str, np.ndarray]:
        return {k: np.ascontiguousarray(v) for k, v in self.state_.items()}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        self.state_ = {k: np.asarray(v) for k, v in state.items()}


def neighbour_mean(features: np.ndarray, graph: sp.csr_matrix) -> np.ndarray:
    """Mean features of each spot's graph neighbours; a spot without neighbours keeps its own features."""
    degree = np.asarray(graph.sum(axis=1)).ravel()
    summed = graph @ features
    lonely = degree == 0
    summed[lonely] = features[lonely]
    return summed / np.where(lonely, 1.0, degree)[:, None]


class SpatialRidgeModel(RidgeModel):
    """Ridge on ``[features, mean features of the grid neighbours]`` (see :class:`RidgeModel`).

    Parameters (``model_params``) besides ridge's: ``spot_graph``, ``'grid'`` (default: the spot array's
    first ring, 8 on legacy ST, 6 on Visium) or ``'knn'`` (the ``n_neighbours`` nearest spot centres: for
    spots without array coordinates, or to read the same graph as a graph model).

    Examples
    --------
    >>> from stpredict.models import get_model
    >>> get_model("ridge_spatial")(spot_graph="knn", n_neighbours=5).graph_specs()
    {'grid': {'kind': 'knn', 'n_neighs': 5}}
    """

    Net = SpatialRidgeParams

    def graph_specs(self) -> Mapping[str, Mapping]:
        # the graph keeps the name 'grid' whatever its kind, so that models saved before this option still load
        return {"grid": spot_graph_spec(self.net_params.spot_graph, self.net_params.n_neighbours)}

    def design(self, inputs: ModelInputs) -> np.ndarray:
        x = inputs.features.astype(np.float64)
        return np.hstack([x, neighbour_mean(x, inputs.graphs["grid"])])
