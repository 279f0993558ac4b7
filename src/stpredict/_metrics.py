"""Scores shared by evaluation, model validation and plots."""

from __future__ import annotations

import warnings

import numpy as np


def column_pearson(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Pearson per column over rows, ignoring NaN entries (masked); NaN where either side is constant."""
    valid = np.isfinite(y) & np.isfinite(p)
    n = valid.sum(axis=0)
    y0 = np.where(valid, y, 0.0)
    p0 = np.where(valid, p, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        my = y0.sum(axis=0) / n
        mp = p0.sum(axis=0) / n
        dy = np.where(valid, y0 - my, 0.0)
        dp = np.where(valid, p0 - mp, 0.0)
        cov = (dy * dp).sum(axis=0)
        sy = np.sqrt((dy**2).sum(axis=0))
        sp_ = np.sqrt((dp**2).sum(axis=0))
        r = cov / (sy * sp_)
    # relative threshold: a column is constant when its spread is at round-off level
    scale_y = np.sqrt((np.where(valid, y0, 0.0) ** 2).sum(axis=0)) + 1e-300
    scale_p = np.sqrt((np.where(valid, p0, 0.0) ** 2).sum(axis=0)) + 1e-300
    constant = (sy <= 1e-10 * scale_y) | (sp_ <= 1e-10 * scale_p) | (n < 2)
    r[constant] = np.nan
    return r


def per_slide_pearson(y: np.ndarray, p: np.ndarray, library: np.ndarray) -> np.ndarray:
    """Per-gene Pearson computed within each slide, then averaged over slides (the PCC(M) building block).

    Pooling slides would let per-slide offsets shared by image and expression inflate the correlation.
    """
    library = np.asarray(library)
    scores = [column_pearson(y[library == lib], p[library == lib]) for lib in np.unique(library)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a gene constant on every slide stays NaN
        return np.nanmean(np.vstack(scores), axis=0)


def mean_pearson(y: np.ndarray, p: np.ndarray, library: np.ndarray) -> float:
    """PCC(M): :func:`per_slide_pearson` averaged over genes, a gene constant on every slide counting 0."""
    return float(np.nan_to_num(per_slide_pearson(y, p, library), nan=0.0).mean())
