"""ST-Net: a CNN on each spot's patch; orientations averaged at prediction; the paper's SGD; initial weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import stpredict as st
from stpredict.models import get_model
from stpredict.models.stnet import PAPER_PARAMS, STNet

#: small settings for the shared contract tests (tests/models/test_contract.py)
CONTRACT_PARAMS = {"input_size": 32, "max_epochs": 2}
TINY = {"input_size": 32}


@pytest.fixture(scope="module")
def pixel_signal(_crop_norm_session):
    """The crop with a gene made from each patch's darkness: the only way to predict it is from the pixels."""
    adata = _crop_norm_session.copy()
    patches = st.pp.extract_patches(adata)
    darkness = 1 - patches[:, 56:168, 56:168].mean(axis=(1, 2, 3)) / 255  # the patch's centre
    rng = np.random.default_rng(0)
    signal = (darkness - darkness.mean()) / darkness.std()
    adata.layers["log1p"][:, 0] = signal + 0.3 * rng.normal(size=adata.n_obs) + 3
    gene = adata.var_names[0]
    is_test = (adata.obs["library_id"] == "C4").to_numpy()
    return adata[~is_test].copy(), adata[is_test].copy(), gene


def test_learns_a_signal_in_the_pixels_of_held_out_spots(pixel_signal):
    train, test, gene = pixel_signal
    predictor = st.tl.fit(train, model="stnet", genes=[gene], model_params={**TINY, "max_epochs": 15, "patience": 15})
    predicted = predictor.predict(test, copy=True, key_added="p").obsm["p"][gene].to_numpy()
    r = np.corrcoef(predicted, test[:, gene].layers["log1p"].ravel())[0, 1]
    assert r > 0.6, r  # a model that ignored the pixels would predict a constant (r undefined / ~0)


def test_prediction_averages_the_eight_orientations():
    trunk, spec = st.pp.load_encoder("resnet18", random_weights=True)
    net = STNet(trunk, spec.dim, 3).eval()
    pixels = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        once = net({"pixels": pixels})
        turned = net({"pixels": torch.rot90(pixels, 1, dims=(2, 3)).flip(3)})
        net.average_orientations = False
        single = net({"pixels": pixels})
    torch.testing.assert_close(turned, once, rtol=1e-4, atol=1e-5)  # invariant to the orientation of the patch
    assert not torch.allclose(single, once)  # the ablation does not average


def test_papers_configuration_is_accepted_and_trains_by_sgd_with_momentum():
    model = get_model("stnet")(**PAPER_PARAMS)
    assert model.params["arch"] == "densenet121" and model.params["input_size"] == 224
    model.n_genes_ = 4
    net = model._net()
    optimizer = net.optimizer(model.train_settings)
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["momentum"] == 0.9
    assert optimizer.defaults["lr"] == 1e-6
    with pytest.raises(ValueError, match="arch must be one of"):
        get_model("stnet")(arch="vgg11")


def test_fine_tunes_from_a_local_checkpoint_with_its_input_scaling(split, tmp_path):
    train, _ = split
    trunk, _ = st.pp.load_encoder("resnet18", random_weights=True)
    torch.save(trunk.state_dict(), tmp_path / "start.pt")
    params = {**TINY, "checkpoint": str(tmp_path / "start.pt"), "max_epochs": 1, "lr": 0.0, "weight_decay": 0.0}
    model = st.tl.fit(train, model="stnet", genes=["ERBB2"], model_params=params).model
    for name, value in trunk.state_dict().items():
        if value.dtype.is_floating_point and "running" not in name:  # batch-norm statistics move in training
            torch.testing.assert_close(model.net_.trunk.state_dict()[name], value)
    assert model.net_.pixel_mean.tolist() == pytest.approx([0.485, 0.456, 0.406])  # ImageNet's, the weights'
