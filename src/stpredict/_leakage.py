"""Guards against test spots that are training spots under another name.

Slide names are not enough: a training slide relabelled (or copied) and given as a test slide scores a
PCC of 0.5-0.8 from memorisation. A test slide is refused when it shows the same image (same file, or the
same pixels of its ``hires`` copy) with at least half of its spots at the same coordinates as a training
slide, and test spots are refused when their names are training spots' names.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData

from ._constants import SOURCE_IMAGE_KEY
from ._validate import require_spatial, slide_masks, spatial_entry, spot_libraries

#: share of a test slide's spots at a training slide's coordinates (same image) that counts as the same slide
SAME_SPOTS_SHARE = 0.5
#: training spot positions a fitted model keeps per slide to recognise its training slides later
FINGERPRINT_SPOTS = 256
OVERRIDE = "allow_overlap=True"


def _image_identity(adata: AnnData, library_id: str) -> set[str]:
    """What identifies the slide's image: its resolved file path and a digest of its ``hires`` pixels."""
    entry = spatial_entry(adata, library_id) or {}
    found = set()
    path = entry.get("metadata", {}).get(SOURCE_IMAGE_KEY)
    if path:
        found.add("path:" + str(Path(path).resolve()))
    hires = entry.get("images", {}).get("hires")
    if hires is not None:
        pixels = np.ascontiguousarray(hires)
        found.add("hires:" + hashlib.sha256(pixels.tobytes()).hexdigest() + str(pixels.shape))
    return found


def _centre_keys(centres: np.ndarray) -> np.ndarray:
    """Whole-pixel spot centres ``(n, 2)`` as one int64 key each (x in the high, y in the low 32 bits)."""
    centres = np.asarray(centres, dtype=np.int64).reshape(-1, 2)
    return (centres[:, 0] << 32) + centres[:, 1]


def _slides(adata: AnnData) -> dict[str, tuple[set[str], np.ndarray]]:
    """Per slide: image identity and its distinct spot centres rounded to whole pixels (sorted keys)."""
    keys = _centre_keys(np.rint(require_spatial(adata)))
    return {lib: (_image_identity(adata, lib), np.unique(keys[mask])) for lib, mask in slide_masks(adata).items()}


def _copies(test_slides: dict, train_slides: dict) -> dict[str, str]:
    """``{test slide: training slide}`` for test slides with a training slide's image and spot positions."""
    found = {}
    for test_lib, (image, spots) in test_slides.items():
        for train_lib, (train_image, train_spots) in train_slides.items():
            if image & train_image and np.isin(spots, train_spots).sum() >= SAME_SPOTS_SHARE * len(spots):
                found[test_lib] = train_lib
                break
    return found


def same_slides(train: AnnData, test: AnnData) -> dict[str, str]:
    """Test slides that are a training slide under another name: ``{test slide: training slide}``."""
    return _copies(_slides(test), _slides(train))


def slide_fingerprints(adata: AnnData) -> dict[str, dict]:
    """Per training slide, what a saved model keeps to recognise it: image identity and sampled spot centres.

    At most :data:`FINGERPRINT_SPOTS` distinct centres (evenly spaced in sorted order), JSON-ready.
    """
    fingerprints = {}
    for library_id, (image, centres) in _slides(adata).items():
        chosen = np.unique(np.linspace(0, len(centres) - 1, min(FINGERPRINT_SPOTS, len(centres))).round().astype(int))
        sampled = centres[chosen]
        fingerprints[library_id] = {
            "image": sorted(image),
            "spots": np.column_stack([sampled >> 32, sampled & 0xFFFFFFFF]).tolist(),
        }
    return fingerprints


def fingerprint_copies(adata: AnnData, fingerprints: dict[str, dict]) -> dict[str, str]:
    """Slides of ``adata`` that are a fingerprinted training slide: same image, most sampled centres present."""
    training = {lib: (set(f["image"]), _centre_keys(f["spots"])) for lib, f in fingerprints.items()}
    found = {}
    for library_id, (image, spots) in _slides(adata).items():
        for train_lib, (train_image, sampled) in training.items():
            if (
                image & train_image
                and len(sampled)
                and np.isin(sampled, spots).sum() >= SAME_SPOTS_SHARE * len(sampled)
            ):
                found[library_id] = train_lib
                break
    return found


def _refuse_shared_names(shared: pd.Index) -> None:
    if len(shared):
        msg = (
            f"{len(shared)} test spot name(s) are also training spot names, e.g. {shared[:3].tolist()}: test spots "
            "must never be trained on. If these are different spots that happen to share names (e.g. Visium "
            "barcodes of separately read slides), make names unique per slide (adata.obs_names = "
            "adata.obs['library_id'].astype(str) + '_' + adata.obs_names) or pass " + OVERRIDE + "."
        )
        raise ValueError(msg)


def _refuse_copies(copies: dict[str, str]) -> None:
    if copies:
        msg = (
            f"Test slide(s) {copies} (test: training) show the same image with the same spot coordinates as "
            "training slides: a relabelled copy of a training slide cannot test a model. Use a slide that was "
            "not trained on, or pass " + OVERRIDE + " if this is intended."
        )
        raise ValueError(msg)


def check_no_leakage(train: AnnData, test: AnnData, *, allow_overlap: bool = False) -> None:
    """Refuse test spots that are training spots: shared spot names, or the same image at the same places."""
    if allow_overlap:
        return
    _refuse_shared_names(test.obs_names.intersection(train.obs_names))
    _refuse_copies(same_slides(train, test))


def check_folds_no_leakage(adata: AnnData, folds) -> None:
    """:func:`check_no_leakage` for every fold of one AnnData, hashing each slide's image once for all folds."""
    slides = _slides(adata)
    libraries = spot_libraries(adata)
    for fold in folds:
        train_mask, test_mask = np.isin(libraries, fold.train), np.isin(libraries, fold.test)
        _refuse_shared_names(adata.obs_names[test_mask].intersection(adata.obs_names[train_mask]))
        _refuse_copies(_copies({s: slides[s] for s in fold.test}, {s: slides[s] for s in fold.train}))
