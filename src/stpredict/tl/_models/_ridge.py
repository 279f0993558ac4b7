"""Ridge regression on image features: the baseline every method is compared with (HEST-Benchmark style)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ..._logging import logger
from .._evaluate import _column_pearson
from ._base import Model, SpotData, register_model

DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-1, 5, 13))


def inner_groups(train: SpotData, n_blocks: int = 5, random_state: int | None = 0) -> tuple[np.ndarray, str]:
    """Validation groups inside the training slides: patients, else slides, else spatial blocks.

    Validating on held-out patients (or at least held-out slides) keeps hyper-parameter choice honest;
    with a single slide, contiguous spatial blocks are the least leaky fallback.
    """
    patients = pd.Series(train.patient).astype(object)
    if patients.notna().all() and patients.nunique() >= 2:
        return patients.astype(str).to_numpy(), "patient"
    if len(np.unique(train.library)) >= 2:
        return np.asarray(train.library, dtype=str), "slide"
    n_blocks = int(min(n_blocks, len(train.spatial) // 2))
    labels = KMeans(n_clusters=n_blocks, n_init=10, random_state=random_state).fit_predict(train.spatial)
    return labels.astype(str), "spatial block"


def _per_slide_pearson(y: np.ndarray, p: np.ndarray, library: np.ndarray) -> np.ndarray:
    """Per-gene Pearson averaged over slides (the PCC(M) building block)."""
    scores = [_column_pearson(y[library == lib], p[library == lib]) for lib in np.unique(library)]
    return np.nanmean(np.vstack(scores), axis=0)


@register_model("ridge")
class RidgeModel(Model):
    """Standardised features (optionally PCA) -> ridge regression, one penalty for all genes.

    The penalty is chosen among ``alphas`` by the mean per-gene Pearson on held-out groups of the
    training slides (patients, else slides, else spatial blocks; see :func:`inner_groups`), then the
    model is refit on all training spots. ``validation_`` keeps the chosen alpha, the score of every
    alpha and each gene's validation Pearson (to pick "highly predictive" genes without test data).
    """

    def __init__(self, *, alphas=DEFAULT_ALPHAS, n_pcs: int | None = None, **kwargs) -> None:
        super().__init__(alphas=tuple(float(a) for a in alphas), n_pcs=n_pcs, **kwargs)

    def _pipeline(self, alpha: float, n_features: int):
        steps = [StandardScaler()]
        n_pcs = self.params["n_pcs"]
        if n_pcs is not None and n_pcs < n_features:
            steps.append(PCA(n_components=n_pcs, random_state=self.random_state))
        steps.append(Ridge(alpha=alpha))
        return make_pipeline(*steps)

    def fit(self, train: SpotData) -> RidgeModel:
        x, y = train.features, train.targets
        groups, kind = inner_groups(train, random_state=self.random_state)
        alphas = self.params["alphas"]
        oof = {a: np.empty_like(y) for a in alphas}
        for group in np.unique(groups):
            held = groups == group
            for alpha in alphas:
                pipe = self._pipeline(alpha, x.shape[1]).fit(x[~held], y[~held])
                oof[alpha][held] = pipe.predict(x[held]).reshape(held.sum(), -1)
        # score out-of-group predictions slide by slide, as PCC(M) is scored on test slides (a patient's
        # slides are not pooled); a lone slide's spatial blocks are scored block by block
        scored_by = groups if kind == "spatial block" else np.asarray(train.library, dtype=str)
        gene_scores = {a: _per_slide_pearson(y, oof[a], scored_by) for a in alphas}
        mean_scores = {a: float(np.nan_to_num(s, nan=0.0).mean()) for a, s in gene_scores.items()}
        best = max(alphas, key=lambda a: mean_scores[a])
        if best in (min(alphas), max(alphas)) and len(alphas) > 1:
            logger.info("ridge: the chosen alpha %g is at the edge of the grid; consider widening `alphas`", best)
        self.pipeline_ = self._pipeline(best, x.shape[1]).fit(x, y)
        self.validation_ = {
            "alpha": best,
            "groups": kind,
            "n_groups": int(len(np.unique(groups))),
            "score_by_alpha": mean_scores,
            "gene_pearson": gene_scores[best],
        }
        logger.info(
            "ridge: alpha=%g chosen on %d held-out %s(s), validation PCC %.3f",
            best,
            len(np.unique(groups)),
            kind,
            mean_scores[best],
        )
        return self

    def predict(self, test: SpotData) -> np.ndarray:
        return self.pipeline_.predict(test.features).reshape(len(test.features), -1)
