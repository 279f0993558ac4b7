"""Macenko stain normalisation: a reference stain from the training slides, applied to every slide's patches.

Slides from another lab, scanner or staining day differ in colour; features computed with fixed colour
thresholds (nuclei segmentation, colour statistics) then shift and a model trained on one lab fails on
another. Macenko et al. (ISBI 2009) model each pixel's optical density as a mix of two stain vectors
(haematoxylin, eosin): each slide's vectors and concentration range are estimated once from a sample of its
patches (torchstain's estimator), and its patches are re-rendered with the reference vectors and range.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from anndata import AnnData

from .._constants import LIBRARY_KEY
from .._validate import check_adata, library_ids, spot_libraries

STAIN_KEY = "stpredict_stain"  # uns: the reference estimated by stain_reference
LIGHT = 240  # transmitted light intensity (background) assumed by the optical-density model


def estimate_stain(patches: np.ndarray, *, alpha: float = 1.0, beta: float = 0.15) -> dict[str, list]:
    """Macenko stain vectors (3 x 2, haematoxylin then eosin) and 99th-percentile concentrations of patches.

    Parameters
    ----------
    patches
        ``(n, s, s, 3)`` uint8 patches (or one image); glass (optical density below ``beta``) is ignored.
    alpha, beta
        Macenko's angle percentile and optical-density threshold.

    Returns
    -------
    ``{'stain_matrix': 3 x 2 nested list, 'max_concentrations': [h, e]}`` (JSON, to be saved with a model).

    Examples
    --------
    >>> import stpredict as st
    >>> patches = st.pp.extract_patches(st.datasets.her2st_crop()[:20], size=64)
    >>> stain = st.pp.estimate_stain(patches)
    >>> len(stain["stain_matrix"]), len(stain["max_concentrations"])
    (3, 2)
    """
    from torchstain.numpy.normalizers.macenko import NumpyMacenkoNormalizer

    pixels = np.asarray(patches, dtype=np.uint8).reshape(-1, 1, 3)
    optical = -np.log((pixels.reshape(-1, 3).astype(float) + 1) / LIGHT)
    if (~np.any(optical < beta, axis=1)).sum() < 100:
        msg = "Too little stained tissue in these patches to estimate stain vectors (are they glass?)."
        raise ValueError(msg)
    estimator = NumpyMacenkoNormalizer()
    estimator.fit(pixels, Io=LIGHT, alpha=alpha, beta=beta)
    return {
        "stain_matrix": np.asarray(estimator.HERef, dtype=float).tolist(),
        "max_concentrations": np.asarray(estimator.maxCRef, dtype=float).tolist(),
    }


def normalize_stain(patches: np.ndarray, source: Mapping[str, Any], reference: Mapping[str, Any]) -> np.ndarray:
    """Patches stained as ``source`` re-rendered with the ``reference`` stain (both from :func:`estimate_stain`).

    Examples
    --------
    >>> import numpy as np, stpredict as st
    >>> patches = st.pp.extract_patches(st.datasets.her2st_crop()[:20], size=64)
    >>> stain = st.pp.estimate_stain(patches)
    >>> same = st.pp.normalize_stain(patches, stain, stain)
    >>> int(np.abs(same.astype(int) - patches).max())
    0
    """
    source_matrix = np.asarray(source["stain_matrix"], dtype=float)
    reference_matrix = np.asarray(reference["stain_matrix"], dtype=float)
    scale = np.asarray(source["max_concentrations"], dtype=float) / np.asarray(
        reference["max_concentrations"], dtype=float
    )
    shape = patches.shape
    optical = -np.log((patches.reshape(-1, 3).T.astype(float) + 1) / LIGHT)  # (3, pixels)
    concentrations = np.linalg.lstsq(source_matrix, optical, rcond=None)[0]
    # what two stains do not explain (other pigments, noise, glass) is kept as it is, so that the reference
    # stain maps a slide onto itself exactly and only the stains' colour and intensity change
    residual = optical - source_matrix @ concentrations
    rendered = reference_matrix @ (concentrations / scale[:, None]) + residual
    pixels = LIGHT * np.exp(-rendered) - 1
    return np.clip(np.rint(pixels.T), 0, 255).astype(np.uint8).reshape(shape)


def sample_patches(
    adata: AnnData,
    library_id: str | None,
    *,
    n_spots: int,
    size: float,
    unit: str,
    target_mpp: float | None,
    random_state: int,
) -> np.ndarray:
    """Patches of up to ``n_spots`` random spots (of one slide, or of all slides when ``library_id`` is None)."""
    from ._patches import extract_patches

    slides = spot_libraries(adata, LIBRARY_KEY)
    candidates = np.flatnonzero(slides == library_id) if library_id is not None else np.arange(adata.n_obs)
    rng = np.random.default_rng(random_state)
    chosen = np.sort(rng.choice(candidates, size=min(n_spots, len(candidates)), replace=False))
    return extract_patches(adata[chosen], size=size, unit=unit, target_mpp=target_mpp)


def stain_reference(
    adata: AnnData,
    *,
    n_spots: int = 200,
    size: float = 224,
    unit: str = "px",
    key_added: str = STAIN_KEY,
    random_state: int = 0,
) -> dict[str, list]:
    """Estimate the reference stain from (training) slides, stored in ``uns[key_added]`` and returned.

    Pass it to :func:`stpredict.pp.image_features` (``stain_reference=``) for the training slides and every
    slide predicted later; a predictor records it, so ``predict`` normalises new slides the same way.
    Estimate it on training slides only: a test slide must not shape the reference.

    Parameters
    ----------
    adata
        Training slides with images.
    n_spots
        Spots sampled (over all slides) to estimate the stain from.
    size, unit
        Patch size.
    key_added
        ``uns`` key.
    random_state
        Seed of the spot sample.

    Examples
    --------
    >>> import stpredict as st
    >>> adata = st.datasets.her2st_crop()
    >>> reference = st.pp.stain_reference(adata, n_spots=50, size=64)
    >>> sorted(reference)
    ['max_concentrations', 'stain_matrix']
    """
    check_adata(adata)
    patches = sample_patches(
        adata, None, n_spots=n_spots, size=size, unit=unit, target_mpp=None, random_state=random_state
    )
    reference = estimate_stain(patches)
    adata.uns[key_added] = {**reference, "slides": library_ids(adata), "n_spots": int(len(patches))}
    return reference


def slide_stains(
    adata: AnnData,
    *,
    size: float,
    unit: str,
    target_mpp: float | None = None,
    n_spots: int = 64,
    random_state: int = 0,
) -> dict[str, dict[str, list]]:
    """Each slide's own stain (estimated from a sample of its patches), to normalise it to a reference."""
    return {
        library_id: estimate_stain(
            sample_patches(
                adata,
                library_id,
                n_spots=n_spots,
                size=size,
                unit=unit,
                target_mpp=target_mpp,
                random_state=random_state,
            )
        )
        for library_id in library_ids(adata)
    }
