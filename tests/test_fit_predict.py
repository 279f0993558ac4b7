from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import stpredict as st
from stpredict._device import resolve_device


def _split(adata, test="C4"):
    is_test = adata.obs["library_id"] == test
    return adata[~is_test].copy(), adata[is_test].copy()


def _pcc(test, key):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return st.tl.evaluate(test, layer_pred=key, inplace=False)["pearson"].mean()


def test_ridge_learns_from_images_not_noise(crop_norm):
    train, test = _split(crop_norm)
    st.pp.select_genes(train, n_genes=50)
    st.tl.fit_predict(train, test)
    real = _pcc(test, "pred_ridge")
    rng = np.random.default_rng(0)
    train.obsm["X_shuffled"] = rng.permutation(train.obsm["X_handcrafted"])
    test.obsm["X_shuffled"] = rng.permutation(test.obsm["X_handcrafted"])
    st.tl.fit_predict(train, test, use_rep="X_shuffled", key_added="shuffled")
    shuffled = _pcc(test, "shuffled")
    assert real > 0.2  # measured 0.34 on held-out C4 (50 most expressed genes)
    assert real > shuffled + 0.15


def test_outputs_and_recorded_parameters(crop_norm):
    train, test = _split(crop_norm)
    genes = ["ERBB2", "GNAS", "FASN", "CD24"]
    st.tl.fit_predict(train, test, genes=genes, key_added="p")
    frame = test.obsm["p"]
    assert frame.columns.tolist() == genes and (frame.index == test.obs_names).all()
    assert "p" not in test.layers  # 4 of 13279 genes: no layer almost all NaN (full_layer=True writes it)
    info = test.uns["p"]
    assert info["train_slides"] == ["C2", "C3"] and info["genes"] == genes and info["model"] == "ridge"
    assert info["validation"]["groups"] == "slide"
    assert info["validation"]["selected"]["alpha"] in info["params"]["alphas"]
    assert info["use_rep"] == "X_handcrafted" and info["device"] == "cpu"


def test_training_data_untouched_and_copy_semantics(crop_norm):
    train, test = _split(crop_norm)
    train_before = train.copy()
    out = st.tl.fit_predict(train, test, genes=["ERBB2"], copy=True)
    assert "pred_ridge" in out.obsm and "pred_ridge" not in test.obsm and "pred_ridge" not in test.layers
    assert set(train.uns) == set(train_before.uns) and set(train.obsm) == set(train_before.obsm)
    np.testing.assert_array_equal(train.layers["log1p"], train_before.layers["log1p"])


def test_test_expression_is_never_used(crop_norm):
    train, test = _split(crop_norm)
    st.tl.fit_predict(train, test, genes=["ERBB2", "GNAS"])
    before = test.obsm["pred_ridge"].to_numpy().copy()
    test.layers["log1p"] = np.random.default_rng(0).normal(size=test.shape).astype(np.float32)
    st.tl.fit_predict(train, test, genes=["ERBB2", "GNAS"])
    np.testing.assert_array_equal(test.obsm["pred_ridge"].to_numpy(), before)


def test_image_only_slide_gets_predictions(crop_norm):
    train, _ = _split(crop_norm)
    files = st.datasets.her2st_crop_files()["C4"]
    image_only = st.io.read_st(None, files["spots"], files["image"], library_id="C4")
    st.tl.fit_predict(train, image_only, genes=["ERBB2", "GNAS"])  # features computed from the image
    assert image_only.obsm["pred_ridge"].shape == (image_only.n_obs, 2)
    assert np.isfinite(image_only.obsm["pred_ridge"].to_numpy()).all()
    assert "X_handcrafted" not in image_only.obsm  # computed on the fly, not written


def test_default_genes_come_from_training_slides(crop_norm):
    train, test = _split(crop_norm)
    st.tl.fit_predict(train, test)
    expected = st.pp.select_genes(train, n_genes=250, copy=True).uns["selected"]["genes"]
    assert test.uns["pred_ridge"]["genes"] == expected


def test_bad_input_errors(crop_norm):
    train, test = _split(crop_norm)
    with pytest.raises(ValueError, match=r"\['C3'\].*both"):
        st.tl.fit_predict(train, crop_norm[crop_norm.obs["library_id"] == "C3"].copy(), genes=["ERBB2"])
    renamed = test.copy()
    renamed.var_names = [f"ENSG{i}" for i in range(renamed.n_vars)]
    with pytest.raises(ValueError, match="shares none"):
        st.tl.fit_predict(train, renamed, genes=["ERBB2"])
    with pytest.raises(ValueError, match="Unknown model"):
        st.tl.fit_predict(train, test, model="nope")
    with pytest.raises(KeyError, match="X_uni"):
        st.tl.fit_predict(train, test, genes=["ERBB2"], use_rep="X_uni")
    with pytest.raises(KeyError, match="smoothed"):
        st.tl.fit_predict(train, test, genes=["ERBB2"], layer="smoothed")
    with pytest.raises(KeyError, match="not found in adata_train"):
        st.tl.fit_predict(train, test, genes=["NOTAGENE"])
    with pytest.raises(TypeError, match=r"\['alpha'\].*accepted model_params: alphas, n_pcs"):
        st.tl.fit_predict(train, test, genes=["ERBB2"], model_params={"alpha": 1.0})
    with pytest.raises(ValueError, match="more than once"):
        st.tl.fit_predict(train, test, genes=["ERBB2", "ERBB2"])


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="machine has a GPU")
def test_requesting_missing_gpu_is_an_error():
    with pytest.raises(RuntimeError, match="no GPU"):
        resolve_device("cuda", needed=True)
    assert resolve_device("auto", needed=True) == "cpu"


