"""The shared Lightning training loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stpredict.models._inputs import ModelInputs
from stpredict.models._train import TensorDictDataset, TrainSettings, fit_network, predict_network
from stpredict.models._validation import held_out_mask, validation_groups


def _inputs(patients, libraries, n=40):
    rng = np.random.default_rng(0)
    return ModelInputs(
        features=rng.normal(size=(n, 3)).astype(np.float32),
        spatial=rng.uniform(0, 1000, size=(n, 2)),
        library=np.asarray(libraries, dtype=object),
        patient=np.asarray(patients, dtype=object),
    )


def test_validation_groups_prefer_patients_then_slides_then_blocks():
    libs = ["s1"] * 10 + ["s2"] * 10 + ["s3"] * 10 + ["s4"] * 10
    groups, kind = validation_groups(_inputs(["A"] * 20 + ["B"] * 20, libs))
    assert kind == "patient" and set(groups) == {"A", "B"}
    groups, kind = validation_groups(_inputs(["A"] * 40, libs))
    assert kind == "slide" and set(groups) == {"s1", "s2", "s3", "s4"}
    groups, kind = validation_groups(_inputs([None] * 40, ["s1"] * 40))
    assert kind == "spatial block" and len(set(groups)) == 5
    mask, held, _, kind = held_out_mask(_inputs(["A"] * 20 + ["B"] * 20, libs))
    assert kind == "patient" and len(held) == 1 and mask.sum() == 20  # a whole patient, never part of one


def _regression(n=600, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = np.column_stack([x[:, 0] * 2 - x[:, 1], np.sin(x[:, 2])]).astype(np.float32)
    y += 0.1 * rng.normal(size=y.shape).astype(np.float32)
    unit = np.zeros(n, dtype=np.int64)
    return TensorDictDataset(x=torch.from_numpy(x), y=torch.from_numpy(y), unit=torch.from_numpy(unit))


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))

    def forward(self, batch):
        return self.body(batch["x"])


def test_loss_decreases_and_best_epoch_is_kept():
    torch.manual_seed(0)
    net = _Net()
    settings = TrainSettings(lr=1e-2, max_epochs=30, patience=30, batch_size=64, monitor="val_loss")
    result = fit_network(net, _regression(), _regression(200, seed=1), settings=settings)
    history = result.history
    assert history["train_loss"].iloc[-1] < 0.5 * history["train_loss"].iloc[0]
    assert result.best_epoch == int(history["val_loss"].idxmin())
    # the network holds the best epoch's weights: its validation loss equals the recorded best
    val = _regression(200, seed=1)
    pred = predict_network(net, val)
    mse = float(((pred - val.tensors["y"].numpy()) ** 2).mean())
    assert mse == pytest.approx(result.best_score, rel=1e-4)


def test_early_stopping_and_seeded_determinism():
    def run():
        torch.manual_seed(0)
        net = _Net()
        # learning rate 0: validation never improves, so training stops after `patience` epochs
        settings = TrainSettings(lr=0.0, max_epochs=50, patience=3, batch_size=64)
        result = fit_network(net, _regression(), _regression(100, seed=1), settings=settings, random_state=3)
        return result, predict_network(net, _regression(50, seed=2))

    first, pred_a = run()
    assert first.stopped_early and len(first.history) == 4
    _, pred_b = run()
    np.testing.assert_array_equal(pred_a, pred_b)


def test_settings_are_checked():
    with pytest.raises(ValueError, match="loss must be one of"):
        TrainSettings(loss="huber")
    with pytest.raises(ValueError, match="monitor"):
        TrainSettings(monitor="train_loss")


def test_pcc_loss_is_scale_free():
    from stpredict.models._nn import pcc_loss

    y = torch.randn(50, 3)
    assert float(pcc_loss(3 * y + 1, y)) == pytest.approx(0.0, abs=1e-6)
    assert float(pcc_loss(-y, y)) == pytest.approx(2.0, abs=1e-6)


def test_device_and_precision_choices():
    from stpredict.models._train import _accelerator, resolve_precision

    assert resolve_precision("auto", "cpu") == "32-true"
    assert resolve_precision("16-mixed", "cpu") == "16-mixed"  # an explicit choice is kept
    assert _accelerator("cuda:1") == {"accelerator": "cuda", "devices": [1]}
    assert _accelerator("cuda") == {"accelerator": "cuda", "devices": 1}
    assert _accelerator("cpu") == {"accelerator": "cpu", "devices": 1}


def test_a_net_with_its_own_training_loss_is_trained_on_it():
    """``training_loss(batch)`` replaces the settings' loss in training; validation still scores ``net(batch)``."""

    class Shrunk(_Net):
        def training_loss(self, batch):  # MSE towards half the targets
            return torch.nn.functional.mse_loss(self(batch), 0.5 * batch["y"])

    torch.manual_seed(0)
    net = Shrunk()
    settings = TrainSettings(lr=1e-2, max_epochs=40, patience=40, batch_size=64, monitor="val_loss")
    fit_network(net, _regression(), None, settings=settings)
    data = _regression(200, seed=1)
    pred, y = predict_network(net, data), data.tensors["y"].numpy()
    slope = float((pred * y).sum() / (y * y).sum())
    assert slope == pytest.approx(0.5, abs=0.1)  # it learned the custom objective, not y itself


def test_pretraining_stages_run_on_the_shared_lightning_loop():
    """train_image_network (SEPAL's stage 1, TRIPLEX's target CNN, st.tl.train_encoder) is trained by Lightning:
    the loop's trainer_params reach it, batch norm trains even if the network came in eval mode, loss falls."""
    from torch import nn

    from stpredict.models._image_training import train_image_network

    torch.manual_seed(0)
    brightness = torch.randn(96, 1)
    images = torch.randn(96, 3, 16, 16) + brightness[:, :, None, None]  # learnable from the pixels
    targets = (brightness - brightness.mean()) / brightness.std()
    network = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(8, 1),
    ).eval()  # fmt: skip
    history = train_image_network(network, images, targets, epochs=15, batch_size=32, lr=1e-2, weight_decay=0)
    assert len(history) == 15 and history[-1] < 0.5 * history[0], history
    assert not network.training and network[1].num_batches_tracked > 0  # BN learnt its statistics, left in eval
    cut = train_image_network(network, images, targets, epochs=15, batch_size=32, lr=1e-2, weight_decay=0,
                              trainer_params={"max_epochs": 2})  # fmt: skip
    assert len(cut) == 2  # the Lightning trainer ran it
    assert train_image_network(network, images, None, epochs=0, batch_size=32, lr=1e-2, weight_decay=0) == []


def test_what_a_fit_reads_once_is_dropped_after_the_fit_even_when_it_fails(split, monkeypatch):
    """NeuralModel keeps ``_read_once`` (here ST-Net's patches of every training spot) only while it fits."""
    import stpredict as st
    from stpredict.models._neural import NeuralModel

    train, _ = split
    seen = {}

    def failing(self, *args, **kwargs):
        seen["model"], seen["read"] = self, self._fit_read
        raise RuntimeError("stopped")

    monkeypatch.setattr(NeuralModel, "_train_net", failing)
    with pytest.raises(RuntimeError, match="stopped"):
        st.tl.fit(train, model="stnet", genes=["ERBB2"], model_params={"input_size": 32, "max_epochs": 1})
    assert seen["read"].shape == (train.n_obs, 3, 32, 32)  # the patches, read once for the fit
    assert seen["model"]._fit_read is None
