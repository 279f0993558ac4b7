"""SEPAL: delta targets from training spots, a frozen stage 1 (linear or CNN), the stage-2 correction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import stpredict as st
from stpredict.models.sepal._model import SepalNet

GENES = ["ERBB2", "GNAS", "FASN", "CD24", "KRT19"]
TINY_CNN = {"stage1": "cnn", "encoder_epochs": 2, "encoder_input_size": 32, "max_epochs": 5}


def _fit(train, **params):
    params = {"stage1": "linear", "max_epochs": 5, **params}
    return st.tl.fit(train, model="sepal", genes=GENES, layer="log1p", model_params=params)


def test_deltas_are_from_the_training_mean(split):
    train, test = split
    model = _fit(train, stage2=False).model
    expected = train[:, GENES].layers["log1p"].mean(axis=0)
    np.testing.assert_allclose(model.scale_out_.mean.numpy(), expected, rtol=1e-5)
    assert not _fit(train, stage2=False, deltas=False).model.scale_out_.mean.numpy().any()  # the ablation


def test_stage_one_is_frozen_during_stage_two(split):
    train, _ = split
    local = _fit(train, stage2=False).model.net_.head.state_dict()
    both = _fit(train).model.net_.head.state_dict()
    for name, value in local.items():
        np.testing.assert_array_equal(both[name].numpy(), value.numpy())


def test_stage_two_corrects_stage_one_with_neighbours(split):
    train, test = split
    local = _fit(train, stage2=False).predict(test, copy=True).obsm["pred_sepal"].to_numpy()
    spatial = _fit(train, n_hops=2).predict(test, copy=True).obsm["pred_sepal"].to_numpy()
    assert not np.allclose(local, spatial)
    assert "pred_sepal_grid_connectivities" in _fit(train).predict(test, copy=True).obsp
    with pytest.raises(ValueError, match="positions must be one of"):
        _fit(train, positions="multiply")
    with pytest.raises(ValueError, match="stage1 must be one of"):
        _fit(train, stage1="vit")


def test_cnn_stage_one_is_trained_on_pixels_then_frozen(split):
    """The default stage 1 trains a CNN on the training patches; stage 2 leaves the CNN and its head as they were."""
    train, test = split
    only = st.tl.fit(train, model="sepal", genes=GENES, model_params={**TINY_CNN, "stage2": False})
    both = st.tl.fit(train, model="sepal", genes=GENES, model_params=TINY_CNN)
    untrained = SepalNet(
        0,
        len(GENES),
        hidden=[],
        conv="GraphConv",
        positions="add",
        stage2=False,
        encoder=type(only.model.net_.encoder)("resnet18", 32),
    )
    first = next(iter(untrained.encoder.state_dict()))
    assert not torch.equal(only.model.net_.encoder.state_dict()[first], untrained.encoder.state_dict()[first])
    for part in ("encoder", "head", "scale_in"):
        trained, kept = getattr(only.model.net_, part).state_dict(), getattr(both.model.net_, part).state_dict()
        for name, value in trained.items():
            torch.testing.assert_close(kept[name], value, rtol=0, atol=0, msg=f"{part}.{name} changed in stage 2")
    assert only.use_rep is None and "from the images" in repr(only)
    assert np.isfinite(only.validation.selected["encoder_loss"])
    prediction = both.predict(test, copy=True).obsm["pred_sepal"]
    assert prediction.shape == (test.n_obs, len(GENES)) and np.isfinite(prediction.to_numpy()).all()
    with pytest.raises(ValueError, match="learns its own representation.*'stage1': 'linear'"):
        st.tl.fit(train, model="sepal", genes=GENES, use_rep="X_handcrafted", model_params=TINY_CNN)


def test_folding_the_input_scaling_into_the_head_keeps_its_output():
    net = SepalNet(6, 3, hidden=[], conv="GraphConv", positions="add", stage2=False)
    x = torch.randn(20, 6) * 3 + 2
    before = net.head(x)
    net.scale_in.set(x.numpy())
    net.fold_scaling_into_head()
    torch.testing.assert_close(net.local(x), before, rtol=1e-5, atol=1e-5)


def test_test_slide_expression_never_reaches_the_fitted_model(_crop_norm_session):
    """Cross-validation with the held-out slide's expression scrambled gives the same predictions."""
    adata = _crop_norm_session.copy()
    fold = st.tl.Fold("C4", train=["C2", "C3"], test=["C4"])
    options = {
        "splits": [fold],
        "model": "sepal",
        "genes": GENES,
        "show_progress_bar": False,
        "model_params": {"stage1": "linear", "max_epochs": 5},
    }
    st.tl.cross_validate(adata, **options)
    scrambled = adata.copy()
    is_test = (scrambled.obs["library_id"] == "C4").to_numpy()
    rng = np.random.default_rng(0)
    scrambled.layers["log1p"][is_test] = rng.normal(size=(is_test.sum(), adata.n_vars))
    st.tl.cross_validate(scrambled, **options)
    np.testing.assert_array_equal(scrambled.obsm["cv_sepal"].to_numpy(), adata.obsm["cv_sepal"].to_numpy())