def test_custom_model_plugs_into_registry(crop_norm):
    class MeanModel(st.tl.Model):
        def fit(self, inputs, targets):
            self.mean_ = targets.mean(axis=0)
            self.validation_ = st.tl.Validation("slide", [], 0.0, np.zeros(targets.shape[1]))
            return self

        def predict(self, inputs):
            return np.tile(self.mean_, (inputs.n_spots, 1))

        def state_dict(self):
            return {"mean": self.mean_}

        def load_state_dict(self, state):
            self.mean_ = state["mean"]

    from stpredict.models._base import _REGISTRY

    st.tl.register_model("test_mean")(MeanModel)
    try:
        train, test = _split(crop_norm)
        st.tl.fit_predict(train, test, model="test_mean", genes=["ERBB2"])
        assert np.allclose(test.obsm["pred_test_mean"]["ERBB2"], train[:, "ERBB2"].layers["log1p"].mean())
        with pytest.raises(ValueError, match="already registered"):
            st.tl.register_model("test_mean")(MeanModel)
    finally:
        _REGISTRY.pop("test_mean", None)


def test_cross_validate_is_honest_and_records_everything(crop_norm):
    folds = st.tl.make_splits(crop_norm, method="leave_one_slide_out", allow_shared_patients=True)
    table = st.tl.cross_validate(
        crop_norm,
        splits=folds,
        use_rep="X_handcrafted",
        gene_selection={"n_genes": 50},
        n_highly_predictive=10,
        show_progress_bar=False,
    )
    assert table["library_id"].tolist() == ["C2", "C3", "C4"]
    assert (table["pcc_m"] > 0.1).all()
    record = crop_norm.uns["cv_ridge"]
    # each held-out slide is predicted by a model that never saw it, with genes chosen without it
    per_gene = record["per_gene"]
    for fold in folds:
        genes = per_gene[per_gene["fold"] == fold.name]["gene"].unique().tolist()
        train = crop_norm[crop_norm.obs["library_id"].isin(fold.train)].copy()
        assert genes == st.pp.select_genes(train, n_genes=50, copy=True).uns["selected"]["genes"]
    assert np.isfinite(crop_norm.obsm["cv_ridge"].to_numpy()).any(axis=1).all()


def test_ridge_validation_scores_each_slide_not_pooled_patients():
    # Feature and target share only a per-slide offset: within every slide they are independent, so the
    # validation Pearson (scored per slide, like PCC(M) on test slides) must be near 0, while pooling a
    # patient's two slides would report a strong correlation.
    from stpredict.models import ModelInputs
    from stpredict.models.ridge import RidgeModel

    rng = np.random.default_rng(0)
    slides = np.repeat(["s1", "s2", "s3", "s4"], 60)
    patients = np.repeat(["P1", "P1", "P2", "P2"], 60)
    offset = np.repeat([0.0, 5.0, 0.0, 5.0], 60)
    features = (offset + rng.normal(size=240))[:, None]
    targets = (offset + rng.normal(size=240))[:, None]
    inputs = ModelInputs(features, rng.uniform(size=(240, 2)), slides.astype(object), patients.astype(object))
    model = RidgeModel(alphas=[1.0]).fit(inputs, targets)
    assert model.validation_.groups == "patient"
    assert abs(model.validation_.gene_pearson[0]) < 0.3


