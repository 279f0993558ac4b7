"""BLEEP: the contrastive loss with soft targets, retrieval of look-alike training spots, the saved bank."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import stpredict as st
from stpredict.models import get_model
from stpredict.models.bleep import BLEEP, PAPER_PARAMS, BleepModel, bleep_loss

#: small settings for the shared contract tests (tests/models/test_contract.py)
CONTRACT_PARAMS = {"input_size": 32, "max_epochs": 2, "batch_size": 64, "top_k": 5}
TINY = {"input_size": 32, "batch_size": 64, "top_k": 10}


@pytest.fixture(scope="module")
def pixel_signal(_crop_norm_session):
    """The crop with a gene made from each patch's darkness: the only way to predict it is from the pixels."""
    adata = _crop_norm_session.copy()
    patches = st.pp.extract_patches(adata)
    darkness = 1 - patches[:, 56:168, 56:168].mean(axis=(1, 2, 3)) / 255
    signal = (darkness - darkness.mean()) / darkness.std()
    adata.layers["log1p"][:, 0] = signal + 0.3 * np.random.default_rng(0).normal(size=adata.n_obs) + 3
    is_test = (adata.obs["library_id"] == "C4").to_numpy()
    return adata[~is_test].copy(), adata[is_test].copy(), adata.var_names[0]


def test_learns_a_signal_in_the_pixels_of_held_out_spots(pixel_signal):
    train, test, gene = pixel_signal
    genes = [gene, *train.var_names[1:20]]  # the expression embedding reads a profile, not one gene
    predictor = st.tl.fit(train, model="bleep", genes=genes, model_params={**TINY, "max_epochs": 20})
    predicted = predictor.predict(test, copy=True, key_added="p").obsm["p"][gene].to_numpy()
    r = np.corrcoef(predicted, test[:, gene].layers["log1p"].ravel())[0, 1]
    assert r > 0.35, r  # retrieval by a random image embedding gives r ~0 (0.49 on 1 thread, more on 2)


def test_loss_is_the_papers_soft_target_cross_entropy():
    torch.manual_seed(0)
    image, spot = torch.randn(6, 4), torch.randn(6, 4)
    logits = spot @ image.T
    targets = torch.softmax((image @ image.T + spot @ spot.T) / 2, dim=-1)
    by_hand = (-(targets * logits.log_softmax(-1)).sum(1) - (targets.T * logits.T.log_softmax(-1)).sum(1)) / 2
    torch.testing.assert_close(bleep_loss(image, spot), by_hand.mean())
    aligned = F.normalize(torch.randn(6, 4), dim=1) * 3
    assert bleep_loss(aligned, aligned) < bleep_loss(aligned, aligned[torch.randperm(6)])


def test_prediction_is_the_mean_of_the_most_similar_references():
    trunk, spec = st.pp.load_encoder("resnet18", random_weights=True)
    net = BLEEP(trunk, spec.dim, 3, dim=8, top_k=2).eval()
    net.bank = torch.randn(7, 3)
    pixels = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        predicted = net({"pixels": pixels})
        queries = F.normalize(net.image_embeddings(pixels), dim=1)
        keys = F.normalize(net.spot_projection(net.bank), dim=1)
    nearest = (queries @ keys.T).argsort(dim=1, descending=True)[:, :2]
    torch.testing.assert_close(predicted, net.bank[nearest].mean(dim=1))


def test_bank_keys_are_embedded_once_per_evaluation_and_again_after_any_change():
    trunk, spec = st.pp.load_encoder("resnet18", random_weights=True)
    net = BLEEP(trunk, spec.dim, 3, dim=8, top_k=2).eval()
    net.bank = torch.randn(7, 3)
    calls = []
    net.spot_projection.register_forward_hook(lambda *_: calls.append(1))
    pixels = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        first = net({"pixels": pixels})
        for _ in range(3):  # more prediction batches reuse the keys
            torch.testing.assert_close(net({"pixels": pixels}), first)
        assert len(calls) == 1
        net.bank = torch.randn(9, 3)  # a new bank
        net({"pixels": pixels})
        assert len(calls) == 2
        net.train().eval()  # weights may have changed while training
        net({"pixels": pixels})
        assert len(calls) == 3
        state = {k: v + 1 for k, v in net.state_dict().items() if k.startswith("spot_projection")}
        net.load_state_dict(state, strict=False)  # new weights loaded
        changed = net({"pixels": pixels})
        assert len(calls) == 4
        keys = F.normalize(net.spot_projection(net.bank), dim=1)  # (a 5th call, by hand)
        queries = F.normalize(net.image_embeddings(pixels), dim=1)
    torch.testing.assert_close(changed, net.bank[(queries @ keys.T).topk(2, dim=1).indices].mean(dim=1))


def test_held_out_spots_retrieve_from_the_other_training_spots_and_the_saved_bank_holds_all(split, monkeypatch):
    train, _ = split
    seen = {}
    finish = BleepModel._finish

    def spy(self, inputs, z, split_):
        seen["training_bank"], seen["train"] = len(self.net_.bank), len(split_.train)
        finish(self, inputs, z, split_)

    monkeypatch.setattr(BleepModel, "_finish", spy)
    model = st.tl.fit(train, model="bleep", genes=["ERBB2", "GNAS"], model_params=CONTRACT_PARAMS).model
    assert seen["training_bank"] == seen["train"] < train.n_obs
    assert len(model.net_.bank) == train.n_obs and "bank" in model.state_dict()


def test_papers_configuration_is_accepted():
    params = get_model("bleep")(**PAPER_PARAMS).params
    assert (params["arch"], params["top_k"], params["batch_size"]) == ("resnet50", 50, 256)
    with pytest.raises(ValueError, match="top_k must be"):
        get_model("bleep")(top_k=0)
