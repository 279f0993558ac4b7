"""Cells from spots (``model='spot2cell'``, DeepSpot2Cell's design): nuclei trained on spots, on the real crop."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import SPOT2CELL_SMALL as SMALL
from helpers import planted_cell_values, planted_cells

import stpredict as st
from stpredict.models.spot2cell import PAPER_PARAMS, Spot2CellModel

CONTRACT_PARAMS = {"max_epochs": 2, "width": 16, "n_ensemble": 2, "context_um": [32]}
GENES = ["ERBB2", "GNAS"]


@pytest.fixture(scope="module")
def planted(_crop_norm_session):
    adata = planted_cells(_crop_norm_session)
    return adata[adata.obs.library_id != "C4"].copy(), adata[adata.obs.library_id == "C4"].copy()


@pytest.fixture(scope="module")
def fitted(planted):
    train, _ = planted
    return st.tl.fit(train, model="spot2cell", genes=GENES, device="cpu", model_params=SMALL)


def _cell_scores(predictor, test):
    """Pearson at the held-out section's nuclei of the model and of the nearest-spot oracle."""
    cells = st.tl.super_resolve(predictor, test, cells=True, genes=["ERBB2"])
    truth = np.log1p(planted_cell_values(np.log(cells.obs["area_um2"].to_numpy())))
    # the best a spot-level answer can do: each nucleus its nearest spot's true value
    nearest = np.argmin(((cells.obsm["spatial"][:, None] - test.obsm["spatial"][None]) ** 2).sum(-1), axis=1)
    oracle = test[:, "ERBB2"].layers["log1p"].ravel()[nearest]
    return np.corrcoef(truth, cells.X[:, 0])[0, 1], np.corrcoef(truth, oracle)[0, 1]


def test_learns_a_planted_cell_signal_on_held_out_nuclei(fitted, planted):
    """Each nucleus' expression follows its size; trained on spot means only, single nuclei recover it."""
    model, oracle = _cell_scores(fitted, planted[1])
    assert model > 0.6 and model > oracle + 0.4, (model, oracle)


def test_papers_sum_pooling_loses_single_cells(fitted, planted):
    """The measurement behind the non-paper default: with the paper's sum a single cell is off rho's scale."""
    train, test = planted
    paper = st.tl.fit(train, model="spot2cell", genes=GENES, device="cpu", model_params={**SMALL, "pooling": "sum"})
    paper_r, default_r = _cell_scores(paper, test)[0], _cell_scores(fitted, test)[0]
    assert paper_r < default_r - 0.05, (paper_r, default_r)


def test_a_spot_is_the_mean_of_its_nuclei(fitted, planted):
    from stpredict.models._inputs import build_inputs
    from stpredict.models.spot2cell import spot_cell_bags

    _, test = planted
    spots = fitted.predict(test, copy=True).obsm["pred_spot2cell"][GENES].to_numpy()
    model = fitted.model
    inputs, _ = build_inputs(test, np.empty((test.n_obs, 0)), needs_images=True)
    bags, mask = spot_cell_bags(inputs, model.cell_features)
    for i in range(0, test.n_obs, 7):
        cells = model.cell_linear(bags[i][mask[i]])
        np.testing.assert_allclose(np.log1p(cells.mean(axis=0)), spots[i], rtol=1e-4, atol=1e-4)


def test_bags_hold_the_nuclei_inside_each_spot(planted, tmp_path):
    from PIL import Image

    from stpredict.models._inputs import build_inputs
    from stpredict.models.spot2cell import spot_cell_bags
    from stpredict.pp._cells import MAX_NUCLEUS_AREA_UM2, CellFeatures
    from stpredict.pp._dense import DenseFeatures

    spots = planted[1].copy()
    image, _ = st.io.load_slide_image(spots, "C4")
    x, y = spots.obsm["spatial"][0].astype(int)
    image = image.copy()
    image[y - 100 : y + 100, x - 100 : x + 100] = 255  # the first spot on glass
    Image.fromarray(image).save(tmp_path / "C4.png")
    spots.uns["spatial"]["C4"]["metadata"] = {
        **spots.uns["spatial"]["C4"]["metadata"],
        "source_image_path": str(tmp_path / "C4.png"),
    }
    spec = CellFeatures(DenseFeatures(context_um=()))
    inputs, _ = build_inputs(spots, np.empty((spots.n_obs, 0)), needs_images=True)
    bags, mask = spot_cell_bags(inputs, spec)
    counts = mask.sum(axis=1)
    assert 10 < np.median(counts[1:]) < 100  # a 100 µm legacy ST spot of breast tissue holds tens of nuclei
    flag, area = spec.names.index("nucleus_no_nucleus"), spec.names.index("nucleus_log_area_um2")
    assert counts[0] == 1 and bags[0, 0, flag] == 1  # the stand-in of a spot without nuclei
    nuclei = bags[1:][mask[1:]]
    assert (nuclei[:, flag] == 0).all()
    assert (nuclei[:, area] > np.log(5)).all() and (nuclei[:, area] <= np.log(MAX_NUCLEUS_AREA_UM2) + 1e-6).all()
    assert not bags[~mask].any()  # padding stays zero


def test_paper_params_are_the_papers_and_a_bin_map_is_refused(fitted, planted):
    assert PAPER_PARAMS["pooling"] == "sum" and PAPER_PARAMS["n_ensemble"] == 8 and PAPER_PARAMS["width"] == 512
    assert PAPER_PARAMS["dropout"] == 0.3 and PAPER_PARAMS["lr"] == 1e-4 and PAPER_PARAMS["batch_size"] == 4
    assert Spot2CellModel.check_params(PAPER_PARAMS)["output_dropout"] == 0.1
    with pytest.raises(ValueError, match="dropout"):
        Spot2CellModel(dropout=1.5)
    with pytest.raises(ValueError, match="pass cells=True.*istar"):
        st.tl.super_resolve(fitted, planted[1])
