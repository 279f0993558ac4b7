"""Fixtures shared by the model tests."""

from __future__ import annotations

import pytest

import stpredict as st

#: the neighbour-tile size the small TRIPLEX settings of the tests use
TILE_SIZE = 64


def _split(adata):
    is_test = adata.obs["library_id"] == "C4"
    return adata[~is_test].copy(), adata[is_test].copy()


@pytest.fixture(scope="module")
def split(_crop_norm_session):
    """Training sections C2 and C3, test section C4 of the normalised crop (fresh copies for each test module)."""
    return _split(_crop_norm_session)


@pytest.fixture(scope="session")
def _crop_views_session(_crop_norm_session):
    """The normalised crop with TRIPLEX's 5 x 5 neighbour view at ``TILE_SIZE``, computed once.

    TRIPLEX finds a stored view by its recipe (as after ``st.pp.neighbour_features``) instead of computing it
    from the pixels in every fit and prediction (5 of a small fit's 7 s). Computing it from the pixels is
    tested where the view is absent (the contract's image-only slide) and against the stored one
    (``tests/models/test_inputs.py``).
    """
    adata = _crop_norm_session.copy()
    st.pp.neighbour_features(adata, tile_size=TILE_SIZE, show_progress_bar=False)
    return adata


@pytest.fixture
def crop_views(_crop_views_session):
    """The normalised crop with TRIPLEX's neighbour view stored (a fresh copy)."""
    return _crop_views_session.copy()


@pytest.fixture(scope="module")
def split_views(_crop_views_session):
    """As ``split``, with TRIPLEX's neighbour view stored."""
    return _split(_crop_views_session)
