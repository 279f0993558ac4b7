"""Fixtures shared by the model tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def split(_crop_norm_session):
    """Training sections C2 and C3, test section C4 of the normalised crop (fresh copies for each test module)."""
    adata = _crop_norm_session
    is_test = adata.obs["library_id"] == "C4"
    return adata[~is_test].copy(), adata[is_test].copy()
