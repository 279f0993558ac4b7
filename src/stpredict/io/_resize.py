"""Patches resampled to a side: shared by the stored-patch readers (``io``) and patch extraction (``pp``)."""

from __future__ import annotations

import numpy as np
from PIL import Image


def resize_patches(patches: np.ndarray, side: int) -> np.ndarray:
    """Patches resampled to ``side`` px (area averaging when shrinking, bilinear when enlarging)."""
    if patches.shape[1] == side:
        return patches
    method = Image.Resampling.BOX if side < patches.shape[1] else Image.Resampling.BILINEAR
    return np.stack([np.asarray(Image.fromarray(p).resize((side, side), method)) for p in patches])
