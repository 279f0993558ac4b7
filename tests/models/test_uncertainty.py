"""Prediction intervals, per-gene reliability and the out-of-distribution score."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from PIL import Image

import stpredict as st
from stpredict.io import source_image_path
from stpredict.models._conformal import conformal_quantile

GENES = ["ERBB2", "GNAS", "FASN"]


def test_conformal_quantile_by_hand():
    scores = np.array([[0.3, 5.0], [0.1, 4.0], [0.2, 3.0], [0.5, 2.0], [0.4, 1.0]])  # n = 5
    # level 0.5: rank ceil(6 * 0.5) = 3 -> third smallest per column
    np.testing.assert_array_equal(conformal_quantile(scores, 0.5), [0.3, 3.0])
    # level 0.8: rank ceil(4.8) = 5 -> the largest
    np.testing.assert_array_equal(conformal_quantile(scores, 0.8), [0.5, 5.0])
    # level 0.9: rank ceil(5.4) = 6 > 5 -> unbounded
    assert np.isinf(conformal_quantile(scores, 0.9)).all()
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        conformal_quantile(scores, 1.0)


def heteroscedastic_slides(n_slides: int = 8, side: int = 12, seed: int = 0) -> ad.AnnData:
    """Slides whose 3 genes are linear in 8 features, with noise 10x larger where feature 0 is high."""
    rng = np.random.default_rng(seed)
    n = side * side
    rows, cols = np.divmod(np.arange(n), side)
    frames, features = [], []
    for k in range(n_slides):
        features.append(rng.normal(size=(n, 8)))
        frames.append(
            pd.DataFrame(
                {"library_id": f"S{k}", "array_row": rows, "array_col": cols}, index=[f"S{k}_{i}" for i in range(n)]
            )
        )
    obs = pd.concat(frames)
    obs["library_id"] = obs["library_id"].astype("category")
    x = np.vstack(features).astype(np.float32)
    weights = rng.normal(size=(8, 3))
    weights[0] = 1.5  # feature 0 drives every gene, so the predicted profile knows where it is high
    noise_sd = np.where(x[:, :1] > 0.5, 1.0, 0.1)
    y = x @ weights + noise_sd * rng.normal(size=(len(x), 3)) + 5
    spatial = np.column_stack([cols, rows]).astype(float)
    spatial = np.tile(spatial, (n_slides, 1)) * 100
    out = ad.AnnData(X=y.astype(np.float32), obs=obs, obsm={"X_rep": x, "spatial": spatial})
    out.var_names = ["g0", "g1", "g2"]
    return out


@pytest.fixture(scope="module")
def calibrated():
    adata = heteroscedastic_slides()
    test_slides = ["S6", "S7"]
    is_test = adata.obs["library_id"].isin(test_slides).to_numpy()
    train, test = adata[~is_test].copy(), adata[is_test].copy()
    predictor = st.tl.fit(train, genes=["g0", "g1", "g2"], layer=None, use_rep="X_rep", calibrate=True)
    return predictor, test


def _coverage(predictor, test, level, method):
    out = test.copy()
    predictor.predict(out, key_added="p", interval=level, interval_method=method)
    lower, upper = out.obsm["p_lower"].to_numpy(), out.obsm["p_upper"].to_numpy()
    inside = (out.X >= lower) & (out.X <= upper)
    return out, float(inside.mean()), float((upper - lower).mean())


@pytest.mark.parametrize("method", ["adaptive", "constant"])
def test_intervals_cover_at_the_nominal_level_and_contain_the_prediction(calibrated, method):
    predictor, test = calibrated
    for level in (0.8, 0.9):
        out, coverage, _ = _coverage(predictor, test, level, method)
        # 2 x 144 spots x 3 genes: the binomial standard error at 0.9 is ~0.01
        assert abs(coverage - level) < 0.05, (level, coverage)
        prediction = out.obsm["p"].to_numpy()
        assert (out.obsm["p_lower"].to_numpy() <= prediction).all() and (
            prediction <= out.obsm["p_upper"].to_numpy()
        ).all()
        assert out.uns["p"]["interval"]["level"] == level and out.uns["p"]["interval"]["method"] == method


def test_adaptive_intervals_are_narrower_at_equal_coverage(calibrated):
    predictor, test = calibrated
    _, adaptive_coverage, adaptive_width = _coverage(predictor, test, 0.9, "adaptive")
    _, constant_coverage, constant_width = _coverage(predictor, test, 0.9, "constant")
    assert adaptive_coverage > 0.85 and constant_coverage > 0.85
    assert adaptive_width < 0.8 * constant_width  # the noise is 10x larger on ~30 % of the spots
    table = st.tl.interval_coverage(predictor, _coverage(predictor, test, 0.9, "adaptive")[0], key="p", layer=None)
    assert set(table["method"]) == {"adaptive", "constant"} and table["coverage"].between(0.4, 1).all()
    assert table.groupby("method")["width"].apply(lambda w: w.is_monotonic_increasing).all()


def test_intervals_survive_save_and_load_bit_identically(calibrated, tmp_path):
    predictor, test = calibrated
    before, _, _ = _coverage(predictor, test, 0.9, "adaptive")
    loaded = st.tl.load_model(predictor.save(tmp_path / "model.stpredict"))
    after, _, _ = _coverage(loaded, test, 0.9, "adaptive")
    for key in ("p_lower", "p_upper"):
        np.testing.assert_array_equal(before.obsm[key].to_numpy(), after.obsm[key].to_numpy())
    np.testing.assert_array_equal(before.obs["p_ood"], after.obs["p_ood"])
    pd.testing.assert_frame_equal(predictor.gene_reliability(), loaded.gene_reliability())


def test_reliability_separates_a_predictable_gene_from_noise():
    adata = heteroscedastic_slides(n_slides=6)
    # g2: noise, nothing to predict (by design a noise gene is flagged in up to 5 % of draws: 0 of 20 seeds
    # were when this test was written)
    adata.X[:, 2] = np.random.default_rng(10).normal(size=adata.n_obs) + 5
    predictor = st.tl.fit(adata, genes=["g0", "g1", "g2"], layer=None, use_rep="X_rep", calibrate=True)
    table = predictor.gene_reliability()
    assert table.loc["g0", "reliable"] and table.loc["g1", "reliable"] and not table.loc["g2", "reliable"]
    assert table.loc["g0", "expected_pearson"] > 0.8 and abs(table.loc["g2", "expected_pearson"]) < 0.1
    assert table.loc["g0", "ci_low"] > 0 > table.loc["g2", "ci_low"]
    assert set(predictor.highly_predictive(3, reliable_only=True)) == {"g0", "g1"}
    assert len(predictor.highly_predictive(3)) == 3


def test_uncalibrated_or_bad_requests_get_clear_errors(crop_norm):
    train = crop_norm[crop_norm.obs.library_id != "C4"].copy()
    test = crop_norm[crop_norm.obs.library_id == "C4"].copy()
    predictor = st.tl.fit(train, genes=GENES)
    with pytest.raises(ValueError, match="calibrate=True"):
        predictor.predict(test, interval=0.9)
    with pytest.raises(ValueError, match="calibrate=True"):
        predictor.gene_reliability()
    with pytest.raises(ValueError, match="calibrate must be"):
        st.tl.fit(train, genes=GENES, calibrate=1)
    calibrated = st.tl.fit(train, genes=GENES, calibrate=2)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        calibrated.predict(test, interval=90)
    with pytest.raises(ValueError, match="interval_method"):
        calibrated.predict(test, interval=0.9, interval_method="wide")
    calibrated.predict(test)
    with pytest.raises(KeyError, match="interval=0.9"):
        st.pl.prediction(test, GENES[:1], layer_pred="pred_ridge", uncertainty=True, show=False)
    assert "pred_ridge_lower" not in test.obsm  # no interval asked, none written


def test_uncertainty_plots_draw_the_intervals(crop_norm):
    train = crop_norm[crop_norm.obs.library_id != "C4"].copy()
    test = crop_norm[crop_norm.obs.library_id == "C4"].copy()
    predictor = st.tl.fit(train, genes=GENES, calibrate=2)
    predictor.predict(test, interval=0.9)
    fig = st.pl.prediction(test, GENES[:2], layer_pred="pred_ridge", uncertainty=True, show=False)
    width_panel = fig.axes[2]
    assert "90% interval width" in width_panel.get_title()
    width = test.obsm["pred_ridge_upper"]["ERBB2"] - test.obsm["pred_ridge_lower"]["ERBB2"]
    np.testing.assert_allclose(width_panel.collections[0].get_array(), width.to_numpy(), rtol=1e-6)
    table = st.tl.interval_coverage(predictor, test, levels=[0.8, 0.9])
    ax = st.pl.calibration_curve(table, show=False)
    np.testing.assert_allclose(ax.lines[1].get_ydata(), table.query("method == 'adaptive'")["coverage"])
    ax = st.pl.ood(test, "pred_ridge", show=False)
    median = ax.collections[0].get_offsets()[0][1]  # the slide's diamond, over the box of its spots' scores
    assert median == pytest.approx(test.uns["pred_ridge"]["ood"]["slides"]["C4"])


def _image_copy(adata, library_id, tmp_path, transform, suffix):
    with Image.open(source_image_path(adata, library_id)) as image:
        path = tmp_path / f"{library_id}_{suffix}.png"
        transform(image.convert("RGB")).save(path)
    copy = adata.copy()
    copy.uns["spatial"][library_id]["metadata"]["source_image_path"] = str(path)
    del copy.obsm["X_handcrafted"]  # recomputed from the changed image
    return copy


def test_ood_score_ranks_shifted_and_rescaled_copies_above_the_slide(crop_norm, tmp_path):
    train = crop_norm[crop_norm.obs.library_id != "C4"].copy()
    test = crop_norm[crop_norm.obs.library_id == "C4"].copy()
    predictor = st.tl.fit(train, genes=GENES, use_rep="X_handcrafted")

    def stain_shift(image):  # another lab's stain: stronger, bluer haematoxylin
        rgb = np.asarray(image, dtype=float)
        return Image.fromarray(np.clip(rgb * [0.75, 0.8, 1.05] - [10, 10, 0], 0, 255).astype(np.uint8))

    def low_resolution(image):
        return image.resize((image.width // 4, image.height // 4)).resize(image.size)

    scores = {}
    for name, slide in {
        "slide": test.copy(),
        "stain": _image_copy(test, "C4", tmp_path, stain_shift, "stain"),
        "lowres": _image_copy(test, "C4", tmp_path, low_resolution, "lowres"),
    }.items():
        expect = pytest.warns(st.StPredictWarning, match="look unlike") if name == "stain" else _no_ood_warning()
        with expect:
            predictor.predict(slide)
        scores[name] = slide.uns["pred_ridge"]["ood"]["slides"]["C4"]
        assert slide.obs["pred_ridge_ood"].notna().all()
    # measured: slide 0.49, low-resolution copy 0.81 (below the warning), stain-shifted copy 2.4
    assert scores["slide"] < 0.7 < scores["lowres"] < 1 < scores["stain"], scores


class _no_ood_warning:
    def __enter__(self):
        import warnings

        self._catch = warnings.catch_warnings(record=True)
        self._caught = self._catch.__enter__()
        warnings.simplefilter("always")

    def __exit__(self, *args):
        self._catch.__exit__(*args)
        messages = [str(w.message) for w in self._caught]
        assert not any("look unlike the training slides" in m for m in messages), messages


@pytest.mark.shared_data
def test_ood_score_ranks_another_tissue_above_a_held_out_training_like_slide(crop_norm):
    from helpers import shared

    train = crop_norm[crop_norm.obs.library_id != "C4"].copy()
    predictor = st.tl.fit(train, genes=GENES, use_rep="X_handcrafted")
    held_out = crop_norm[crop_norm.obs.library_id == "C4"].copy()
    mob = st.datasets.mob(["MOB1"], path=shared("mob"))
    mob = mob[:80, []].copy()  # image only (mouse genes); 80 spots: a median, and a short feature computation
    for slide in (held_out, mob):
        slide.obsm.pop("X_handcrafted", None)
    predictor.predict(held_out)
    with pytest.warns(st.StPredictWarning, match="look unlike the training slides"):
        predictor.predict(mob)
    her2st_score = held_out.uns["pred_ridge"]["ood"]["slides"]["C4"]
    mob_score = mob.uns["pred_ridge"]["ood"]["slides"]["MOB1"]
    assert her2st_score < 1 < mob_score, (her2st_score, mob_score)


def test_intervals_warn_for_a_patient_the_calibration_never_saw(calibrated):
    predictor, test = calibrated  # calibrated on held-out slides, no patient recorded
    new_patient = test.copy()
    new_patient.obs["patient"] = "P9"
    with pytest.warns(st.StPredictWarning, match=r"patient\(s\) \['P9'\] are new"):
        predictor.predict(new_patient, interval=0.9)


def test_fit_predict_writes_intervals(crop_norm):
    train = crop_norm[crop_norm.obs.library_id != "C4"].copy()
    test = crop_norm[crop_norm.obs.library_id == "C4"].copy()
    st.tl.fit_predict(train, test, genes=GENES, interval=0.8)
    assert (test.obsm["pred_ridge_lower"] < test.obsm["pred_ridge_upper"]).all().all()
    assert test.uns["pred_ridge"]["interval"]["level"] == 0.8