def test_predictions_never_need_a_spots_by_all_genes_layer(crop_norm, monkeypatch, caplog):
    import scanpy as sc

    from stpredict import _predictions

    train, test = crop_norm[crop_norm.obs["library_id"] != "C4"].copy(), crop_norm[crop_norm.obs["library_id"] == "C4"]
    genes = ["ERBB2", "GNAS", "FASN"]
    predictor = st.tl.fit(train, genes=genes)
    small = test.copy()
    predictor.predict(small, full_layer=True)  # asked for: the scanpy layer, equal to obsm, NaN elsewhere
    np.testing.assert_array_equal(small.layers["pred_ridge"][:, small.var_names.get_indexer(genes)],
                                  small.obsm["pred_ridge"].to_numpy())  # fmt: skip
    assert np.isnan(np.delete(small.layers["pred_ridge"], small.var_names.get_indexer(genes), axis=1)).all()
    # by default no layer that would be almost all NaN (3 of 13279 genes predicted), and the log says why
    mostly_empty = test.copy()
    with caplog.at_level("INFO", logger="stpredict"):
        predictor.predict(mostly_empty)
    assert "pred_ridge" not in mostly_empty.layers
    assert "3 of 13279 genes predicted: it would be 100.0 % NaN" in caplog.text
    # a slide holding just the predicted genes: the layer is full, so written
    panel = test[:, genes].copy()
    predictor.predict(panel)
    np.testing.assert_array_equal(panel.layers["pred_ridge"], panel.obsm["pred_ridge"].to_numpy())

    monkeypatch.setattr(_predictions, "FULL_LAYER_AUTO_MAX_BYTES", 100)  # as if the slide were Visium HD
    large = test[:, genes].copy()
    with pytest.warns(st.StPredictWarning, match=r"layer aligned with all 3 genes would take .*prediction_adata"):
        predictor.predict(large)
    assert "pred_ridge" not in large.layers and large.obsm["pred_ridge"].dtypes.eq(np.float32).all()
    # every analysis reads the obsm predictions: same scores as from the layer
    from_obsm = st.tl.evaluate(large, layer_pred="pred_ridge", inplace=False)
    del small.obsm["pred_ridge"]  # now read from the layer
    from_layer = st.tl.evaluate(small, layer_pred="pred_ridge", inplace=False)
    pearson = [table.set_index("gene").loc[genes, "pearson"] for table in (from_obsm, from_layer)]
    np.testing.assert_allclose(*pearson, rtol=1e-6)
    # scanpy plots an AnnData of the predicted genes, sharing spots, positions and images
    view = st.tl.prediction_adata(large, "pred_ridge")
    assert view.var_names.tolist() == genes and view.obsm["spatial"] is large.obsm["spatial"]
    sc.pl.spatial(view, color="ERBB2", library_id="C4", show=False)
    explicit = test.copy()
    st.tl.fit_predict(train, explicit, genes=genes, full_layer=True)  # passed on by fit_predict
    assert "pred_ridge" in explicit.layers
    none = test[:, genes].copy()
    predictor.predict(none, full_layer=False)
    assert "pred_ridge" not in none.layers


def test_cross_validate_keeps_predictions_per_predicted_gene(crop_norm):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", st.StPredictWarning)
        folds = st.tl.make_splits(crop_norm, method="leave_one_slide_out", allow_shared_patients=True)
    crop_norm.layers["unused"] = np.zeros(crop_norm.shape, dtype=np.float32)
    st.tl.cross_validate(crop_norm, splits=folds, gene_selection={"n_genes": 20}, show_progress_bar=False,
                         full_layer=False)  # fmt: skip
    predictions = crop_norm.obsm["cv_ridge"]
    assert predictions.shape[0] == crop_norm.n_obs and 20 <= predictions.shape[1] <= 60  # genes chosen per fold
    assert predictions.notna().any(axis=1).all()  # every spot is predicted in its fold
    assert "cv_ridge" not in crop_norm.layers


@pytest.mark.parametrize(
    ("model", "params"),
    [
        ("ridge", {}),
        ("ensemble", {"models": ["ridge", "ridge_spatial", "mlp"], "member_params": {"mlp": {"max_epochs": 3}}}),
    ],
)
def test_a_held_out_slides_expression_cannot_change_its_cross_validated_predictions(crop_norm, model, params):
    """Permuting the held-out section's expression among its spots changes nothing of its predictions.

    What cross-validation does before a model sees data (gene selection, targets, the ensemble's inner
    cross-validation and member choice) is the same for every model; that no model reads a test slide's
    expression when predicting is the contract's test (tests/models/test_contract.py), for every model.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", st.StPredictWarning)
        folds = st.tl.make_splits(crop_norm, method="leave_one_slide_out", allow_shared_patients=True)
    fold = [f for f in folds if f.test == ["C4"]]
    options = {"model": model, "model_params": params, "splits": fold, "gene_selection": {"n_genes": 30},
               "show_progress_bar": False, "key_added": "cv", "full_layer": False}  # fmt: skip
    permuted = crop_norm.copy()
    held = np.flatnonzero((permuted.obs["library_id"] == "C4").to_numpy())
    order = np.random.default_rng(0).permutation(held)
    permuted.X[held] = crop_norm.X[order]
    for name in permuted.layers:
        permuted.layers[name][held] = crop_norm.layers[name][order]
    st.tl.cross_validate(crop_norm, **options)
    st.tl.cross_validate(permuted, **options)
    c4 = crop_norm.obs_names[held]
    pd.testing.assert_frame_equal(permuted.obsm["cv"].loc[c4], crop_norm.obsm["cv"].loc[c4])
    assert permuted.uns["cv"]["per_gene"]["pearson"].ne(crop_norm.uns["cv"]["per_gene"]["pearson"]).any()