@pytest.mark.parametrize(
    ("params", "factor"), [({"stage1": "linear"}, 0.97), ({**TINY_CNN, "stage2": False, "encoder_epochs": 8}, 0.9)]
)
def test_training_loss_decreases(split, params, factor):
    """Stage 2 on a linear stage 1 (40 epochs; it starts from stage 1's fit), and the CNN stage 1 (8 epochs)."""
    train, _ = split
    predictor = _fit(train, **{"max_epochs": 40, "patience": 40, **params})
    loss = predictor.validation.history["train_loss"].to_numpy()
    assert loss[-3:].mean() < factor * loss[:3].mean()
    if params["stage1"] == "linear":  # stage 2's full-batch-like steps: steadily
        assert (np.diff(loss) < 0).mean() > 0.8


def test_ridge_stage_one_is_the_ridge_model_on_the_non_held_slides(split):
    """stage1='ridge' is model='ridge' fitted on the training slides that stage 2 does not validate on."""
    train, test = split
    sepal = _fit(train, stage1="ridge", stage2=False)
    (held,) = sepal.validation.held_out
    fitted_on = train[train.obs["library_id"] != held].copy()
    ridge = st.tl.fit(fitted_on, model="ridge", genes=GENES)
    np.testing.assert_allclose(
        sepal.predict(test, copy=True).obsm["pred_sepal"].to_numpy(),
        ridge.predict(test, copy=True).obsm["pred_ridge"].to_numpy(),
        rtol=1e-4,
        atol=1e-4,
    )
    corrected = _fit(train, stage1="ridge", max_epochs=3).predict(test, copy=True).obsm["pred_sepal"].to_numpy()
    assert np.isfinite(corrected).all()


def test_cnn_stage_one_starts_from_a_checkpoint(split, tmp_path):
    """encoder_checkpoint: the CNN starts from those weights (and their input scaling); the saved model holds them."""
    train, test = split
    encoder = st.tl.train_encoder(
        train, genes=GENES, input_size=32, epochs=1, batch_size=16, key_added=None, show_progress_bar=False
    )
    path = encoder.save(tmp_path / "encoder.pt")
    params = {**TINY_CNN, "stage2": False, "encoder_epochs": 0, "encoder_checkpoint": str(path)}
    predictor = st.tl.fit(train, model="sepal", genes=GENES, model_params=params)
    for name, value in encoder.model.state_dict().items():
        torch.testing.assert_close(predictor.model.net_.encoder.backbone.state_dict()[name], value)
    torch.testing.assert_close(predictor.model.net_.encoder.pixel_mean, torch.tensor(encoder.spec.mean))
    reloaded = st.tl.load_model(predictor.save(tmp_path / "sepal.stpredict"))
    path.unlink()  # the model file is self-contained
    np.testing.assert_array_equal(
        reloaded.predict(test, copy=True).obsm["pred_sepal"].to_numpy(),
        predictor.predict(test, copy=True).obsm["pred_sepal"].to_numpy(),
    )
