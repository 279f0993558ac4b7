"""``st.tl.interval_coverage``: do a calibrated model's intervals hold the measured values as often as they say?"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from .._constants import prediction_key
from .._predictions import get_predictions
from .._validate import check_adata, check_genes_present, get_matrix
from ..models import Predictor
from ..models._conformal import INTERVAL_METHODS

DEFAULT_LEVELS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def interval_coverage(
    predictor: Predictor,
    adata: AnnData,
    *,
    key: str | None = None,
    layer: str | None = "log1p",
    levels: Sequence[float] = DEFAULT_LEVELS,
    methods: Sequence[str] = INTERVAL_METHODS,
) -> pd.DataFrame:
    """Empirical coverage and width of the prediction intervals on slides with measured expression.

    Reads the predictions ``obsm[key]`` that ``predictor.predict(adata, key_added=key)`` wrote, and builds
    the intervals of every ``level`` and ``method`` from the predictor's calibration (no new prediction).

    Parameters
    ----------
    predictor
        A model fitted with ``st.tl.fit(..., calibrate=True)``.
    adata
        Held-out slides with the predictions and the measured ``layer`` (the one the model was trained on).
    key
        Predictions key, default ``f'pred_{model}'``.
    layer
        Measured values, e.g. ``'log1p'``.
    levels, methods
        Nominal coverage levels and interval kinds (``'adaptive'``, ``'constant'``).

    Returns
    -------
    One row per method and level: ``nominal``, ``coverage`` (share of spot × gene values inside, averaged
    over genes), ``coverage_worst_gene``, ``width`` (mean upper - lower) and ``n_spots``.

    Examples
    --------
    >>> import stpredict as st
    >>> adata = st.datasets.her2st_crop()
    >>> st.pp.normalize(adata)
    >>> train, test = adata[adata.obs.library_id != "C4"].copy(), adata[adata.obs.library_id == "C4"].copy()
    >>> predictor = st.tl.fit(train, genes=["ERBB2", "GNAS", "FASN"], calibrate=True)
    >>> predictor.predict(test)
    >>> table = st.tl.interval_coverage(predictor, test, levels=[0.8, 0.9])
    >>> table[["method", "nominal"]].values.tolist()
    [['adaptive', 0.8], ['adaptive', 0.9], ['constant', 0.8], ['constant', 0.9]]
    """
    check_adata(adata)
    calibration = predictor._calibrated("interval_coverage")
    key = key or prediction_key(predictor.model_name)
    predicted, genes = get_predictions(adata, key, predictor.genes)
    check_genes_present(adata, genes)
    measured = get_matrix(adata, layer, columns=adata.var_names.get_indexer(genes))
    rows = []
    for method in methods:
        for level in levels:
            lower, upper = calibration.interval(predicted, float(level), method)
            inside = ((measured >= lower) & (measured <= upper)).mean(axis=0)
            rows.append(
                {
                    "method": method,
                    "nominal": float(level),
                    "coverage": float(inside.mean()),
                    "coverage_worst_gene": float(inside.min()),
                    "width": float(np.mean(upper - lower)),
                    "n_spots": adata.n_obs,
                }
            )
    return pd.DataFrame(rows)
