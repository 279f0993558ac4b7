"""The linear path of the graph models (``linear_path=True``): its neighbour mean, its ridge start, its training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge

import stpredict.models._neural as neural
from stpredict.models._nn import LinearPath, neighbour_mean


def test_neighbour_mean_skips_self_loops_and_leaves_isolated_nodes_at_zero():
    x = torch.tensor([[1.0, 10.0], [2.0, 20.0], [4.0, 40.0], [8.0, 80.0]])
    # source -> target: 0 hears 1 and 2 (and itself), 1 hears 0, 2 hears 0, node 3 hears nobody
    edges = torch.tensor([[1, 2, 0, 0, 0], [0, 0, 1, 2, 0]])
    expected = torch.tensor([[3.0, 30.0], [1.0, 10.0], [1.0, 10.0], [0.0, 0.0]])
    assert torch.allclose(neighbour_mean(x, edges), expected)


def test_set_ridge_gives_sklearns_ridge_predictions():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(60, 3)).astype(np.float32))
    edges = torch.from_numpy(np.vstack([rng.integers(0, 60, 200), rng.integers(0, 60, 200)]))
    path = LinearPath(3, 2)
    assert not path(x, edges).abs().sum()  # built alone it adds nothing
    design = path.design(x, edges).numpy()
    z = design @ rng.normal(size=(6, 2)) + rng.normal(scale=0.1, size=(60, 2))
    alpha = path.set_ridge(design, z)
    expected = Ridge(alpha=alpha).fit(design, z).predict(design)
    np.testing.assert_allclose(path(x, edges).detach().numpy(), expected, atol=1e-4)


@pytest.mark.parametrize(
    ("model", "params"),
    [
        ("merge", {"hidden": [16], "heads": 2, "input_dim": 16}),
        ("m2tglgo", {"modalities": ["deep"], "go_prior": False, "hidden": [16, 16]}),
    ],
)
def test_fit_starts_the_path_at_the_ridge_fit_and_trains_with_dropout_on(model, params, split, monkeypatch, tmp_path):
    """The template fits the path on the training spots before the loop, hands over a net in train mode, and
    the path is saved with the model."""
    import stpredict as st

    seen = {}
    real = neural.fit_network

    def spy(net, *args, **kwargs):
        (path,) = [m for m in net.modules() if isinstance(m, LinearPath)]
        seen["training"] = net.training
        seen["weight"] = float(path.linear.weight.abs().sum())
        return real(net, *args, **kwargs)

    monkeypatch.setattr(neural, "fit_network", spy)
    train, test = split
    predictor = st.tl.fit(
        train, model=model, genes=list(train.var_names[:5]), device="cpu",
        model_params={**params, "linear_path": True, "max_epochs": 1},
    )  # fmt: skip
    assert seen["training"] is True  # the start runs the net in eval mode: dropout must be back on for the loop
    assert seen["weight"] > 0
    assert predictor.model.linear_path_alpha_ > 0
    predicted = predictor.predict(test, copy=True, key_added="p").obsm["p"].to_numpy()
    loaded = st.tl.load_model(predictor.save(tmp_path / "model.stpredict"))
    np.testing.assert_array_equal(loaded.predict(test, copy=True, key_added="p").obsm["p"].to_numpy(), predicted)
