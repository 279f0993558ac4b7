"""Out-of-fold predictions of the training spots.

Folds of whole training groups, each predicted by models fitted without it. The ensemble chooses its
weights on them, conformal calibration measures residuals on them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .._logging import logger
from ._inputs import ModelInputs

#: fits on (inputs, targets) and returns one prediction per model for ``held_inputs``
FitPredict = Callable[[ModelInputs, np.ndarray, ModelInputs], list[np.ndarray]]


def group_folds(groups: np.ndarray, n_folds: int, random_state: int | None = 0) -> list[np.ndarray]:
    """Spot masks of ``min(n_folds, n_groups)`` folds, each made of whole groups (patients, slides or blocks).

    Examples
    --------
    >>> import numpy as np
    >>> folds = group_folds(np.array(["a", "a", "b", "c", "c", "d"]), 3)
    >>> len(folds), np.sum(folds, axis=0).tolist()  # every spot in exactly one fold
    (3, [1, 1, 1, 1, 1, 1])
    """
    names = np.random.default_rng(random_state).permutation(np.unique(groups))
    chunks = np.array_split(names, min(n_folds, len(names)))
    return [np.isin(groups, chunk) for chunk in chunks]


def out_of_fold(
    fit_predict: FitPredict, inputs: ModelInputs, targets: np.ndarray, folds: list[np.ndarray], what: str
) -> list[np.ndarray]:
    """Every model's prediction of every spot in ``folds``, by models fitted without that spot's fold.

    Spots in no fold stay NaN. ``what`` names the models in the log.
    """
    predictions: list[np.ndarray] | None = None
    for number, fold in enumerate(folds, start=1):
        logger.info("%s: fold %d of %d (%d held-out spots)", what, number, len(folds), int(fold.sum()))
        held = fit_predict(inputs.subset(~fold), targets[~fold], inputs.subset(fold))
        if predictions is None:
            predictions = [np.full(targets.shape, np.nan) for _ in held]
        for out, values in zip(predictions, held, strict=True):
            out[fold] = values
    return predictions or []
