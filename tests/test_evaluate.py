from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import stpredict as st


def _toy():
    obs = pd.DataFrame({"library_id": ["a"] * 4 + ["b"] * 4}, index=[f"s{i}" for i in range(8)])
    truth = np.array([[1, 0, 2], [2, 1, 2], [3, 0, 2], [4, 1, 2], [1, 1, 1], [2, 2, 2], [3, 3, 3], [4, 4, 4]], float)
    pred = np.array([[1, 1, 5], [2, 0, 5], [3, 1, 5], [5, 0, 5], [4, 1, 1], [3, 2, 2], [2, 3, 3], [1, 4, 4]], float)
    adata = ad.AnnData(np.zeros((8, 3), np.float32), obs=obs, var=pd.DataFrame(index=["g1", "g2", "g3"]))
    adata.layers["truth"], adata.layers["pred"] = truth, pred
    return adata, truth, pred


def test_metrics_match_hand_computation():
    adata, truth, pred = _toy()
    with pytest.warns(UserWarning, match="constant"):
        table = st.tl.evaluate(adata, layer_pred="pred", layer_true="truth", highly_predictive=["g1"])
    a_g1 = table[(table.library_id == "a") & (table.gene == "g1")].iloc[0]
    assert a_g1.pearson == pytest.approx(np.corrcoef([1, 2, 3, 4], [1, 2, 3, 5])[0, 1])
    assert a_g1.mse == pytest.approx(0.25) and a_g1.mae == pytest.approx(0.25) and a_g1.rmse == pytest.approx(0.5)
    assert a_g1.r2 == pytest.approx(1 - 1 / 5)
    # g3 truth is constant on slide a -> NaN, left out of PCC(M)
    assert np.isnan(table[(table.library_id == "a") & (table.gene == "g3")].pearson.iloc[0])
    per_slide = adata.uns["pred_eval"]["per_slide"]
    expected_a = np.nanmean([np.corrcoef([1, 2, 3, 4], [1, 2, 3, 5])[0, 1], -1.0])
    assert per_slide.loc["a", "pcc_m"] == pytest.approx(expected_a)
    assert per_slide.loc["b", "pcc_m"] == pytest.approx((-1 + 1 + 1) / 3)
    assert per_slide.loc["b", "pcc_h"] == pytest.approx(-1.0)
    assert adata.uns["pred_eval"]["summary"]["pcc_m"] == pytest.approx((expected_a + 1 / 3) / 2)
    # PCC-Patch: per spot across genes
    expected_patch = np.mean([np.corrcoef(truth[i], pred[i])[0, 1] for i in range(4)])
    assert per_slide.loc["a", "pcc_patch"] == pytest.approx(expected_patch)
    # R2-Patch: per spot across genes, 1 - SS_res / SS_tot
    spot_r2 = [1 - ((pred[i] - truth[i]) ** 2).sum() / ((truth[i] - truth[i].mean()) ** 2).sum() for i in range(4)]
    assert per_slide.loc["a", "r2_patch"] == pytest.approx(np.mean(spot_r2))
    assert adata.var.loc["g1", "pred_eval_pearson"] == pytest.approx(
        np.mean([a_g1.pearson, np.corrcoef([1, 2, 3, 4], [4, 3, 2, 1])[0, 1]])
    )


def test_constant_prediction_gives_nan_not_crash():
    adata, _, _ = _toy()
    adata.layers["flat"] = np.ones((8, 3))
    with pytest.warns(UserWarning, match="constant"):
        table = st.tl.evaluate(adata, layer_pred="flat", layer_true="truth", inplace=False)
    assert table.pearson.isna().all() and np.isfinite(table.mse).all()
    assert "flat_eval" not in adata.uns


def test_mask_layer_skips_entries():
    adata, truth, pred = _toy()
    mask = np.zeros((8, 3), bool)
    mask[3, 0] = True  # drop the one spot where g1 is mispredicted on slide a
    adata.layers["skip"] = mask
    with pytest.warns(UserWarning):
        table = st.tl.evaluate(adata, layer_pred="pred", layer_true="truth", mask_layer="skip", inplace=False)
    row = table[(table.library_id == "a") & (table.gene == "g1")].iloc[0]
    assert row.pearson == pytest.approx(1.0) and row.mse == pytest.approx(0.0)
    # the patch metrics of spot 3 read its two unmasked genes only
    kept = [np.corrcoef(truth[i], pred[i])[0, 1] for i in range(3)] + [np.corrcoef(truth[3, 1:], pred[3, 1:])[0, 1]]
    assert table.attrs["pcc_patch"]["a"] == pytest.approx(np.mean(kept))


def test_evaluate_errors():
    adata, _, _ = _toy()
    with pytest.raises(KeyError, match="nope"):
        st.tl.evaluate(adata, layer_pred="nope", layer_true="truth")
    adata.layers["partial"] = np.where(np.arange(3) == 0, np.nan, 1.0) * np.ones((8, 3))
    with pytest.raises(ValueError, match="NaN predictions"):
        st.tl.evaluate(adata, layer_pred="partial", layer_true="truth", genes=["g1", "g2"])


def test_predictions_carry_pcc_h_genes_chosen_on_training_slides(crop_norm):
    train, test = crop_norm[crop_norm.obs.library_id != "C4"].copy(), crop_norm[crop_norm.obs.library_id == "C4"].copy()
    st.pp.image_features(train, show_progress_bar=False)
    predictor = st.tl.fit(train, genes=["ERBB2", "GNAS", "FASN", "CD24"], use_rep="X_handcrafted")
    predictor.predict(test, key_added="pred")
    chosen = test.uns["pred"]["highly_predictive"]
    assert chosen == predictor.highly_predictive(50) and len(chosen) == 4
    table = st.tl.evaluate(test, layer_pred="pred", inplace=False)
    summary = st.tl.summarize(table, chosen)
    assert np.isfinite(summary["pcc_h"]).all()
    st.tl.evaluate(test, layer_pred="pred")  # without highly_predictive=: the recorded genes
    assert test.uns["pred_eval"]["params"]["highly_predictive"] == chosen
    assert np.isfinite(test.uns["pred_eval"]["summary"]["pcc_h"])
