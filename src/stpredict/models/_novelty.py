"""How far a new slide's images lie from what the model was trained on: an out-of-distribution score.

A slide from another scanner, lab, stain or tissue silently breaks every model (and every interval's
coverage). The score of a spot is its mean distance to its nearest training spots in the image
representation (standardised, first principal components), divided by the distance that 95 % of the spots
of a **held-out training group** stay within when that group is left out of the reference: a score above 1
means farther from the training slides than a new training-like slide usually lies. A slide's score is the
median over its spots, so a slide scoring above 1 has most of its spots beyond what held-out training slides
reached.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import sklearn
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

#: training spots kept as the reference (a random subset beyond it)
MAX_REFERENCE_SPOTS = 5000
#: principal components of the standardised representation
N_COMPONENTS = 20
#: nearest training spots whose distance is averaged
N_NEIGHBOURS = 10
#: spots scored at once (bounds the memory of scoring a whole slide)
SCORE_BLOCK = 16_384
#: share of held-out training spots whose distance the score divides by
QUANTILE = 0.95


@dataclass
class NoveltyReference:
    """Training spots' places in the representation, and the distance a held-out training group reaches.

    Attributes
    ----------
    centre, spread, components
        Standardisation and principal axes of the training representation.
    reference
        ``(n_reference, n_components)`` training spots in that space.
    threshold
        The :data:`QUANTILE` of held-out training spots' distances (each group left out of the reference).
    groups
        What the held-out groups were (``'patient'``, ``'slide'`` or ``'spatial block'``).
    """

    centre: np.ndarray
    spread: np.ndarray
    components: np.ndarray
    reference: np.ndarray
    threshold: float
    groups: str

    @classmethod
    def from_training(
        cls, features: np.ndarray, groups: np.ndarray, kind: str, random_state: int | None = 0
    ) -> NoveltyReference:
        """The reference of training ``features``, calibrated by leaving out each of ``groups`` in turn."""
        rng = np.random.default_rng(random_state)
        keep = np.arange(len(features))
        if len(keep) > MAX_REFERENCE_SPOTS:
            keep = np.sort(rng.choice(keep, MAX_REFERENCE_SPOTS, replace=False))
        features = np.asarray(features, dtype=np.float64)[keep]
        groups = np.asarray(groups)[keep]
        centre, spread = features.mean(axis=0), features.std(axis=0)
        spread[spread == 0] = 1.0
        standardised = (features - centre) / spread
        n_components = int(min(N_COMPONENTS, standardised.shape[1], len(keep) - 1))
        components = PCA(n_components=n_components, random_state=random_state).fit(standardised).components_
        places = standardised @ components.T
        held_out = np.concatenate([_distance(places[groups != g], places[groups == g]) for g in np.unique(groups)])
        threshold = float(np.quantile(held_out, QUANTILE)) if len(np.unique(groups)) > 1 else float("nan")
        if not np.isfinite(threshold) or threshold <= 0:
            msg = (
                "Cannot calibrate the out-of-distribution score: the training spots need at least two groups "
                "(patients, slides or spatial blocks) with distinct images."
            )
            raise ValueError(msg)
        return cls(centre, spread, components, places.astype(np.float32), threshold, kind)

    def spot_scores(self, features: np.ndarray) -> np.ndarray:
        """Each spot's distance to its nearest training spots over :attr:`threshold` (above 1: unusual).

        Spots are scored in blocks, so that a whole Visium HD slide adds little memory.
        """
        search = NearestNeighbors(n_neighbors=int(min(N_NEIGHBOURS, len(self.reference)))).fit(self.reference)
        scores = np.empty(len(features), dtype=np.float64)
        with sklearn.config_context(working_memory=64):  # MiB of distances at a time (default 1,024)
            self._score_blocks(search, features, scores)
        return scores / self.threshold

    def _score_blocks(self, search: NearestNeighbors, features: np.ndarray, scores: np.ndarray) -> None:
        for start in range(0, len(features), SCORE_BLOCK):
            block = np.asarray(features[start : start + SCORE_BLOCK], dtype=np.float64)
            places = ((block - self.centre) / self.spread) @ self.components.T
            scores[start : start + SCORE_BLOCK] = search.kneighbors(places)[0].mean(axis=1)

    # --- keeping ------------------------------------------------------------------------------------------

    ARRAYS = ("centre", "spread", "components", "reference")

    def state_dict(self) -> dict[str, np.ndarray]:
        return {name: np.ascontiguousarray(getattr(self, name)) for name in self.ARRAYS}

    def metadata(self) -> dict:
        return {"threshold": self.threshold, "groups": self.groups}

    @classmethod
    def from_state(cls, state: Mapping[str, np.ndarray], metadata: Mapping) -> NoveltyReference:
        return cls(
            **{n: np.asarray(state[n]) for n in cls.ARRAYS}, threshold=metadata["threshold"], groups=metadata["groups"]
        )


def _distance(reference: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Mean Euclidean distance of every query row to its :data:`N_NEIGHBOURS` nearest reference rows."""
    if len(query) == 0:
        return np.empty(0)
    k = int(min(N_NEIGHBOURS, len(reference)))
    with sklearn.config_context(working_memory=64):
        distances, _ = NearestNeighbors(n_neighbors=k).fit(reference).kneighbors(query)
    return distances.mean(axis=1)
