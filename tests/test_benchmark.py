"""st.tl.benchmark: the same folds and genes for every model, per-slide and pooled scores, paired comparison."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import stpredict as st
from stpredict.tl._benchmark import paired_comparison, pooled_scores


@pytest.fixture(scope="module")
def benchmarked(_crop_norm_session):
    adata = _crop_norm_session.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", st.StPredictWarning)  # one patient: slide folds allowed explicitly
        table = st.tl.benchmark(
            adata, {"ridge": {"model": "ridge"}, "ridge_pcs": {"model": "ridge", "model_params": {"n_pcs": 5}}},
            splits="leave_one_slide_out", allow_shared_patients=True, gene_selection={"n_genes": 30},
            show_progress_bar=False,
        )  # fmt: skip
    return adata, table


def test_rows_per_slide_and_pooled_recomputed_by_hand(benchmarked):
    adata, table = benchmarked
    assert set(table["model"]) == {"ridge", "ridge_pcs"}
    for model, rows in table.groupby("model"):
        assert sorted(rows["library_id"]) == ["C2", "C3", "C4", "pooled"]
        predicted = adata.obsm[f"benchmark_{model}"]
        # per slide: each gene's Pearson within the slide, averaged over genes
        for lib in ("C2", "C3", "C4"):
            spots = (adata.obs["library_id"] == lib).to_numpy()
            genes = predicted.columns[predicted[spots].notna().all(axis=0)]
            truth = adata[spots, genes].layers["log1p"]
            r = [np.corrcoef(truth[:, j], predicted.loc[spots, g])[0, 1] for j, g in enumerate(genes)]
            assert rows.set_index("library_id").loc[lib, "pcc_m"] == pytest.approx(np.nanmean(r), abs=1e-6)
        # pooled: every held-out spot together, per gene over the spots where it was predicted
        r = []
        for g in predicted.columns:
            where = predicted[g].notna().to_numpy()
            r.append(np.corrcoef(adata[where, g].layers["log1p"].ravel(), predicted.loc[where, g])[0, 1])
        assert rows.set_index("library_id").loc["pooled", "pcc_m"] == pytest.approx(np.mean(r), abs=1e-6)
    comparison = adata.uns["benchmark"]["comparison"]
    assert comparison["model"].tolist() == ["ridge_pcs"] and comparison["n_slides"].item() == 3
    assert adata.uns["benchmark"]["params"]["models"]["ridge_pcs"]["model_params"] == {"n_pcs": 5}
    assert st.pl.benchmark(adata, show=False).get_ylabel() == "PCC(M) per held-out slide"


def test_pooling_rewards_what_differs_between_slides_only():
    """Predictions that know only each slide's level: pooled Pearson near 1, per-slide undefined (constant)."""
    rng = np.random.default_rng(0)
    level = np.repeat([0.0, 2.0, 4.0], 50)
    truth = level[:, None] + rng.normal(size=(150, 3))
    adata = st.datasets.her2st_crop()[:150, :3].copy()
    adata.obs["library_id"] = np.repeat(["a", "b", "c"], 50)
    adata.layers["log1p"] = truth.astype(np.float32)
    adata.obsm["p"] = pd.DataFrame(np.repeat(level[:, None], 3, axis=1), index=adata.obs_names, columns=adata.var_names)
    pooled = pooled_scores(adata, "p", "log1p", ["a", "b", "c"])["pcc_m"]
    assert pooled > 0.8
    per_slide = st.tl.evaluate(adata, layer_true="log1p", layer_pred="p", inplace=False)
    assert per_slide["pearson"].isna().all()  # nothing within a slide is predicted


def test_paired_comparison_of_known_differences():
    slides = [f"s{i}" for i in range(8)]
    reference = np.linspace(0.1, 0.4, 8)
    better = reference + np.array([0.05, 0.04, 0.06, 0.05, 0.03, 0.07, 0.05, 0.05])
    table = pd.DataFrame(
        {
            "model": ["ref"] * 8 + ["new"] * 8 + ["ref", "new"],
            "library_id": slides * 2 + ["pooled"] * 2,
            "pcc_m": [*reference, *better, 0.9, 0.1],
        }
    )  # fmt: skip  (the pooled rows must not enter the paired comparison)
    row = paired_comparison(table, "ref").iloc[0]
    assert row["mean_difference"] == pytest.approx(0.05) and row["wins"] == 8 and row["n_slides"] == 8
    assert row["ci_low"] <= 0.05 <= row["ci_high"] and row["ci_low"] > 0
    assert row["p_value"] == pytest.approx(2 / 2**8)  # all 8 signs positive: the exact two-sided test
    with pytest.raises(ValueError, match="reference 'ridge' is not among"):
        paired_comparison(table, "ridge")


def test_bad_model_lists_are_refused_before_anything_runs(crop_norm):
    with pytest.raises(ValueError, match="named twice"):
        st.tl.benchmark(crop_norm, ["ridge", "ridge"])
    with pytest.raises(ValueError, match="reference 'ridge' is not among the models"):
        st.tl.benchmark(crop_norm, ["mlp"])
    with pytest.raises(ValueError, match=r"models\['x'\] must be .*unknown key\(s\) \['params'\]"):
        st.tl.benchmark(crop_norm, {"x": {"model": "ridge", "params": {}}}, reference=None)
