"""Validation groups drawn from the training slides only: patients, else slides, else spatial blocks."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans

from ._inputs import ModelInputs


def validation_groups(inputs: ModelInputs, n_blocks: int = 5, random_state: int | None = 0) -> tuple[np.ndarray, str]:
    """A validation group for every training spot, and what the groups are.

    Held-out patients keep hyper-parameter choice and early stopping honest; held-out slides are the next
    best; a lone slide falls back to contiguous spatial blocks (KMeans on the spot centres), the least leaky
    split inside one section.
    """
    patients = pd.Series(inputs.patient, dtype=object)
    if patients.notna().all() and patients.nunique() >= 2:
        return patients.astype(str).to_numpy(), "patient"
    if len(np.unique(inputs.library)) >= 2:
        return np.asarray(inputs.library, dtype=str), "slide"
    n_blocks = int(min(n_blocks, inputs.n_spots // 2))
    if n_blocks < 2:
        msg = f"Cannot hold out validation spots from {inputs.n_spots} training spot(s); give more training spots."
        raise ValueError(msg)
    labels = KMeans(n_clusters=n_blocks, n_init=10, random_state=random_state).fit_predict(inputs.spatial)
    return np.char.add("block", labels.astype(str)), "spatial block"


def held_out_mask(
    inputs: ModelInputs, *, fraction: float = 0.2, random_state: int | None = 0
) -> tuple[np.ndarray, list[str], np.ndarray, str]:
    """Spots of the validation groups held out for early stopping: about ``fraction`` of the groups, at least one.

    Returns the mask, the held-out group names, every spot's group and the group kind.
    """
    groups, kind = validation_groups(inputs, random_state=random_state)
    names = np.unique(groups)
    n_held = max(1, int(round(fraction * len(names))))
    rng = np.random.default_rng(random_state)
    held = sorted(rng.choice(names, size=n_held, replace=False).tolist())
    return np.isin(groups, held), held, groups, kind


def scoring_units(inputs: ModelInputs, groups: np.ndarray, kind: str) -> np.ndarray:
    """What validation Pearson is computed within: slides, or spatial blocks on a lone slide (as PCC(M))."""
    return groups if kind == "spatial block" else np.asarray(inputs.library, dtype=str)
