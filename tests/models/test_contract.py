"""One contract every registered model must honour, on the bundled crop (CPU, small settings)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from helpers import declared

import stpredict as st

# small settings so that every model trains in seconds on the 213-spot crop
SMALL = {
    "mlp": {"max_epochs": 5, "hidden": [32]},
    "merge": {"max_epochs": 5, "hidden": [16], "heads": 2, "input_dim": 16},
    "sepal": {"max_epochs": 5, "encoder_epochs": 2, "encoder_input_size": 32},  # the default CNN stage 1
    "triplex": {
        "max_epochs": 2,
        "dim": 16,
        "heads": 2,
        "target_input_size": 32,
        "tile_size": 64,
        "target_pretrain_epochs": 1,
    },
    "spahgc": {"max_epochs": 3, "hidden": 16, "heads": 2, "n_layers": 2, "k": 3},
    "m2tglgo": {"max_epochs": 3, "hidden": [16, 32], "gene_dim": 8, "patch_size": 64},  # nuclei on 64 px patches
}
# a graph member (MERGE's hierarchical graph beside ridge_spatial's grid) and a neural member's save/load
SMALL["ensemble"] = {"models": ["ridge_spatial", "merge"], "member_params": {"merge": SMALL["merge"]}}
GENES = ["ERBB2", "GNAS", "FASN", "CD24", "KRT19"]


def _fit(train, model, **kwargs):
    params = SMALL.get(model) or declared(model, "CONTRACT_PARAMS", {})  # a new model's own test file says
    return st.tl.fit(train, model=model, genes=GENES, device="cpu", model_params=params, **kwargs)


@pytest.fixture(scope="module")
def split(split_views):
    """The crop's sections C2, C3 / C4, with TRIPLEX's neighbour view stored (computed once, see conftest)."""
    return split_views


@pytest.mark.parametrize("model", st.tl.available_models())
def test_shape_determinism_save_load(model, split, tmp_path):
    train, test = split
    first = _fit(train, model)
    out = first.predict(test, copy=True, key_added="p")
    prediction = out.obsm["p"]
    assert prediction.shape == (test.n_obs, len(GENES)) and prediction.columns.tolist() == GENES
    assert np.isfinite(prediction.to_numpy()).all()
    assert prediction.to_numpy().std(axis=0).min() > 0  # a model that ignores its inputs would be constant
    again = _fit(train, model).predict(test, copy=True, key_added="p").obsm["p"]
    np.testing.assert_array_equal(again.to_numpy(), prediction.to_numpy())  # same seed: bit-identical
    loaded = st.tl.load_model(first.save(tmp_path / "model.stpredict"))
    reloaded = loaded.predict(test, copy=True, key_added="p").obsm["p"]
    np.testing.assert_array_equal(reloaded.to_numpy(), prediction.to_numpy())
    assert loaded.genes == GENES and loaded.model.params == first.model.params
    assert loaded.validation.groups == first.validation.groups
    np.testing.assert_array_equal(loaded.validation.gene_pearson, first.validation.gene_pearson)
    assert model in repr(loaded)


@pytest.mark.parametrize("model", st.tl.available_models())
def test_image_only_slide_gets_predictions(model, split):
    train, test = split
    predictor = _fit(train, model)
    files = st.datasets.her2st_crop_files()["C4"]
    image_only = st.io.read_st(None, files["spots"], files["image"], library_id="C4")
    assert image_only.n_vars == 0 and set(test.obs_names) <= set(image_only.obs_names)
    image_only = image_only[test.obs_names].copy()  # the same spots (and so the same neighbourhoods)
    # read_st estimates the pixel size from the spots it is given (0.05 % off the full table's): a sub-spot
    # model's bin grid, anchored at the image origin, would shift by a tenth of a bin across the image
    image_only.uns["spatial"]["C4"]["scalefactors"] = dict(test.uns["spatial"]["C4"]["scalefactors"])
    st.tl.predict(predictor, image_only)  # the representation is computed from the recorded recipe
    expected = predictor.predict(test, copy=True, key_added="p").obsm["p"]
    got = image_only.obsm[f"pred_{model}"].loc[expected.index]
    # features recomputed from the pixels differ from the stored ones in float rounding (~1e-6), which a
    # network with a linear path from its inputs carries to ~1e-4 of its outputs
    np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("model", st.tl.available_models())
def test_misspelled_parameter_raises(model, split):
    train, _ = split
    with pytest.raises(TypeError, match="does not accept parameter.*accepted model_params"):
        st.tl.fit(train, model=model, genes=GENES, model_params={"alpah": 1.0})


@pytest.mark.parametrize("model", st.tl.available_models())
def test_test_expression_cannot_change_predictions(model, split):
    train, test = split
    predictor = _fit(train, model)
    before = predictor.predict(test, copy=True, key_added="p").obsm["p"].to_numpy()
    scrambled = test.copy()
    rng = np.random.default_rng(1)
    scrambled.X = rng.poisson(5, size=test.shape).astype(np.float32)
    for layer in scrambled.layers:
        scrambled.layers[layer] = rng.normal(size=test.shape).astype(np.float32)
    after = predictor.predict(scrambled, copy=True, key_added="p").obsm["p"].to_numpy()
    np.testing.assert_array_equal(after, before)


def test_models_receive_no_expression(split):
    """A spy model records everything it is handed at predict time: no expression is reachable from it."""
    seen = {}

    @st.tl.register_model("spy")
    class Spy(st.tl.Model):
        needs_images = True
        graphs = {"grid": {"kind": "grid"}}

        def fit(self, inputs, targets):
            self.n_genes_ = targets.shape[1]
            self.validation_ = st.tl.Validation("slide", [], 0.0, np.zeros(targets.shape[1]))
            return self

        def predict(self, inputs):
            seen["inputs"] = inputs
            return np.zeros((inputs.n_spots, self.n_genes_))

        def state_dict(self):
            return {}

        def load_state_dict(self, state):
            pass

    from stpredict.models._base import _REGISTRY

    try:
        train, test = split
        marker = np.float32(1234.5)
        test = test.copy()
        test.X = np.full(test.shape, marker, dtype=np.float32)
        test.layers["log1p"] = np.full(test.shape, marker, dtype=np.float32)
        _fit(train, "spy").predict(test)
    finally:
        _REGISTRY.pop("spy")
    inputs = seen["inputs"]
    spots = inputs.images._spots
    assert spots.n_vars == 0 and len(spots.layers) == 0 and spots.X is None
    arrays = [inputs.features, inputs.spatial, inputs.array_row, inputs.array_col, *inputs.graphs.values()]
    for value in arrays:
        data = value.data if hasattr(value, "tocsr") else value
        assert not np.any(np.asarray(data, dtype=float) == marker)


def test_import_is_light():
    code = (
        "import sys, stpredict as st; st.tl.available_models(); "
        "heavy = [m for m in ('torch_geometric', 'lightning', 'stpredict.models.mlp', 'stpredict.models.ridge', 'stpredict.models.merge._model', 'stpredict.models.merge._module', 'stpredict.models.spahgc._model', 'stpredict.models.spahgc._module', 'stpredict.models.sepal', 'stpredict.models.triplex', 'stpredict.models.m2tglgo', 'obonet') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_genes_must_not_be_empty(split):
    train, _ = split
    with pytest.raises(ValueError, match="genes=\\[\\]"):
        st.tl.fit(train, genes=[])


def test_every_seed_model_declares_valid_ablations():
    from stpredict.models import get_model

    for name in ("merge", "triplex", "m2tglgo", "sepal", "spahgc"):
        ablations = st.tl.model_ablations(name)
        assert ablations, name
        model_class = get_model(name)
        for ablation, params in ablations.items():
            checked = model_class.check_params(params)  # unknown keys would raise
            assert any(checked[k] != model_class.defaults[k] for k in params), f"{name}_{ablation} is the default"
