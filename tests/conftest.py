from __future__ import annotations

import matplotlib
import pytest

matplotlib.use("Agg")

import stpredict as st  # noqa: E402


@pytest.fixture(scope="session")
def _crop_session():
    return st.datasets.her2st_crop()


@pytest.fixture
def crop(_crop_session):
    """A fresh copy of the bundled HER2ST crop (3 sections of patient C, 213 spots)."""
    return _crop_session.copy()


@pytest.fixture(scope="session")
def _crop_norm_session(_crop_session):
    adata = _crop_session.copy()
    st.pp.normalize(adata)
    st.pp.image_features(adata, show_progress_bar=False)
    return adata


@pytest.fixture
def crop_norm(_crop_norm_session):
    """The crop with layers['log1p'] and obsm['X_handcrafted']."""
    return _crop_norm_session.copy()


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    matplotlib.pyplot.close("all")
