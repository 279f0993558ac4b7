"""Cross-validation folds over slides that keep each patient on one side."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from .._constants import LIBRARY_KEY, PATIENT_KEY
from .._logging import warn
from .._validate import check_adata, check_choice, library_ids


@dataclass(frozen=True)
class Fold:
    """One cross-validation fold: which slides train and which test."""

    name: str
    train: list[str]
    test: list[str]
    train_patients: list[str] = field(default_factory=list)
    test_patients: list[str] = field(default_factory=list)


def _slide_patients(adata: AnnData, library_key: str, patient_key: str) -> pd.Series:
    if patient_key not in adata.obs:
        msg = f"adata.obs has no {patient_key!r} column; set it (e.g. `read_st(..., patient=...)`) to split by patient."
        raise KeyError(msg)
    table = adata.obs[[library_key, patient_key]].astype(object).drop_duplicates()
    per_slide = table.groupby(library_key, sort=False)[patient_key].agg(lambda s: list(pd.unique(s)))
    several = per_slide[per_slide.map(len) > 1]
    if len(several):
        msg = f"Slide(s) {several.index.tolist()} have spots of several patients in obs[{patient_key!r}]."
        raise ValueError(msg)
    patients = per_slide.map(lambda v: v[0])
    unknown = patients[patients.isna()].index.tolist()
    if unknown:
        msg = (
            f"Slide(s) {unknown} have no patient in obs[{patient_key!r}]. Patient-grouped splits need it: "
            "set the patient of every slide (read_st/read_visium's `patient=`)."
        )
        raise ValueError(msg)
    return patients.astype(str).reindex(library_ids(adata, library_key))


SPLIT_METHODS = ("leave_one_patient_out", "group_kfold", "leave_one_slide_out")


def make_splits(
    adata: AnnData,
    *,
    method: Literal["leave_one_patient_out", "group_kfold", "leave_one_slide_out"] = "leave_one_patient_out",
    n_splits: int | None = None,
    allow_shared_patients: bool = False,
    library_key: str = LIBRARY_KEY,
    patient_key: str = PATIENT_KEY,
    random_state: int | None = 0,
) -> list[Fold]:
    """Patient-grouped cross-validation folds over the slides of ``adata``.

    - ``'leave_one_patient_out'``: each patient's slides are the test set once.
    - ``'group_kfold'``: patients are dealt into ``n_splits`` folds of similar spot counts.
    - ``'leave_one_slide_out'``: each slide is the test set once. When a patient has several slides this
      would put the patient on both sides, which is refused unless ``allow_shared_patients=True`` (a
      within-patient benchmark, optimistic by design; a warning is logged).

    Parameters
    ----------
    adata
        Slides with ``obs['library_id']`` and ``obs['patient']``.
    method
        Split rule.
    n_splits
        Number of folds for ``'group_kfold'``.
    allow_shared_patients
        Permit ``'leave_one_slide_out'`` across slides of one patient.
    library_key, patient_key
        ``obs`` columns naming slides and patients.
    random_state
        Seed used to shuffle patients before ``'group_kfold'`` deals them into folds.

    Returns
    -------
    Folds, each with the library ids of its training and test slides.

    Examples
    --------
    >>> import stpredict as st
    >>> adata = st.datasets.her2st_crop()
    >>> adata.obs["patient"] = adata.obs["library_id"].map({"C2": "P1", "C3": "P1", "C4": "P2"})
    >>> [(f.train, f.test) for f in st.tl.make_splits(adata)]
    [(['C4'], ['C2', 'C3']), (['C2', 'C3'], ['C4'])]
    """
    check_adata(adata)
    check_choice(method, SPLIT_METHODS, "split method")
    slides = library_ids(adata, library_key)
    folds: list[Fold] = []
    if method == "leave_one_slide_out":
        patients = _slide_patients(adata, library_key, patient_key)
        shared = patients[patients.duplicated(keep=False)]
        if len(shared) and not allow_shared_patients:
            msg = (
                f"Leave-one-slide-out would put patient(s) {sorted(set(shared))} on both sides (slides "
                f"{shared.index.tolist()}). Use method='leave_one_patient_out', or pass "
                "allow_shared_patients=True for an explicitly within-patient benchmark."
            )
            raise ValueError(msg)
        if len(shared):
            warn(
                f"leave_one_slide_out: patient(s) {sorted(set(shared))} appear in training and test folds, so the "
                "scores measure within-patient prediction (allowed by allow_shared_patients=True)."
            )
        for slide in slides:
            train = [s for s in slides if s != slide]
            folds.append(Fold(slide, train, [slide], sorted(set(patients[train])), [patients[slide]]))
        return folds

    patients = _slide_patients(adata, library_key, patient_key)
    groups = list(pd.unique(patients.to_numpy()))
    if len(groups) < 2:
        msg = (
            f"method={method!r} needs at least 2 patients in obs[{patient_key!r}], found {groups}. With slides of "
            "a single patient, use method='leave_one_slide_out' with allow_shared_patients=True (a within-patient "
            "benchmark)."
        )
        raise ValueError(msg)
    if method == "leave_one_patient_out":
        assignments = {p: [p] for p in groups}
    elif method == "group_kfold":
        if n_splits is None or not 2 <= n_splits <= len(groups):
            msg = f"`n_splits` must be between 2 and the number of patients ({len(groups)}), got {n_splits}."
            raise ValueError(msg)
        sizes = adata.obs.groupby(adata.obs[patient_key].astype(str), observed=True).size()
        order = np.random.default_rng(random_state).permutation(groups)
        order = sorted(order, key=lambda p: -sizes.get(p, 0))  # largest first, greedy balancing (stable on ties)
        bins: list[list[str]] = [[] for _ in range(n_splits)]
        load = np.zeros(n_splits)
        for patient in order:
            target = int(np.argmin(load))
            bins[target].append(patient)
            load[target] += sizes.get(patient, 0)
        assignments = {"+".join(b): b for b in bins}
    else:
        msg = (
            f"Unknown split method {method!r}; choose 'leave_one_patient_out', 'group_kfold' or 'leave_one_slide_out'."
        )
        raise ValueError(msg)
    for name, test_patients in assignments.items():
        test = [s for s in slides if patients[s] in test_patients]
        train = [s for s in slides if patients[s] not in test_patients]
        folds.append(Fold(name, train, test, sorted(set(patients[train])), sorted(test_patients)))
    return folds
