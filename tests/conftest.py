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


@pytest.fixture(scope="session")
def istar_planted(_crop_norm_session):
    """``(predictor, train, test)``: iStar fitted on C2-C3 of the crop whose ERBB2 is a planted per-bin signal."""
    from helpers import ISTAR_SMALL, planted_sub_spot

    adata = planted_sub_spot(_crop_norm_session)
    train, test = adata[adata.obs.library_id != "C4"].copy(), adata[adata.obs.library_id == "C4"].copy()
    predictor = st.tl.fit(train, model="istar", genes=["ERBB2", "GNAS"], device="cpu", model_params=ISTAR_SMALL)
    return predictor, train, test
