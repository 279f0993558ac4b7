from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import stpredict as st
from stpredict._validate import get_matrix
from stpredict.demo import main as demo_main


def test_prediction_plot_shows_truth_and_prediction(crop_norm, tmp_path):
    crop_norm.layers["pred"] = crop_norm.layers["log1p"] * 0.5 + 1
    fig = st.pl.prediction(
        crop_norm, ["ERBB2", "GNAS"], layer_pred="pred", library_id="C2", save=tmp_path / "p.png", show=False
    )
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["ERBB2 measured", "ERBB2 predicted (r = 1.00)", "GNAS measured", "GNAS predicted (r = 1.00)"]
    scatter = fig.axes[0].collections[0]
    assert len(scatter.get_offsets()) == (crop_norm.obs["library_id"] == "C2").sum()
    assert (tmp_path / "p.png").stat().st_size > 10_000


def test_scores_plot(tmp_path):
    table = pd.DataFrame({"library_id": ["C2", "C3"], "pcc_m": [0.2, 0.3], "pcc_h": [0.3, 0.5]})
    ax = st.pl.scores(table, save=tmp_path / "s.png", show=False)
    heights = sorted(round(p.get_height(), 3) for p in ax.patches if p.get_height() > 0)
    assert heights == [0.2, 0.3, 0.3, 0.5]
    assert "PCC(M) 0.250" in ax.get_title()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["PCC(M)", "PCC(H)"]
    assert (tmp_path / "s.png").stat().st_size > 5_000
    assert st.pl.scores(table, show=True) is None  # shown, nothing returned (scanpy)


def test_plots_draw_on_the_users_axes(crop_norm):
    import matplotlib.pyplot as plt

    crop_norm.layers["pred"] = crop_norm.layers["log1p"] * 0.5
    fig, axes = plt.subplots(2, 2)
    out = st.pl.prediction(crop_norm, ["ERBB2", "GNAS"], layer_pred="pred", library_id="C3", ax=axes, show=False)
    assert out is fig and axes[1, 1].get_title().startswith("GNAS predicted")
    wide = st.pl.prediction(crop_norm, ["ERBB2", "GNAS", "FASN"], layer_pred="pred", layer_true=None, show=False)
    panels = [a for a in wide.axes if a.get_title()]
    assert [a.get_title() for a in panels] == ["ERBB2 predicted", "GNAS predicted", "FASN predicted"]
    assert len({round(a.get_position().y0, 3) for a in panels}) == 1  # predictions alone: side by side
    plt.close(wide)
    with pytest.raises(ValueError, match="ax= has 1 Axes but the plot has 2 panels"):
        st.pl.prediction(crop_norm, ["ERBB2"], layer_pred="pred", ax=axes[0, 0], show=False)
    plt.close(fig)
    _, own = plt.subplots()
    table = pd.DataFrame({"library_id": ["C2"], "pcc_m": [0.2]})
    assert st.pl.scores(table, ax=own, show=False) is own


def test_model_comparison_draws_each_models_genes(crop_norm):
    train, test = crop_norm[crop_norm.obs.library_id != "C4"].copy(), crop_norm[crop_norm.obs.library_id == "C4"].copy()
    genes = ["ERBB2", "GNAS", "FASN", "CD24", "KRT19"]
    tables = {}
    for model in ("ridge", "ridge_spatial"):
        st.tl.fit(train, model=model, genes=genes).predict(test, key_added=model)
        tables[model] = st.tl.evaluate(test, layer_true="log1p", layer_pred=model)
    ax = st.pl.model_comparison(tables, show=False)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["ridge", "ridge_spatial"]
    assert f"ridge {tables['ridge']['pearson'].mean():.3f}" in ax.get_title()  # PCC(M): the mean over genes
    with pytest.raises(ValueError, match="kind must be"):
        st.pl.model_comparison(tables, kind="bar", show=False)


def test_demo_runs_end_to_end(tmp_path):
    table = demo_main(["--out", str(tmp_path), "--n-genes", "50"])
    assert len(table) == 3 and table["pcc_m"].mean() > 0.15
    assert {"scores.csv", "scores.png", "prediction_C3.png"} <= {p.name for p in tmp_path.iterdir()}
    assert np.isfinite(pd.read_csv(tmp_path / "scores.csv")["pcc_h"]).all()


def test_prediction_plot_for_image_only_slide(crop_norm):
    train = crop_norm[crop_norm.obs["library_id"] != "C4"].copy()
    files = st.datasets.her2st_crop_files()["C4"]
    image_only = st.io.read_st(None, files["spots"], files["image"], library_id="C4")
    st.tl.fit_predict(train, image_only, genes=["ERBB2", "GNAS"])
    fig = st.pl.prediction(image_only, ["ERBB2"], layer_pred="pred_ridge", library_id="C4", show=False)
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["ERBB2 predicted"]
    colours = fig.axes[0].collections[0].get_array()
    np.testing.assert_allclose(colours, image_only.obsm["pred_ridge"]["ERBB2"].to_numpy())


def test_prediction_plot_draws_the_layer_with_true_spot_sizes(crop_norm):
    crop_norm.layers["pred"] = crop_norm.layers["log1p"] * 0.5
    fig = st.pl.prediction(crop_norm, ["ERBB2"], layer_pred="pred", library_id="C3", show=False)
    c3 = (crop_norm.obs["library_id"] == "C3").to_numpy()
    expected = get_matrix(crop_norm[c3], "pred", columns=[crop_norm.var_names.get_loc("ERBB2")]).ravel()
    panels = [ax for ax in fig.axes if ax.collections and ax.get_title().startswith("ERBB2 predicted")]
    np.testing.assert_allclose(panels[0].collections[0].get_array(), expected, rtol=1e-6)
    scale = crop_norm.uns["spatial"]["C3"]["scalefactors"]
    diameter = scale["spot_diameter_fullres"] * scale["tissue_hires_scalef"]  # in hires pixels
    ax = panels[0]
    x0, x1 = ax.get_xlim()
    points_per_pixel = ax.get_window_extent().width * 72 / fig.dpi / abs(x1 - x0)
    np.testing.assert_allclose(np.sqrt(ax.collections[0].get_sizes()), diameter * points_per_pixel, rtol=1e-6)
    assert "one colour scale per gene" in fig._suptitle.get_text()
    assert fig.axes[-1].get_ylabel() == "measured and predicted log1p"  # what the colours show, not the key
